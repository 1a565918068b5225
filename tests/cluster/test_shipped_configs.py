"""Every shipped config loads and validates, the ONI grid has the coefficients of ONI and asks
the LLM about its task's goal, and a wheel ships the configs where `rogueray train` finds them."""

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from cluster.config import load_config

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted((ROOT / "configs").rglob("*.yaml"))
ONI = [p for p in CONFIGS if p.parent.name == "oni"]


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_loads(path, tmp_path):
    config = load_config(path, [f"run_dir={tmp_path}/run"])
    if path.parent.name == "oni":
        task, method = path.stem.rsplit("-", 1)
        expected_ext = {"score": 0.1, "score-reward": 0.0}.get(task.replace("-free", ""), 10.0)
        assert config.reward.extrinsic_coef == expected_ext
        assert config.reward_model.name == {"extrinsic": "none"}.get(method, method)
        assert config.reward.intrinsic_coef == (0.0 if method == "extrinsic" else 0.4)


def test_oni_grid_is_complete():
    names = {p.stem for p in CONFIGS if p.parent.name == "oni"}
    for task in ("score", "staircase-lvl3", "staircase-lvl4", "oracle"):
        for method in ("extrinsic", "hashing", "classification", "ranking", "ellm"):
            assert f"{task}-{method}" in names
    for method in ("hashing", "classification", "ranking", "ellm"):
        assert f"score-reward-free-{method}" in names


# What the LLM should be asked about on each ONI task (annotator/prompts.py's GOALS): the
# Staircase tasks and the Oracle (dungeon levels 5-9) are reached by going down the stairs.
TASK_GOALS = {
    "NetHackScoreExtendedActions-v1": "default",
    "NetHackStaircaseLvl3ExtendedActions-v1": "stairs",
    "NetHackStaircaseLvl4ExtendedActions-v1": "stairs",
    "NetHackOracleExtendedActions-v1": "stairs",
}


@pytest.mark.parametrize("path", ONI, ids=lambda p: p.name)
def test_oni_goal_matches_the_task(path, tmp_path):
    config = load_config(path, [f"run_dir={tmp_path}/run"])
    assert config.annotator.goal == TASK_GOALS[config.env.id]


@pytest.mark.parametrize("path", ONI, ids=lambda p: p.name)
def test_oni_config_names_its_laptop_sized_override(path, tmp_path):
    command = next(
        line.lstrip("# ").split()
        for line in path.read_text().splitlines()
        if line.lstrip("# ").startswith("rogueray train")
    )
    assert command[:3] == ["rogueray", "train", f"configs/oni/{path.name}"]
    config = load_config(ROOT / command[2], [*command[3:], f"run_dir={tmp_path}/run"])
    assert config.total_env_steps <= 200_000 and config.rollout.num_workers == 1


PACKAGES = ["actors", "annotator", "cluster", "config_schema", "learner", "reward_models"]


@pytest.mark.slow
def test_the_wheel_ships_the_configs_and_train_finds_them(tmp_path):
    source = tmp_path / "source"  # a copy: building in the tree would write build/ and egg-info
    for name in [*PACKAGES, "configs"]:
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    dist = tmp_path / "dist"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            str(source),
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(dist),
        ],
        check=True,
        cwd=tmp_path,
    )
    (wheel,) = dist.glob("rogueray-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for path in CONFIGS:
        assert f"rogueray_configs/{path.relative_to(ROOT / 'configs').as_posix()}" in names
    for package in PACKAGES:  # every package directory made it (pyproject.toml lists them)
        for init in (ROOT / package).rglob("__init__.py"):
            assert init.relative_to(ROOT).as_posix() in names

    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    script = f"""
import sys
import cluster
from cluster.cli import main
from cluster.config import shipped_config
assert cluster.__file__.startswith({str(site)!r}), cluster.__file__
assert shipped_config("default.yaml").is_file(), shipped_config("default.yaml")
assert str(shipped_config("default.yaml")).startswith({str(site)!r})
sys.exit(main(sys.argv[1:]))
"""
    work = tmp_path / "elsewhere"  # not a clone: no configs/ here
    work.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site)}
    for args in (["train"], ["train", "configs/oni/oracle-hashing.yaml"]):
        out = subprocess.run(
            [sys.executable, "-c", script, *args, "--print-config", f"run_dir={work}/run"],
            capture_output=True,
            text=True,
            cwd=work,
            env=env,
        )
        assert out.returncode == 0, out.stderr
        assert "id: NetHack" in out.stdout
