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


LOWER_IN_A_CHILD = """
import os, threading
from cluster.priority import lower_priority
started, done = threading.Event(), threading.Event()
def wait():
    started.set()
    done.wait()
thread = threading.Thread(target=wait)
thread.start()
started.wait()
before = os.getpriority(os.PRIO_PROCESS, thread.native_id)
after = lower_priority({niceness})
again = lower_priority(0)  # never raises the priority back
late = []
late_thread = threading.Thread(target=lambda: late.append(os.getpriority(os.PRIO_PROCESS, 0)))
late_thread.start()
late_thread.join()
print(before, os.getpriority(os.PRIO_PROCESS, thread.native_id), after, again, late[0])
done.set()
"""


def test_lower_priority_sets_every_thread_and_never_raises_it():
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    start = os.nice(0)
    target = min(start + 7, 19)
    code = LOWER_IN_A_CHILD.format(niceness=target)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    before, thread_after, after, again, late = map(int, out.stdout.split())
    # A thread started before the call is lowered too (Linux keeps a nice value per thread),
    # a later call with a smaller value leaves it, and new threads inherit it.
    assert (before, thread_after, after, again, late) == (start, target, target, target, target)


def test_lower_priority_names_the_allowed_range():
    from cluster.priority import lower_priority

    with pytest.raises(ValueError, match="niceness 20 is outside 0-19"):
        lower_priority(20)


def test_the_annotator_actor_labels_at_annotator_niceness_once_its_backend_loaded(tmp_path):
    import time

    import ray

    from cluster.annotation import AnnotatorActor
    from cluster.placement import start_ray

    class NicenessProbeAnnotator(AnnotatorActor):
        """The real annotator actor (rules judge: no model to load) that also says its nice
        value."""

        async def nice(self) -> int:
            return os.nice(0)

    overrides = [f"run_dir={tmp_path}", "annotator.backend=rules", "annotator.niceness=6"]
    config = load_config(ROOT / "configs" / "default.yaml", overrides)
    assert start_ray(config, quiet=True), "a Ray was already running in this process"
    try:
        actor = ray.remote(num_cpus=0)(NicenessProbeAnnotator).remote(config)
        # The backend (a model, for an LLM) loads at the training loop's priority ...
        assert ray.get(actor.nice.remote()) == os.nice(0)
        ray.get(actor.start.remote())
        deadline = time.monotonic() + 60
        while ray.get(actor.nice.remote()) == os.nice(0) and time.monotonic() < deadline:
            time.sleep(0.1)
        # ... and the labelling yields to it.
        assert ray.get(actor.nice.remote()) == max(6, os.nice(0))
        ray.get(actor.stop.remote())
    finally:
        ray.shutdown()
