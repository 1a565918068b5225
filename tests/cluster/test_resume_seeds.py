"""A resumed run plays new dungeons: the NetHack seeds of its first episodes differ from those of
the original run's first episodes, while a new run with the same seed replays the original
exactly. Serial mode, real NetHack; the seeds each reset used are read back from NLE."""

from pathlib import Path

import pytest

from cluster.checkpoint import list_checkpoints
from cluster.config import load_config
from cluster.driver import train

pytestmark = [pytest.mark.nle, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


def _run(run_dir, seen, total_env_steps=64):
    overrides = [
        f"run_dir={run_dir}", "mode=serial", f"total_env_steps={total_env_steps}", "seed=5",
        "env.id=NetHackScoreExtendedActions-v1", "env.num_envs_per_worker=2",
        "env.max_episode_steps=4", "rollout.num_workers=1", "rollout.unroll_length=16",
        "learner.batch_size=32", "model.hidden_size=32", "reward_model.name=none",
    ]  # fmt: skip
    start = len(seen)
    train(load_config(ROOT / "configs" / "default.yaml", overrides), quiet=True)
    return seen[start:]


def test_resumed_run_plays_new_dungeons_and_a_seed_replays_its_run(tmp_path, nethack_seeds):
    original = _run(tmp_path / "a", nethack_seeds)
    assert len(original) >= 16 and list_checkpoints(tmp_path / "a")
    resumed = _run(tmp_path / "a", nethack_seeds, total_env_steps=128)
    assert len(resumed) >= 16
    assert not set(original) & set(resumed), "the resumed run replayed dungeons"
    assert _run(tmp_path / "b", nethack_seeds) == original  # same seed, same streams
