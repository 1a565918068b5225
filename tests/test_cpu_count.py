"""Where rogueray sizes something by the CPUs, it counts those this process may use
(`loky.cpu_count()`: its affinity and a container's CPU quota), not the host's: a 2-CPU pod on a
64-core host must not start a 64-CPU local Ray or bind 64 vLLM threads. The pod is played by
setting what loky answers; the annotator's rests are tested in tests/annotator/test_pacing.py."""

import os

import loky
import pytest
import torch

from cluster import placement
from cluster.config import load_config


def test_the_local_ray_gets_the_cpus_the_process_may_use(monkeypatch, tmp_path):
    asked = {}
    monkeypatch.setattr(placement.ray, "is_initialized", lambda: False)
    monkeypatch.setattr(placement, "_init", lambda what, **options: asked.update(options))
    config = load_config("configs/cartpole.yaml", [f"run_dir={tmp_path}"])
    needed = placement.cpus_needed(config)
    monkeypatch.setattr(loky, "cpu_count", lambda: needed + 5)
    assert placement.start_ray(config, quiet=True)
    assert asked["num_cpus"] == needed + 5
    monkeypatch.setattr(loky, "cpu_count", lambda: 1)  # fewer than the run needs: what it needs
    placement.start_ray(config, quiet=True)
    assert asked["num_cpus"] == needed


@pytest.mark.skipif(torch.cuda.is_available(), reason="vLLM's CPU build only")
@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="CPU affinity is Linux's")
def test_vllm_on_cpu_binds_no_more_threads_than_the_quota_allows(monkeypatch):
    from annotator.backends.vllm_engine import cpu_env_defaults

    monkeypatch.delenv("VLLM_CPU_OMP_THREADS_BIND", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)))
    monkeypatch.setattr(loky, "cpu_count", lambda: 2)
    assert cpu_env_defaults()["VLLM_CPU_OMP_THREADS_BIND"] == "0-1"
    monkeypatch.setattr(loky, "cpu_count", lambda: 64)
    assert cpu_env_defaults()["VLLM_CPU_OMP_THREADS_BIND"] == "0-63"
