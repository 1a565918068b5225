"""Workers close their envs before they are killed at the run's end or retired mid-run: NLE
removes each env's directory under the temporary directory on close, which a killed process
leaves behind for good."""

import gc
import os
import time

import pytest
import ray

from actors.rollout import RolloutWorker
from cluster.components import env_spec
from cluster.config import load_config
from cluster.worker_actor import WorkerActor, retire_worker, stop_workers
from cluster.worker_settings import WorkerSettings
from learner.models import UniformPolicy
from tests.waiting import wait_for


@ray.remote
class ClosingWorkerDouble:
    """Test double of a worker actor: `close` leaves a mark, after a sample still running."""

    def __init__(self, mark: str):
        self.mark = mark

    def sample(self, seconds: float) -> None:
        time.sleep(seconds)

    def close(self) -> None:
        with open(self.mark, "w") as f:
            f.write("closed")

    def pid(self) -> int:
        return os.getpid()


def test_stop_workers_closes_after_the_sample_in_flight_then_kills(tmp_path):
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        marks = [str(tmp_path / f"worker{i}") for i in range(2)]
        workers = [ClosingWorkerDouble.remote(mark) for mark in marks]
        dead = ClosingWorkerDouble.remote(str(tmp_path / "dead"))
        pids = ray.get([w.pid.remote() for w in workers])
        ray.get(dead.pid.remote())
        ray.kill(dead)  # a worker already gone is skipped
        workers[0].sample.remote(1.0)  # close waits behind it
        stop_workers([*workers, dead])
        assert all(open(mark).read() == "closed" for mark in marks)
        alive = lambda: [pid for pid in pids if _alive(pid)]  # noqa: E731
        killed = lambda: (not alive(), f"alive {alive()}")  # noqa: E731
        wait_for("the workers killed", killed, deadline_s=30, interval_s=0.1)
        assert not any(_alive(pid) for pid in pids)  # killed
    finally:
        ray.shutdown()


@pytest.mark.ray
@pytest.mark.nle
def test_a_retired_worker_closes_its_envs_after_its_sample_and_exits(tmp_path):
    # The product's worker actor on NetHack, its NLE directories under a temporary directory
    # of its own; retired (as `rogueray scale` does) with a sample in flight, without waiting.
    config = load_config(None, [f"run_dir={tmp_path}", "env.num_envs_per_worker=2"])
    temp = tmp_path / "tmp"
    temp.mkdir()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        actor = (
            ray.remote(WorkerActor)
            .options(runtime_env={"env_vars": {"TMPDIR": str(temp)}}, max_restarts=-1)
            .remote(WorkerSettings.from_config(config), env_spec(config), 0)
        )
        ray.get(actor.sample.remote()[1])
        assert len(list(temp.iterdir())) == 2  # one directory per env
        # Its start-up objects out of full collections (`freeze_start_up_objects`).
        assert ray.get(actor.__ray_call__.remote(lambda _: gc.get_freeze_count())) > 10_000
        pid = ray.get(actor.__ray_call__.remote(lambda _: os.getpid()))
        in_flight = actor.sample.remote()
        leaving = retire_worker(actor)
        del actor  # as the runner lets go of a retired worker's handle (restarts: -1, as a run's)
        assert ray.get(in_flight[1])[1] > 0  # the sample sent before is answered
        ray.wait([leaving], timeout=60)
        left = lambda: (_alive(pid), [d.name for d in temp.iterdir()])  # noqa: E731
        gone = lambda: (left() == (False, []), left())  # noqa: E731
        wait_for("the worker closed and gone", gone, deadline_s=60, interval_s=0.1)
        assert list(temp.iterdir()) == []  # closed: NLE removed its directories
        assert not _alive(pid)  # exited
    finally:
        ray.shutdown()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"  # a zombie has exited
    except FileNotFoundError:
        return False


@pytest.mark.nle
def test_closing_a_nethack_worker_removes_nles_directories():
    worker = RolloutWorker(
        env_id="NetHackScore-v0", num_envs=2, unroll_length=4, policy=UniformPolicy(23)
    )
    worker.sample()
    directories = [env.unwrapped.nethack._tempdir.name for env in worker.envs]
    assert all(os.path.isdir(d) for d in directories)
    worker.close()
    assert not any(os.path.exists(d) for d in directories)
