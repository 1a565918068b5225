"""Several Ray nodes on one machine (ray.cluster_utils.Cluster), custom resources placing the
rollout workers on "rollout" nodes as cluster/launch/ does: a rollout node removed mid-run costs
its worker and training goes on with the others; a node added to a running job
gets the workers that `rogueray scale` asks for, and they alone carry the run once the older
rollout node is gone too. Whether more workers raise the steps/s is measured by
benchmarks/multinode_scaling.py, not asserted here."""

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import psutil
import pytest

from cluster.checkpoint import load_latest
from tests.waiting import DEADLINE_S, wait_for

ROOT = Path(__file__).resolve().parents[2]
CARTPOLE = str(ROOT / "configs" / "cartpole.yaml")
ROLLOUT, LEARNER = "rogueray_rollout", "rogueray_learner"
LOST = "rollout worker lost"
STEPS = re.compile(r"steps ([\d,]+)/")


class _Driver:
    """A `rogueray` command in a subprocess, its console read line by line in a thread."""

    def __init__(self, *args: str):
        cmd = [sys.executable, "-m", "cluster.cli", *args]
        self.proc = subprocess.Popen(
            cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self.lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)

    def text(self) -> str:
        return "".join(self.lines)

    def steps(self) -> int:
        """The env steps of the newest status line (0 before the first)."""
        found = [int(m.group(1).replace(",", "")) for m in map(STEPS.search, self.lines) if m]
        return found[-1] if found else 0

    def wait_for(self, what: str, check) -> None:
        wait_for(
            what,
            lambda: (check(), self.lines[-1].strip() if self.lines else "(no output yet)"),
            interval_s=0.2,
            abort=lambda: None if self.proc.poll() is None else f"exit {self.proc.returncode}",
            details=lambda: self.text()[-3000:],
        )

    def end(self, sig: int | None = None) -> int:
        if sig is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout=DEADLINE_S)


def _workers_on(node) -> int:
    """Rollout worker processes the node's raylet runs (Ray starts every worker of a node as a
    child of that node's raylet, titled after its actor class)."""
    from ray._private import ray_constants

    raylet = psutil.Process(node.all_processes[ray_constants.PROCESS_TYPE_RAYLET][0].process.pid)
    return sum("WorkerActor" in " ".join(p.cmdline()) for p in raylet.children())


def _remove_while_paused(cluster, driver: _Driver, node, ready) -> None:
    """Remove `node` with the driver paused (SIGSTOP), once `ready()` (checked while paused), and
    let it go on once the cluster knows the node is dead: the loss lands mid-run whatever the
    machine's speed (CartPole runs at 5,000-25,000 steps/s on 2 cores)."""
    os.kill(driver.proc.pid, signal.SIGSTOP)
    try:
        wait_for("the workers in place", lambda: (ready(), "waiting"), interval_s=0.2)
        cluster.remove_node(node)
        cluster.wait_for_nodes(timeout=DEADLINE_S)  # the GCS has marked it dead
    finally:
        os.kill(driver.proc.pid, signal.SIGCONT)


def _steps_after(driver: _Driver, marker: str) -> int:
    """Env steps between the first and the last status line printed after `marker`."""
    at = next((i for i, line in enumerate(driver.lines) if marker in line), None)
    if at is None:
        return 0
    found = [int(m.group(1).replace(",", "")) for m in map(STEPS.search, driver.lines[at:]) if m]
    return found[-1] - found[0] if len(found) >= 2 else 0


@pytest.mark.ray
@pytest.mark.slow
def test_rollout_nodes_lost_and_added_under_a_running_job(monkeypatch):
    from ray.cluster_utils import Cluster

    scratch = Path(tempfile.mkdtemp(prefix="rrmn"))  # short: Ray's socket paths live in it
    run_dir = scratch / "run"
    monkeypatch.setenv("RAY_gcs_server_port_wait_time_s", str(int(DEADLINE_S)))
    node_args = dict(temp_dir=str(scratch / "ray"), wait=False)
    cluster = Cluster()
    drivers: list[_Driver] = []
    try:
        cluster.add_node(num_cpus=1, resources={LEARNER: 1}, include_dashboard=False, **node_args)
        node_a = cluster.add_node(num_cpus=1, resources={ROLLOUT: 1}, **node_args)
        node_b = cluster.add_node(num_cpus=1, resources={ROLLOUT: 1}, **node_args)
        cluster.wait_for_nodes(timeout=DEADLINE_S)
        common = [f"ray_address={cluster.address}", "log_interval_s=0.5",
                  "checkpoint_interval_s=3600"]  # fmt: skip

        # 1. Two workers, one per rollout node; node B goes mid-run; training goes on on node A.
        # A budget no run here reaches: CartPole runs at up to 36,000 steps/s on 2 cores, and a
        # small one can be spent before the driver hears of the loss (the run then ends without
        # a word of it, which is fine for a run but proves nothing here).
        drivers.append(first := _Driver(
            "train", CARTPOLE, f"run_dir={run_dir}", "total_env_steps=100000000",
            "rollout.num_workers=2", f"rollout.node_resource={ROLLOUT}",
            f"learner.node_resource={LEARNER}", *common,
        ))  # fmt: skip
        first.wait_for("the first steps", lambda: first.steps() > 0)
        one_each = lambda: _workers_on(node_a) == _workers_on(node_b) == 1  # noqa: E731
        _remove_while_paused(cluster, first, node_b, one_each)
        first.wait_for("steps after the loss", lambda: _steps_after(first, LOST) >= 2000)
        assert first.end(signal.SIGTERM) == 0, first.text()[-3000:]
        saved = load_latest(run_dir)["counters"]["env_steps"]
        assert saved >= first.steps() > 0  # the final checkpoint holds every step said

        # 2. Resumed with one worker on node A; node C joins the running job and `rogueray
        # scale` puts the two new workers there (the only free CPUs of a rollout node).
        drivers.append(second := _Driver(
            "resume", str(run_dir), "total_env_steps=100000000", "rollout.num_workers=1", *common,
        ))  # fmt: skip
        second.wait_for("training to resume", lambda: second.steps() > saved)
        node_c = cluster.add_node(num_cpus=2, resources={ROLLOUT: 2}, **node_args)
        cluster.wait_for_nodes(timeout=DEADLINE_S)
        scaled = subprocess.run(
            [sys.executable, "-m", "cluster.cli", "scale", str(run_dir), "3"],
            cwd=ROOT, capture_output=True, text=True, timeout=DEADLINE_S,
        )  # fmt: skip
        assert scaled.returncode == 0, scaled.stderr
        second.wait_for("the resize", lambda: "rollout workers: 1 -> 3" in second.text())
        second.wait_for("two workers on node C", lambda: _workers_on(node_c) == 2)

        # 3. Node A goes too: the steps that follow come from node C's workers alone.
        _remove_while_paused(cluster, second, node_a, lambda: True)
        # After the loss is said, node A's worker is gone: every step counted is node C's.
        second.wait_for("steps from node C", lambda: _steps_after(second, LOST) >= 2000)
        assert second.end(signal.SIGTERM) == 0, second.text()[-3000:]
        assert load_latest(run_dir)["counters"]["env_steps"] > saved + 2000
    finally:
        for driver in drivers:
            if driver.proc.poll() is None:
                driver.proc.kill()
                driver.proc.wait()
        cluster.shutdown()
        shutil.rmtree(scratch, ignore_errors=True)


def _actors_on(node, title: str) -> int:
    from ray._private import ray_constants

    raylet = psutil.Process(node.all_processes[ray_constants.PROCESS_TYPE_RAYLET][0].process.pid)
    return sum(title in " ".join(p.cmdline()) for p in raylet.children())


@pytest.mark.ray
@pytest.mark.slow
def test_shared_inference_runs_one_actor_on_each_rollout_node(tmp_path, monkeypatch):
    """rollout.inference=shared on a joined cluster: each rollout node gets its own inference
    actor, started when its first worker asks, and every worker's steps are answered there; a
    node that leaves takes its actor out of the pool, and the other node's worker goes on."""
    import ray
    from ray.cluster_utils import Cluster

    from cluster.components import env_spec
    from cluster.config import load_config
    from cluster.ray_runner import RayRunner

    scratch = Path(tempfile.mkdtemp(prefix="rrin"))
    monkeypatch.setenv("RAY_gcs_server_port_wait_time_s", str(int(DEADLINE_S)))
    node_args = dict(temp_dir=str(scratch / "ray"), wait=False)
    cluster = Cluster()
    runner = None
    try:
        cluster.add_node(num_cpus=1, resources={LEARNER: 1}, include_dashboard=False, **node_args)
        nodes = [cluster.add_node(num_cpus=1, resources={ROLLOUT: 1}, **node_args) for _ in "ab"]
        cluster.wait_for_nodes(timeout=DEADLINE_S)
        ray.init(address=cluster.address)
        config = load_config(CARTPOLE, [
            f"run_dir={tmp_path}/run", f"ray_address={cluster.address}", "rollout.num_workers=2",
            "rollout.inference=shared", f"rollout.node_resource={ROLLOUT}",
            f"learner.node_resource={LEARNER}", "env.num_envs_per_worker=2",
            "rollout.unroll_length=8",
        ])  # fmt: skip
        runner = RayRunner(config, env_spec(config))
        assert runner.inference.actors == {}  # a joined cluster: none until a worker asks
        runner.sync_weights()

        def requests_per_actor() -> list[float]:
            actors = runner.inference.actors.values()
            return [stats["requests"] for stats in ray.get([a.stats.remote() for a in actors])]

        def both_answered():  # an unroll (8 steps) each; a loaded machine starts one node late
            runner.collect()
            asked = requests_per_actor()
            return len(asked) == 2 and min(asked) >= 8, f"requests per actor {asked}"

        wait_for("both nodes' actors answering", both_answered, interval_s=0.0)
        per_node = [(_actors_on(n, "WorkerActor"), _actors_on(n, "InferenceActor")) for n in nodes]
        assert per_node == [(1, 1), (1, 1)]
        assert set(runner.inference.actors) == {n.node_id for n in nodes}

        # Node B goes: its worker is lost (no CPU elsewhere to restart it), and so is its actor.
        cluster.remove_node(nodes[1])
        cluster.wait_for_nodes(timeout=DEADLINE_S)
        while runner.restarts == 0:
            runner.collect()
        assert set(runner.inference.actors) == {nodes[0].node_id}
        (before,) = requests_per_actor()
        steps = 0
        while steps < 100:  # node A's worker goes on, answered by node A's actor
            steps += runner.collect()[2]
        assert requests_per_actor()[0] > before
    finally:
        if runner is not None:
            runner.close()
        ray.shutdown()
        cluster.shutdown()
        shutil.rmtree(scratch, ignore_errors=True)
