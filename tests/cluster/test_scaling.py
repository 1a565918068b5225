"""`rogueray scale`: the request file, the running driver's pid, resizing the serial and the Ray
runner, and the whole path against a real `rogueray train` in Ray mode."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from cluster.cli import main
from cluster.components import env_spec
from cluster.config import load_config
from cluster.scaling import (
    DriverPid,
    ScaleError,
    ScaleWatcher,
    request_workers,
    requested_workers,
    running_driver,
)
from tests.cluster.ray_runs import started_runner
from tests.waiting import DEADLINE_S

ROOT = Path(__file__).resolve().parents[2]
CARTPOLE = str(ROOT / "configs" / "cartpole.yaml")


def _run_dir(tmp_path) -> Path:
    (tmp_path / "config.yaml").write_text("run_dir: x\n")
    return tmp_path


def test_requests_round_trip_and_bad_ones_are_named(tmp_path):
    with pytest.raises(ScaleError, match="not a rogueray run directory"):
        request_workers(tmp_path, 2)
    run_dir = _run_dir(tmp_path)
    assert requested_workers(run_dir) is None
    with pytest.raises(ScaleError, match="must be >= 1, got 0"):
        request_workers(run_dir, 0)
    request_workers(run_dir, 3)
    assert requested_workers(run_dir) == 3
    (run_dir / "scale.json").write_text("{nonsense")
    with pytest.raises(ScaleError, match="scale.json is not a scale request"):
        requested_workers(run_dir)
    (run_dir / "scale.json").write_text('{"num_workers": true}')
    with pytest.raises(ScaleError, match="'num_workers' must be an integer >= 1, got True"):
        requested_workers(run_dir)


def test_watcher_reports_each_new_request_once(tmp_path):
    run_dir = _run_dir(tmp_path)
    request_workers(run_dir, 2)
    watcher = ScaleWatcher(run_dir)
    assert watcher.poll() is None  # standing before the watch began: applied at start instead
    request_workers(run_dir, 4)
    assert watcher.poll() == 4
    assert watcher.poll() is None
    request_workers(run_dir, 1)
    assert watcher.poll() == 1


def test_running_driver_is_known_only_while_it_runs(tmp_path):
    assert running_driver(tmp_path) is None
    with DriverPid(tmp_path):
        assert running_driver(tmp_path) == f"pid {os.getpid()}"
    assert running_driver(tmp_path) is None
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    (tmp_path / "driver.pid").write_text(f"{os.uname().nodename} {gone.stdout.strip()}\n")
    assert running_driver(tmp_path) is None  # a driver killed without cleaning up


def test_scale_command_checks_its_input(tmp_path, capsys):
    assert main(["scale", str(tmp_path), "2"]) == 2
    assert "not a rogueray run directory" in capsys.readouterr().err
    run_dir = _run_dir(tmp_path)
    assert main(["scale", str(run_dir), "0"]) == 2
    assert "must be >= 1" in capsys.readouterr().err
    assert main(["scale", str(run_dir), "3"]) == 0
    assert "no job is running" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["scale", str(run_dir), "many"])


def test_a_standing_request_sets_the_workers_of_the_next_start(tmp_path, capsys):
    run_dir = tmp_path / "run"
    args = ["train", CARTPOLE, f"run_dir={run_dir}", "mode=serial", "total_env_steps=3000"]
    assert main(args) == 0
    request_workers(run_dir, 3)
    assert main(["resume", str(run_dir), "total_env_steps=6000"]) == 0
    out = capsys.readouterr().out
    assert "rollout.num_workers=3, as `rogueray scale` asked" in out
    assert "num_workers: 3" in (run_dir / "config.yaml").read_text()


def test_serial_runner_resizes_with_fresh_seeds_and_current_weights(tmp_path):
    from cluster.serial import SerialRunner

    config = load_config(CARTPOLE, [f"run_dir={tmp_path}", "rollout.num_workers=2"])
    runner = SerialRunner(config, env_spec(config))
    runner.sync_weights()
    runner.train(runner.collect()[0] + runner.collect()[0])  # learner version 1
    assert runner.resize(3) == "rollout workers: 2 -> 3"
    assert [w.worker_id for w in runner.workers] == [0, 1, 2]
    assert runner.workers[2].policy_version == runner.learner.version == 1
    assert runner.resize(1) == "rollout workers: 3 -> 1"
    assert runner.resize(2) == "rollout workers: 1 -> 2"
    assert [w.worker_id for w in runner.workers] == [0, 3]  # ids are never reused
    ids = {runner.collect()[0][0].worker_id for _ in range(4)}
    assert ids == {0, 3}
    runner.close()


@pytest.mark.ray
@pytest.mark.slow
def test_ray_runner_adds_retires_and_refuses_workers(tmp_path):
    import ray

    # Per-worker inference: the CPU arithmetic below counts workers and the learner only.
    overrides = [f"run_dir={tmp_path}", "rollout.num_workers=1", "ray_num_cpus=4"]
    overrides.append("rollout.inference=worker")
    config = load_config(CARTPOLE, overrides)
    with started_runner(config) as runner:

        def producers(calls: int) -> set[int]:
            refs = [ref for _ in range(calls) for ref in runner.collect()[0]]
            return {fragment.worker_id for fragment in ray.get(refs)}

        def until(expected: set[int]) -> set[int]:
            seen, deadline = set(), time.monotonic() + 60  # a new actor takes seconds to start
            while seen != expected and time.monotonic() < deadline:
                seen |= producers(1)
            return seen

        assert producers(3) == {0}
        assert runner.resize(2) == "rollout workers: 1 -> 2"
        assert until({0, 1}) == {0, 1}
        assert runner.resize(1) == "rollout workers: 2 -> 1"
        while runner._retiring:  # the retired worker's last sample comes back and is used
            producers(1)
        assert runner.workers_alive == 1
        assert producers(6) == {0}
        deadline = time.monotonic() + 30  # Ray frees a retired actor's CPU a moment later
        while ray.available_resources().get("CPU") != 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        refused = runner.resize(4)  # 1 worker + learner hold 2 of 4 CPUs: 3 more do not fit
        assert (
            refused == "rollout workers stay at 1: 4 needs 3 more CPUs and the cluster has 2 free"
        )


@pytest.mark.ray
@pytest.mark.slow
def test_scale_a_running_job(tmp_path):
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "cluster.cli", "train", CARTPOLE, f"run_dir={run_dir}",
           "rollout.num_workers=1", "ray_num_cpus=4", "total_env_steps=10000000",
           "log_interval_s=0.5", "checkpoint_interval_s=3600"]  # fmt: skip
    proc = subprocess.Popen(
        cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    lines = []
    try:
        for line in proc.stdout:  # wait until it is really training
            lines.append(line)
            if "steps/s" in line and not line.split("steps")[1].strip().startswith("0/"):
                break
        done = subprocess.run(
            [sys.executable, "-m", "cluster.cli", "scale", str(run_dir), "2"],
            cwd=ROOT, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert f"(pid {proc.pid}) for 2 rollout workers" in done.stdout
        deadline = time.monotonic() + 60
        for line in proc.stdout:
            lines.append(line)
            if "rollout workers: 1 -> 2" in line or time.monotonic() > deadline:
                break
        time.sleep(2.0)  # a few console lines with two workers
    finally:
        proc.send_signal(signal.SIGTERM)
        out = "".join(lines) + proc.communicate(timeout=120)[0]
    assert proc.returncode == 0, out
    assert "rollout workers: 1 -> 2" in out
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    alive = [e.value for e in events.Scalars("system/workers_alive")]
    assert alive[0] == 1 and max(alive) == 2
    assert not (run_dir / "driver.pid").exists()


def test_bad_scale_input_is_named(tmp_path, capsys):
    args = ["train", CARTPOLE, f"run_dir={tmp_path / 'small'}", "ray_num_cpus=1"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "'ray_num_cpus' (1) is below the 3 CPUs this run needs (rollout.num_workers=2" in err
    run_dir = tmp_path / "run"
    assert main(["train", CARTPOLE, f"run_dir={run_dir}", "mode=serial", "total_env_steps=1"]) == 0
    (run_dir / "scale.json").write_text("{oops")
    assert main(["resume", str(run_dir)]) == 2
    assert "scale.json is not a scale request" in capsys.readouterr().err


@pytest.mark.ray
@pytest.mark.slow
def test_workers_beyond_the_cluster_wait_until_a_node_joins(tmp_path, monkeypatch):
    """What the autoscaler does on a cloud, done by hand: `scale` past the rollout nodes' CPUs
    adds waiting workers; a new rollout node gives them CPUs and they start sampling."""
    import ray
    from ray.cluster_utils import Cluster

    from cluster.ray_runner import RayRunner

    # A GCS, three raylets and their workers start on the test's own cores. Ray's readiness
    # waits are short and fixed: 30 s for the GCS port file and about 20 s to connect to the
    # GCS (both set by RAY_gcs_server_port_wait_time_s, read when a node starts), 30 s in
    # Cluster.add_node for the node to register. On a slow, shared 2-core machine that is not
    # enough, so here every wait the test controls is generous.
    monkeypatch.setenv("RAY_gcs_server_port_wait_time_s", str(int(DEADLINE_S)))
    cluster = Cluster()
    try:
        cluster.add_node(num_cpus=1, include_dashboard=False, wait=False)  # the head
        cluster.add_node(num_cpus=2, resources={"rogueray_rollout": 2}, wait=False)
        cluster.wait_for_nodes(timeout=DEADLINE_S)
        ray.init(address=cluster.address, log_to_driver=False)
        config = load_config(
            CARTPOLE,
            [f"run_dir={tmp_path}", "ray_address=auto", "rollout.node_resource=rogueray_rollout"],
        )
        runner = RayRunner(config, env_spec(config))
        runner.start()
        runner.sync_weights()

        def producers(seconds: float, expected: set[int] | None = None) -> set[int]:
            """Workers heard from within `seconds`, or until all of `expected` were."""
            seen, deadline = set(), time.monotonic() + seconds
            while time.monotonic() < deadline and seen != expected:
                seen |= {f.worker_id for f in ray.get(runner.collect()[0])}
            return seen

        assert producers(DEADLINE_S, {0, 1}) == {0, 1}  # actors take seconds to start here
        message = runner.resize(4)
        assert (
            message
            == "rollout workers: 2 -> 4; 2 wait for CPUs (the autoscaler was asked for them)"
        )
        assert (runner.workers_alive, runner.workers_waiting) == (2, 2)
        assert producers(2) == {0, 1}  # the waiting two do not sample
        cluster.add_node(num_cpus=2, resources={"rogueray_rollout": 2}, wait=False)
        cluster.wait_for_nodes(timeout=DEADLINE_S)
        assert producers(DEADLINE_S, {0, 1, 2, 3}) == {0, 1, 2, 3}
        assert (runner.workers_alive, runner.workers_waiting) == (4, 0)
        runner.close()
    finally:
        ray.shutdown()
        cluster.shutdown()
