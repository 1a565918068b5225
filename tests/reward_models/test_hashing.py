"""The hashing (ONI-retrieval) table, the `none` model, and per-unique-caption evaluation."""

from __future__ import annotations

import numpy as np
import pytest

from actors.messages import CaptionLabel, PairLabel
from reward_models import HashingRewardModel, NoRewardModel
from reward_models.base import unique_captions


def test_unlabelled_zero_labelled_value_relabel():
    model = HashingRewardModel()
    assert model.rewards(["a", "b"]).tolist() == [0.0, 0.0]
    metrics = model.add_labels([CaptionLabel("a", 1.0), CaptionLabel("b", 0.25)])
    assert metrics["reward_model/dataset_size"] == 2
    assert model.rewards(["a", "b", "c", "a"]).tolist() == [1.0, 0.25, 0.0, 1.0]
    model.add_labels([CaptionLabel("a", 0.0)])
    assert model.rewards(["a"]).tolist() == [0.0] and model.dataset_size == 2


def test_threshold_turns_soft_labels_binary():
    model = HashingRewardModel(threshold=0.5)
    model.add_labels([CaptionLabel("a", 0.7), CaptionLabel("b", 0.5), CaptionLabel("c", 0.2)])
    assert model.rewards(["a", "b", "c"]).tolist() == [1.0, 0.0, 0.0]


def test_state_round_trip():
    model = HashingRewardModel()
    model.add_labels([CaptionLabel("gold", 1.0), CaptionLabel("wall", 0.0)])
    state = model.state_dict()
    model.add_labels([CaptionLabel("gold", 0.0)])  # must not leak into the saved state
    restored = HashingRewardModel()
    restored.load_state_dict(state)
    assert restored.rewards(["gold", "wall", "x"]).tolist() == [1.0, 0.0, 0.0]
    assert restored.dataset_size == 2


def test_rejects_pair_labels_and_out_of_range_values():
    model = HashingRewardModel()
    with pytest.raises(TypeError, match="PairLabel"):
        model.add_labels([PairLabel("a", "b", 1.0)])
    with pytest.raises(ValueError, match="1.5"):
        model.add_labels([CaptionLabel("a", 1.5)])


def test_none_model_is_zero_and_ignores_labels():
    model = NoRewardModel()
    model.add_labels([CaptionLabel("a", 1.0)])
    rewards = model.rewards(["a", "b"])
    assert rewards.dtype == np.float32 and rewards.tolist() == [0.0, 0.0]
    assert not model.wants_labels and model.dataset_size == 0


def test_unique_captions_inverse():
    captions = ["b", "a", "b", "c", "a"]
    unique, inverse = unique_captions(captions)
    assert unique == ["b", "a", "c"]
    assert [unique[i] for i in inverse] == captions
    assert unique_captions([])[0] == [] and HashingRewardModel().rewards([]).shape == (0,)


def test_rewards_evaluate_each_distinct_caption_once():
    rng = np.random.default_rng(0)
    pool = [f"message {i}" for i in range(50)]
    captions = [pool[i] for i in rng.integers(50, size=4096)]
    model = HashingRewardModel()
    model.add_labels([CaptionLabel(c, i / 49) for i, c in enumerate(pool)])
    seen: list[list[str]] = []
    inner = model._unique_rewards
    model._unique_rewards = lambda unique: seen.append(list(unique)) or inner(unique)
    rewards = model.rewards(captions)
    assert len(seen) == 1 and sorted(seen[0]) == sorted(set(captions))
    np.testing.assert_array_equal(rewards, np.float32([model.table[c] for c in captions]))
