"""The annotator actor's memory reading: in Ray mode the annotator has a process of its own and
reports the floor of its live heap after its batches (annotator/metrics.py's HEAP_FLOOR_MB), which
benchmarks/memory.py fits for growth, and its kernel caches are bounded; in serial mode the process
is the driver's, so it does not."""

import os
from pathlib import Path

import pytest

from annotator.metrics import HEAP_FLOOR_MB, LABELS_TOTAL
from cluster.config import load_config
from tests.waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]
CAPTIONS = {"You see a jackal.": 2, "The door opens.": 1, "You find a hidden passage.": 1}


def _config(tmp_path):
    overrides = [f"run_dir={tmp_path}", "annotator.backend=rules"]
    return load_config(ROOT / "configs" / "default.yaml", overrides)


@pytest.mark.ray
def test_the_annotator_actor_reports_its_heap_floor(tmp_path, monkeypatch):
    import ray

    from cluster.annotation import AnnotatorActor
    from cluster.kernel_caches import KERNEL_CACHE_ENTRIES, KERNEL_CACHE_VARS
    from cluster.placement import annotator_options, start_ray
    from learner.memory_stats import rss_mb

    class RssProbeAnnotator(AnnotatorActor):
        """The real annotator actor (rules judge) that also says its process's RSS and
        environment."""

        async def rss(self) -> float:
            return rss_mb()

        async def environment(self, names) -> dict:
            return {name: os.environ.get(name) for name in names}

    for name in KERNEL_CACHE_VARS:
        monkeypatch.delenv(name, raising=False)  # what the driver exports would win
    config = _config(tmp_path)
    assert start_ray(config, quiet=True), "a Ray was already running in this process"
    try:
        options = {**annotator_options(config, "rogueray-annotator-test"), "num_cpus": 0}
        actor = ray.remote(**options)(RssProbeAnnotator).remote(config)
        # the LLM's kernel caches are bounded in the annotator's process (kernel_caches.py)
        bounded = dict.fromkeys(KERNEL_CACHE_VARS, str(KERNEL_CACHE_ENTRIES))
        assert ray.get(actor.environment.remote(KERNEL_CACHE_VARS)) == bounded
        ray.get(actor.start.remote())
        ray.get(actor.submit.remote(CAPTIONS))

        def labelled() -> tuple[bool, str]:
            stats = ray.get(actor.stats.remote())
            return stats[LABELS_TOTAL] == len(CAPTIONS) and HEAP_FLOOR_MB in stats, str(stats)

        wait_for("the actor's labels and heap reading", labelled, interval_s=0.2)
        floor, rss = ray.get(actor.stats.remote())[HEAP_FLOOR_MB], ray.get(actor.rss.remote())
        # A Python process holding Ray, torch and numpy: tens of MB live, all of it resident.
        assert 5 < floor < rss, (floor, rss)
        ray.get(actor.stop.remote())
    finally:
        ray.shutdown()


def test_serial_mode_reports_no_heap_floor(tmp_path):
    from cluster.annotation import AnnotatorThread, build_annotator

    thread = AnnotatorThread(build_annotator(_config(tmp_path)))
    thread.start()
    try:
        thread.annotator.submit(CAPTIONS)

        def labelled() -> tuple[bool, str]:
            stats = thread.annotator.stats()
            return stats[LABELS_TOTAL] == len(CAPTIONS), str(stats)

        wait_for("the serial annotator's labels", labelled, interval_s=0.1)
        assert HEAP_FLOOR_MB not in thread.annotator.stats()
    finally:
        thread.stop()
    # Its store closed with it: SQLite folded the -wal file into labels.sqlite, so the file alone
    # holds every label (a newcomer copying only labels.sqlite lost them to a 4.5 MB -wal).
    store = Path(thread.annotator.store.path)
    assert store.is_file() and not Path(f"{store}-wal").exists()
