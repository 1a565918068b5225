"""The registry: every name builds, also from its config section, and bad names or options are
reported with what is allowed."""

from __future__ import annotations

import pytest

from actors.messages import CaptionLabel
from reward_models import (
    DATASET_SIZE,
    REWARD_MODELS,
    FrozenRewardModel,
    RewardModelConfig,
    build_reward_model,
    make_reward_model,
    reward_model_options,
)


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("none", "caption"),
        ("hashing", "caption"),
        ("classification", "caption"),
        ("ranking", "pair"),
    ],
)
def test_every_name_builds_with_defaults(name, kind):
    model = make_reward_model(name)
    assert isinstance(model, REWARD_MODELS[name]) and model.label_kind == kind
    assert model.rewards(["x", "y"]).tolist() == [0.0, 0.0]


def test_the_names_a_config_may_give_are_the_registrys():
    # reward_models/config.py names them without torch, for the config check before Ray
    from reward_models.config import REWARD_MODEL_NAMES

    assert tuple(REWARD_MODELS) == REWARD_MODEL_NAMES


def test_options_are_passed():
    model = make_reward_model("ranking", normalize=False, threshold=None, channels=8)
    assert model.normalize is False and model.threshold is None
    assert reward_model_options("classification")["switch_dataset_size"] == 25_000


def test_unknown_name_lists_the_names():
    with pytest.raises(ValueError) as error:
        make_reward_model("motiv")
    message = str(error.value)
    assert "'motiv'" in message
    assert all(name in message for name in ("none", "hashing", "classification", "ranking"))


def test_unknown_option_is_named_with_the_allowed_ones():
    with pytest.raises(ValueError) as error:
        make_reward_model("hashing", treshold=0.5)
    assert "treshold" in str(error.value) and "threshold" in str(error.value)
    with pytest.raises(ValueError, match=r"beta.*\(none\)"):
        make_reward_model("none", beta=3)


@pytest.mark.parametrize(
    ("name", "key", "value"),
    [
        ("classification", "lr", -1.0),
        ("classification", "threshold", 2.0),
        ("ranking", "batch_size", 0),
        ("hashing", "threshold", -0.1),
        ("ranking", "device", "gpu0"),
    ],
)
def test_invalid_option_values_are_named(name, key, value):
    with pytest.raises(ValueError, match=f"{key}={value!r}"):
        make_reward_model(name, **{key: value})


def _parameters(model) -> int:
    return sum(p.numel() for p in model.net.parameters())


def test_built_from_its_config_section():
    section = RewardModelConfig(
        name="ranking", learning_rate=3e-4, batch_size=8, threshold=0.25, normalize=False
    )
    model = build_reward_model(section, seed=1, goal="gold")
    assert isinstance(model, REWARD_MODELS["ranking"])
    assert model.optimizer.param_groups[0]["lr"] == 3e-4 and model.batch_size == 8
    assert model.threshold == 0.25 and model.normalize is False
    default = build_reward_model(RewardModelConfig(name="ranking"), seed=1, goal="gold")
    assert default.threshold == reward_model_options("ranking")["threshold"]  # None keeps it


def test_small_width_shrinks_the_text_network():
    oni = build_reward_model(RewardModelConfig(name="classification"), seed=0, goal="default")
    small = build_reward_model(
        RewardModelConfig(name="classification", width="small"), seed=0, goal="default"
    )
    assert _parameters(small) * 4 < _parameters(oni)


def test_options_a_model_does_not_take_are_left_out():
    model = build_reward_model(RewardModelConfig(name="hashing", width="small"), seed=0, goal="x")
    assert isinstance(model, REWARD_MODELS["hashing"]) and model.threshold is None


def test_unknown_name_in_the_section_is_reported():
    with pytest.raises(ValueError, match="'motiv'.*ranking"):
        build_reward_model(RewardModelConfig(name="motiv"), seed=0, goal="default")


def test_the_models_that_ask_no_llm_share_the_frozen_base():
    frozen = {name for name, cls in REWARD_MODELS.items() if issubclass(cls, FrozenRewardModel)}
    assert frozen == {"none", "ellm", "motif"}
    assert frozen == {name for name, cls in REWARD_MODELS.items() if not cls.wants_labels}
    model = make_reward_model("none")
    label = CaptionLabel("you see a door", 1.0)
    assert model.add_labels([label]) == {DATASET_SIZE: 0.0} and model.dataset_size == 0
    assert model.state_dict() == {}
