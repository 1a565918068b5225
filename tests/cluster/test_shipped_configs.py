"""Every shipped config loads and validates, and the ONI grid has the coefficients of ONI."""

from pathlib import Path

import pytest

from cluster.config import load_config

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").rglob("*.yaml"))


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
        for method in ("extrinsic", "hashing", "classification", "ranking"):
            assert f"{task}-{method}" in names
    for method in ("hashing", "classification", "ranking"):
        assert f"score-reward-free-{method}" in names
