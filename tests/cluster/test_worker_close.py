"""Workers close their envs before they are killed: NLE removes each env's directory under the
temporary directory on close, which a killed process leaves behind for good."""

import os
import time

import pytest
import ray

from actors.rollout import RolloutWorker
from cluster.worker_actor import stop_workers
from learner.models import UniformPolicy


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
        deadline = time.monotonic() + 30
        while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(_alive(pid) for pid in pids)  # killed
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
