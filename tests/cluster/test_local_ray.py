"""A run with no ray_address starts a Ray of its own, even where `ray start` left a cluster on
the machine: a bare ray.init() joins that cluster and then refuses num_cpus ("When connecting to
an existing cluster, num_cpus and num_gpus must not be provided")."""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parents[2]

SNIPPET = """
import ray
from cluster.config import load_config
from cluster.placement import start_ray
config = load_config("configs/cartpole.yaml", ["run_dir={run_dir}", "rollout.num_workers=1",
                                                "ray_num_cpus=3"])
assert start_ray(config) is True
print("cpus", ray.cluster_resources()["CPU"])
ray.shutdown()
"""


def _kill_below(path: Path) -> None:
    """Every process whose command line names `path` (the cluster `ray start` made there)."""
    mine = [
        p
        for p in psutil.process_iter(["cmdline"])
        if str(path) in " ".join(p.info["cmdline"] or [])
    ]
    for proc in mine:
        proc.send_signal(signal.SIGKILL)
    psutil.wait_procs(mine, timeout=10)


@pytest.mark.ray
def test_a_run_starts_its_own_ray_beside_a_ray_start_cluster(tmp_path):
    scratch = Path(tempfile.mkdtemp(prefix="rrls"))  # short: Ray's socket paths are < 108 bytes
    env = {**os.environ, "RAY_TMPDIR": str(scratch), "PYTHONPATH": str(ROOT)}
    env.pop("RAY_ADDRESS", None)
    try:
        started = subprocess.run(
            [sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--port=0",
             "--num-cpus=1", "--include-dashboard=false", "--disable-usage-stats"],
            env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert started.returncode == 0, started.stdout + started.stderr
        assert (scratch / "ray" / "ray_current_cluster").exists()  # what ray.init() would join
        run = subprocess.run(
            [sys.executable, "-c", SNIPPET.format(run_dir=tmp_path / "run")],
            env=env, cwd=ROOT, capture_output=True, text=True, timeout=180,
        )  # fmt: skip
        assert run.returncode == 0, run.stdout + run.stderr
        assert "cpus 3.0" in run.stdout  # its own Ray with the CPUs asked, not the 1 of the other
    finally:
        _kill_below(scratch)
        time.sleep(0.5)
        shutil.rmtree(scratch, ignore_errors=True)


def test_ray_that_times_out_at_start_is_one_line_with_what_to_do(tmp_path, monkeypatch, capsys):
    """Ray's own start-up failure on a loaded machine (the exception the newcomer trial met,
    raised here by a stand-in for ray.init) is one line and exit 1, not a traceback."""
    import ray

    from cluster.cli import main

    def ray_init_timing_out_double(**options):
        raise Exception(  # noqa: TRY002 - Ray raises a bare Exception here
            "The current node timed out during startup. This could happen because some of the "
            "Ray processes failed to startup. GCS has become overloaded.\nmore detail"
        )

    monkeypatch.setattr(ray, "init", ray_init_timing_out_double)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    code = main(["train", str(ROOT / "configs/cartpole.yaml"), f"run_dir={tmp_path}/run"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert err[-1].startswith("rogueray: error: a local Ray did not start: The current node timed")
    assert "run the command again" in err[-1] and "Traceback" not in "\n".join(err)
