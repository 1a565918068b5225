"""A local run's Ray processes run at the driver's priority. Ray's default starts its worker
processes at nice 15, so on a busy laptop any ordinary process starved the rollout workers, the
learner and the annotator (a default run next to two CPU burners reached 10,752 of 30,000 steps
in 13 minutes and stored no label)."""

import os
from pathlib import Path

import pytest

from cluster.config import load_config

pytestmark = [pytest.mark.ray]

ROOT = Path(__file__).resolve().parents[2]


def test_a_local_ray_runs_its_workers_at_the_drivers_priority(tmp_path):
    import ray

    from cluster.placement import start_ray

    config = load_config(ROOT / "configs" / "cartpole.yaml", [f"run_dir={tmp_path}"])
    assert start_ray(config, quiet=True), "a Ray was already running in this process"
    try:

        @ray.remote(num_cpus=0)
        def niceness() -> int:
            return os.nice(0)

        assert ray.get(niceness.remote()) == os.nice(0)
    finally:
        ray.shutdown()
