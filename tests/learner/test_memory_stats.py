"""The learner's memory readings (learner/memory_stats.py): plausible values, a live heap that
follows what the process holds, and both among every update's metrics (a tiny CartPole update
through the learner Ray runs, `ConfiguredLearner`)."""

from pathlib import Path

import pytest

from learner import memory_stats
from learner import metrics as lm

ROOT = Path(__file__).resolve().parents[2]
glibc_only = pytest.mark.skipif(memory_stats.heap_mb() is None, reason="no mallinfo2 (not glibc)")


def test_rss_is_a_plausible_size_for_a_python_process():
    rss = memory_stats.rss_mb()
    assert rss is not None and 5 < rss < 64 * 1024


@glibc_only
def test_live_heap_rises_and_falls_with_a_held_allocation():
    mb = 64
    before = memory_stats.heap_mb()
    assert 0 < before < 64 * 1024
    held = bytearray(mb * memory_stats.MB)  # zero-filled: held, and resident once touched
    during = memory_stats.heap_mb()
    rss_during = memory_stats.rss_mb()
    assert during - before == pytest.approx(mb, abs=4)
    del held
    after = memory_stats.heap_mb()
    assert during - after == pytest.approx(mb, abs=4)  # freed memory is not live heap
    assert rss_during > mb


def test_every_update_reports_the_learners_memory_at_its_end(tmp_path):
    from cluster.components import env_spec, make_learner, make_worker
    from cluster.config import load_config
    from cluster.worker_settings import WorkerSettings

    config = load_config(
        ROOT / "configs/cartpole.yaml",
        [
            f"run_dir={tmp_path}/run",
            "mode=serial",
            "env.num_envs_per_worker=2",
            "rollout.unroll_length=8",
            "learner.batch_size=16",
        ],
    )
    spec = env_spec(config)
    learner = make_learner(config, spec)
    worker = make_worker(WorkerSettings.from_config(config), spec, worker_id=0)
    try:
        fragment, _ = worker.sample()
        for _ in range(2):
            metrics = learner.update(fragment)
            assert {lm.RSS_MB, lm.POLICY_LOSS} <= metrics.keys()
            assert 5 < metrics[lm.RSS_MB] < 64 * 1024
            if memory_stats.heap_mb() is not None:
                assert metrics[lm.HEAP_MB] > 0
            else:
                assert lm.HEAP_MB not in metrics
    finally:
        worker.close()
