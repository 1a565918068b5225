"""Real faults: a rollout worker process killed mid-run is restarted and sampling goes on; SIGTERM
stops a run cleanly with a checkpoint that the next invocation resumes from."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cluster.checkpoint import load_latest
from cluster.components import env_spec
from cluster.config import load_config

ROOT = Path(__file__).resolve().parents[2]
CARTPOLE = str(ROOT / "configs" / "cartpole.yaml")


@pytest.mark.ray
@pytest.mark.slow
def test_killed_worker_is_restarted_and_sampling_goes_on(tmp_path):
    import ray

    from cluster.ray_runner import RayRunner, start_ray

    config = load_config(CARTPOLE, [f"run_dir={tmp_path}", "rollout.num_workers=2"])
    started = start_ray(config)
    try:
        runner = RayRunner(config, env_spec(config))
        runner.start()
        runner.sync_weights()
        for _ in range(4):
            runner.collect()
        victim = runner.workers[0]
        pid = ray.get(victim.__ray_call__.remote(lambda self: os.getpid()))
        os.kill(pid, signal.SIGKILL)  # the process dies as it would on a node failure
        steps_after, deadline = 0, time.monotonic() + 60
        while (runner.restarts == 0 or steps_after < 2000) and time.monotonic() < deadline:
            fragments, _, steps = runner.collect()
            steps_after += steps
        assert runner.restarts >= 1
        assert steps_after >= 2000
        new_pid = None
        while new_pid is None and time.monotonic() < deadline:
            try:
                new_pid = ray.get(victim.__ray_call__.remote(lambda self: os.getpid()))
            except ray.exceptions.ActorUnavailableError:  # still restarting
                time.sleep(0.1)
        assert new_pid != pid  # the same actor, a new process
        runner.close()
    finally:
        if started:
            ray.shutdown()


@pytest.mark.slow
def test_sigterm_checkpoints_and_resume_continues(tmp_path):
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "cluster.cli", "train", CARTPOLE, f"run_dir={run_dir}",
           "mode=serial", "total_env_steps=10000000", "log_interval_s=0.5", "checkpoint_interval_s=3600"]  # fmt: skip
    proc = subprocess.Popen(
        cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    for line in proc.stdout:  # wait until it is really training
        if (
            "steps/s" in line
            and "episodes" in line
            and not line.split("steps")[1].strip().startswith("0/")
        ):
            break
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    out = proc.communicate(timeout=120)[0]
    assert proc.returncode == 0, out
    assert "SIGTERM: stopping" in out
    saved = load_latest(run_dir)
    assert saved is not None and saved["counters"]["env_steps"] > 0

    resumed = subprocess.run(
        [*cmd[:-4], "total_env_steps=1"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert f"resuming {run_dir} from step {saved['counters']['env_steps']:,d}" in resumed.stdout
