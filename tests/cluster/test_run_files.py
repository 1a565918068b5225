"""Files a run opens are checked before Ray starts: a corrupt label store, an unreadable
checkpoint or a damaged model cache is `rogueray: error: ...` and exit 2, naming the file and
what to do, with Ray never started. Real files; the CLI runs in a subprocess."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cluster.config import ConfigError, load_config
from cluster.run_files import check_run_files

ROOT = Path(__file__).resolve().parents[2]
DEFAULT = ROOT / "configs" / "default.yaml"


def test_random_bytes_label_store_is_exit_2_before_ray(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    store = run_dir / "labels.sqlite"
    garbage = os.urandom(64 * 1024)
    store.write_bytes(garbage)
    ray_tmp = tmp_path / "tmp"  # where Ray would put its session folder and logs
    ray_tmp.mkdir()
    env = {**os.environ, "RAY_TMPDIR": str(ray_tmp), "TMPDIR": str(ray_tmp),
           "ROGUERAY_CACHE": str(tmp_path / "models")}  # fmt: skip
    proc = subprocess.run(
        [sys.executable, "-m", "cluster.cli", "train", str(DEFAULT), f"run_dir={run_dir}",
         "mode=ray", "total_env_steps=1000"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stdout + proc.stderr
    error = proc.stderr.strip().splitlines()
    assert len(error) == 1 and error[0].startswith("rogueray: error: "), proc.stderr
    assert str(store) in error[0] and "is not a readable rogueray label store" in error[0]
    assert "Move it aside" in error[0]
    assert "Traceback" not in proc.stdout + proc.stderr
    assert not (ray_tmp / "ray").exists(), "Ray was started"  # ray.init creates it first
    assert store.read_bytes() == garbage  # nothing was written into it


def _config(tmp_path, *overrides):
    return load_config(DEFAULT, [f"run_dir={tmp_path / 'run'}", *overrides])


def test_unreadable_checkpoint_is_named(tmp_path):
    folder = tmp_path / "run" / "checkpoints"
    folder.mkdir(parents=True)
    good = folder / "checkpoint_000000000100.pt"
    good.write_bytes(b"readable")
    check_run_files(_config(tmp_path, "reward_model.name=none"))
    bad = folder / "checkpoint_000000000200.pt"
    bad.symlink_to(tmp_path / "gone.pt")  # listed, but cannot be opened
    with pytest.raises(ConfigError) as info:
        check_run_files(_config(tmp_path, "reward_model.name=none"))
    assert str(bad) in str(info.value) and "move it out of" in str(info.value)
    check_run_files(_config(tmp_path, "reward_model.name=none"), checkpoints=False)  # --fresh


def test_checkpoint_folder_that_is_a_file_is_named(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "checkpoints").write_text("")
    with pytest.raises(ConfigError, match="checkpoints is not a folder"):
        check_run_files(_config(tmp_path, "reward_model.name=none"))


def test_damaged_model_cache_is_named(tmp_path, monkeypatch):
    from annotator import model_store
    from tests.doubles.stand_in_wheel import stand_in_convert

    monkeypatch.setenv("ROGUERAY_CACHE", str(tmp_path / "models"))
    folder = tmp_path / "models" / model_store.DEFAULT_MODEL_DIRNAME
    stand_in_convert(Path("unused.gguf"), folder)
    (folder / model_store.MANIFEST).write_text("{}")
    check_run_files(_config(tmp_path))
    (folder / "config.json").write_bytes(os.urandom(32))
    with pytest.raises(ConfigError) as info:
        check_run_files(_config(tmp_path))
    assert str(folder) in str(info.value) and "rebuilt on the next start" in str(info.value)
    stand_in_convert(Path("unused.gguf"), folder)  # repaired
    stale = tmp_path / "models" / f".work-{model_store.DEFAULT_MODEL_DIRNAME}"
    stale.mkdir()
    (tmp_path / "models" / f".{model_store.DEFAULT_MODEL_DIRNAME}.lock").touch()
    check_run_files(_config(tmp_path))
    assert not stale.exists()  # a dead conversion's work folder goes at the next start
