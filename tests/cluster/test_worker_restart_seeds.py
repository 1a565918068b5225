"""A rollout worker whose process is killed comes back (Ray restarts it with its original
constructor arguments) on seed streams of its own: the driver's restart count reaches it with the
weights, so it replays none of the episodes its first process played. Real Ray, real SIGKILL."""

import os
import signal
import time
from pathlib import Path

import pytest

from cluster.config import load_config
from tests.cluster.ray_runs import started_runner

ROOT = Path(__file__).resolve().parents[2]
CARTPOLE = str(ROOT / "configs" / "cartpole.yaml")


@pytest.mark.ray
@pytest.mark.slow
def test_restarted_worker_plays_new_episodes(tmp_path):
    import ray

    from cluster.ray_runner import WORKER_LOST

    config = load_config(CARTPOLE, [f"run_dir={tmp_path}", "rollout.num_workers=1"])
    with started_runner(config, collects=2) as runner:
        victim = runner.workers[0]

        def streams(self):  # what the worker process seeds: its restart count, first resets
            worker = self.worker
            seeds = [worker.episode_seed(i, j) for i in range(worker.num_envs) for j in range(50)]
            return os.getpid(), worker._restarts, seeds

        pid, restarts, before = ray.get(victim.__ray_call__.remote(streams))
        assert restarts == 0
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 120
        while runner.restarts == 0 and time.monotonic() < deadline:
            runner.collect()
        steps = 0
        while steps == 0 and time.monotonic() < deadline:  # a sample from the new process
            steps = runner.collect()[2]
        while time.monotonic() < deadline:
            try:
                new_pid, restarts, after = ray.get(victim.__ray_call__.remote(streams))
                break
            except WORKER_LOST:  # still restarting
                time.sleep(0.1)
        assert new_pid != pid and restarts >= 1  # a request sent before Ray saw the death counts
        assert not set(before) & set(after)
