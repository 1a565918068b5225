"""`rogueray train` as the entrypoint of `ray job submit`: the address and run_dir rules of
cluster/ray_job.py, and a real job on a local Ray cluster (a head with its dashboard, the code
shipped as the job's working_dir) that trains to its step budget and writes its checkpoint."""

import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from cluster.checkpoint import load_latest
from cluster.ray_job import JOB_CONFIG_ENV, job_run_dir, joined_address
from tests.waiting import DEADLINE_S, wait_for

ROOT = Path(__file__).resolve().parents[2]


def test_joins_ray_address_unless_configured_or_a_dashboard_url(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert joined_address(None) is None  # a local Ray
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.5:6379")  # what the job supervisor sets
    assert joined_address(None) == "10.0.0.5:6379"
    assert joined_address("auto") == "auto"  # the config's own choice wins
    monkeypatch.setenv("RAY_ADDRESS", "http://127.0.0.1:8265")  # for `ray job submit` only
    assert joined_address(None) is None


def test_relative_run_dir_of_a_job_goes_under_home(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv(JOB_CONFIG_ENV, raising=False)
    assert job_run_dir("runs/x") == ("runs/x", None)  # not a job: as given
    monkeypatch.setenv(JOB_CONFIG_ENV, "{}")
    resolved, line = job_run_dir("runs/x")
    assert resolved == str(tmp_path / "runs" / "x")
    assert "run_dir runs/x is relative, so it is" in line and "temporary copy" in line
    assert job_run_dir("/data/runs/x") == ("/data/runs/x", None)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.ray
@pytest.mark.slow
def test_train_as_a_ray_job_entrypoint(monkeypatch):
    """`ray job submit --working-dir . -- rogueray train ...` against a head started here: the
    job joins that cluster (RAY_ADDRESS), imports the shipped code (PYTHONPATH is cleared for the
    cluster's processes), writes its run under $HOME (a relative run_dir) and succeeds."""
    from ray.cluster_utils import Cluster
    from ray.job_submission import JobStatus, JobSubmissionClient

    # Short: Ray's socket paths live under the temp dir and must stay under 108 bytes.
    scratch = Path(tempfile.mkdtemp(prefix="rrjob"))
    home = scratch / "home"
    home.mkdir()
    monkeypatch.setenv("RAY_gcs_server_port_wait_time_s", str(int(DEADLINE_S)))
    monkeypatch.setenv("HOME", str(home))  # the job's relative run_dir lands here
    # A ray.init() earlier in this process turns Ray's token authentication on for its children
    # (RAY_AUTH_MODE=token, token in ~/.ray), and the HOME above hides the token: this cluster
    # of its own on 127.0.0.1 runs without, or its GCS exits at start and the test waits 600 s.
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    monkeypatch.delenv("PYTHONPATH", raising=False)  # the job must import the shipped copy
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    port = _free_port()
    cluster = Cluster()
    try:
        cluster.add_node(
            num_cpus=2, include_dashboard=True, dashboard_host="127.0.0.1",
            dashboard_port=port, temp_dir=str(scratch / "ray"), wait=False,
            dashboard_agent_listen_port=_free_port(),  # not Ray's fixed 52365: another Ray may hold it
        )  # fmt: skip
        cluster.wait_for_nodes(timeout=DEADLINE_S)
        url = f"http://127.0.0.1:{port}"
        client = _client(JobSubmissionClient, url)
        entrypoint = (
            "rogueray train configs/cartpole.yaml run_dir=runs/job total_env_steps=3000 "
            "rollout.num_workers=1 log_interval_s=1"
        )
        give_up = time.monotonic() + DEADLINE_S
        while True:  # the node's job agent starts after the node: Ray says to try again later
            submitted = subprocess.run(
                [sys.executable, "-m", "ray.scripts.scripts", "job", "submit", "--address", url,
                 "--working-dir", ".", "--no-wait", "--", *entrypoint.split()],
                cwd=ROOT, capture_output=True, text=True, timeout=DEADLINE_S,
            )  # fmt: skip
            not_yet = "No available agent to submit job" in submitted.stderr
            if submitted.returncode == 0 or not not_yet or time.monotonic() > give_up:
                break
            time.sleep(2.0)
        assert submitted.returncode == 0, submitted.stdout + submitted.stderr
        job_id = next(
            line.split("'")[1] for line in submitted.stdout.splitlines() if "submitted" in line
        )
        final = {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED}
        wait_for(
            f"job {job_id} to end",
            lambda: (client.get_job_status(job_id) in final, client.get_job_status(job_id)),
            details=lambda: client.get_job_logs(job_id)[-3000:],
        )
        logs = client.get_job_logs(job_id)
        assert client.get_job_status(job_id) == JobStatus.SUCCEEDED, logs[-3000:]
    finally:
        cluster.shutdown()
        shutil.rmtree(scratch / "ray", ignore_errors=True)
    run_dir = home / "runs" / "job"
    assert f"run_dir runs/job is relative, so it is {run_dir}" in logs
    assert "working_dir_files" in logs  # the job ran in the unpacked copy of the code
    assert "Ray at " in logs and "a local Ray" not in logs  # joined, not a second Ray
    assert "steps/s" in logs and "[rogueray] done: " in logs  # plain status lines in the log
    checkpoint = load_latest(run_dir)
    assert checkpoint is not None and checkpoint["counters"]["env_steps"] >= 3000
    assert (run_dir / "config.yaml").exists() and any((run_dir / "tensorboard").iterdir())
    shutil.rmtree(scratch, ignore_errors=True)


def _client(cls, url: str):
    """The job client, once the dashboard answers (it starts after the node registers)."""
    deadline = time.monotonic() + DEADLINE_S
    while True:
        try:
            return cls(url)
        except ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1.0)
