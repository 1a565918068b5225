"""Signals during start-up: SIGINT (Ctrl-C reaches the whole process group) while the local Ray
starts, and SIGTERM once the run has said what it starts, end it with exit 130 / 143 and one
line, no traceback, no crash, and nothing written to the checkpoints."""

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from cluster.checkpoint import list_checkpoints

ROOT = Path(__file__).resolve().parents[2]
CARTPOLE = str(ROOT / "configs" / "cartpole.yaml")


def _ray_tmp(tmp_path: Path) -> Path:
    """A short RAY_TMPDIR of this test's own (Ray's socket paths must stay under 108 bytes)."""
    folder = Path(tempfile.mkdtemp(prefix="rr-", dir="/tmp"))
    (tmp_path / "ray-tmp").symlink_to(folder)
    return folder


def _start(tmp_path: Path, *args: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "cluster.cli", "train", CARTPOLE, f"run_dir={tmp_path / 'run'}",
           "total_env_steps=100000000", *args]  # fmt: skip
    return subprocess.Popen(
        cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True, env={**os.environ, "RAY_TMPDIR": str(_ray_tmp(tmp_path))},
    )  # fmt: skip


def _read_until(proc: subprocess.Popen, text: str) -> None:
    for line in proc.stdout:
        if text in line:
            return
    raise AssertionError(f"the run ended before saying {text!r}: {proc.stderr.read()}")


@pytest.mark.slow
@pytest.mark.ray
def test_ctrl_c_while_ray_starts_exits_130_in_one_line(tmp_path):
    proc = _start(tmp_path, "mode=ray")
    _read_until(proc, "starting a local Ray")
    sessions = (tmp_path / "ray-tmp").resolve() / "ray"  # Ray adds "ray" to RAY_TMPDIR
    deadline = time.monotonic() + 300  # only against a hang
    while not any(sessions.glob("session_*")) and proc.poll() is None:
        assert time.monotonic() < deadline, "Ray never started a session"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGINT)  # as Ctrl-C: the driver and everything in its group
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, (out, err)
    assert err.strip() == (
        "rogueray: stopped by SIGINT during start-up; nothing was trained and no checkpoint written"
    ), err
    assert "SIGINT: stopping the start-up" in out
    assert not list_checkpoints(tmp_path / "run")


@pytest.mark.slow
@pytest.mark.ray
def test_sigterm_during_start_up_exits_143_in_one_line(tmp_path):
    proc = _start(tmp_path, "mode=ray")
    _read_until(proc, "TensorBoard:")  # the banner, printed before Ray starts
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 143, (out, err)
    assert err.strip() == (
        "rogueray: stopped by SIGTERM during start-up; nothing was trained and no checkpoint written"
    ), err
    assert not list_checkpoints(tmp_path / "run")
