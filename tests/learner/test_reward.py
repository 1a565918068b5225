"""The training-reward combination rule against a hand computation."""

import numpy as np
import pytest

from learner.reward import training_reward


def test_extrinsic_is_scaled_then_clipped_then_weighted():
    rewards = np.array([[50.0, -0.01], [3.0, -200.0]], np.float32)
    out = training_reward(
        rewards=rewards,
        caption_ids=np.full((2, 2), -1, np.int32),
        caption_counts=np.zeros((2, 2), np.int32),
        captions=(),
        extrinsic_coef=10.0,
        reward_scale=1.0,
        reward_clip=10.0,
    )
    np.testing.assert_allclose(out.extrinsic, [[100.0, -0.1], [30.0, -100.0]], rtol=1e-6)
    assert not out.intrinsic.any()


def test_intrinsic_uses_caption_reward_and_count_scaling():
    captions = ("You kill the newt!", "", "You see here 5 gold pieces.")
    per_caption = {"You kill the newt!": 1.0, "": 0.0, "You see here 5 gold pieces.": 0.5}
    caption_ids = np.array([[0, 2], [0, -1], [1, 2]], np.int32)
    counts = np.array([[1, 1], [2, 0], [1, 3]], np.int32)
    out = training_reward(
        rewards=np.zeros((3, 2), np.float32),
        caption_ids=caption_ids,
        caption_counts=counts,
        captions=captions,
        extrinsic_coef=0.1,
        reward_scale=1.0,
        reward_clip=10.0,
        intrinsic_coef=0.4,
        count_exponent=3.0,
        intrinsic_fn=lambda cs, counts: np.array([per_caption[c] for c in cs], np.float32),
    )
    expected = 0.4 * np.array([[1.0, 0.5], [1.0 / 8, 0.0], [0.0, 0.5 / 27]])
    np.testing.assert_allclose(out.intrinsic, expected, rtol=1e-6)
    np.testing.assert_allclose(out.total, out.extrinsic + out.intrinsic)


@pytest.mark.parametrize("coef", [0.0])
def test_intrinsic_off_means_zero_even_with_a_model(coef):
    out = training_reward(
        rewards=np.zeros((1, 1), np.float32),
        caption_ids=np.zeros((1, 1), np.int32),
        caption_counts=np.ones((1, 1), np.int32),
        captions=("x",),
        extrinsic_coef=1.0,
        reward_scale=1.0,
        reward_clip=10.0,
        intrinsic_coef=coef,
        intrinsic_fn=lambda cs, counts: np.ones(len(cs), np.float32),
    )
    assert not out.intrinsic.any()


def test_episode_intrinsic_counts_sightings_within_the_episode():
    from types import SimpleNamespace

    from learner.reward import episode_intrinsic

    cfg = SimpleNamespace(
        extrinsic_coef=1.0, reward_scale=1.0, reward_clip=10.0, intrinsic_coef=0.5,
        count_exponent=1.0,
    )  # fmt: skip
    values = {"gold": 1.0, "door": 0.2}
    per_step = episode_intrinsic(
        captions=["gold", None, "door", "gold", "gold"],
        rewards=[0.0] * 5,
        reward_config=cfg,
        read_rewards=lambda captions: np.array([values[c] for c in captions], np.float32),
    )
    # 0.5 * r_int / (sightings so far): gold 1st, no caption, door 1st, gold 2nd, gold 3rd
    assert per_step == pytest.approx([0.5, 0.0, 0.1, 0.25, 0.5 / 3])
