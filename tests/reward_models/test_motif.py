"""The `motif` reward model against a hand computation of Motif's transformation (normalise,
threshold at the chosen quantile, count scaling by the learner once), and its file errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from learner.reward import training_reward
from reward_models import make_reward_model
from reward_models.motif import (
    QUANTILE_LEVELS,
    FittedReward,
    MotifFileError,
    load_fitted,
    save_fitted,
)
from reward_models.ranking import ScalarRewardNet
from reward_models.text_encoder import encode_captions

CAPTIONS = ["You kill the newt!", "It's a wall.", "$ - 5 gold pieces.", "You hear a door open.",
            "There is a staircase down here.", "Never mind."]  # fmt: skip
OPTIONS = {"embed_dim": 8, "channels": 8, "text_dim": 16, "head_sizes": (16, 16)}
MEAN, STD = 0.05, 0.5


@pytest.fixture
def fitted_file(tmp_path):
    torch.manual_seed(3)
    net = ScalarRewardNet(**OPTIONS)
    with torch.no_grad():
        raw = net(torch.from_numpy(encode_captions(CAPTIONS))).double().numpy()
    z = (raw - MEAN) / STD
    # thresholds chosen by hand: the 0.5 level sits at the median of these captions' z
    quantiles = {q: float(np.quantile(z, q)) for q in QUANTILE_LEVELS}
    path = tmp_path / "motif_reward.pt"
    save_fitted(path, FittedReward(OPTIONS, net.state_dict(), MEAN, STD, quantiles, {}))
    return path, raw, quantiles


def test_rewards_match_a_hand_computation(fitted_file):
    path, raw, quantiles = fitted_file
    model = make_reward_model("motif", path=str(path), quantile=0.5)
    eps = quantiles[0.5]
    expected = []
    for r in raw:
        z = (float(r) - MEAN) / STD
        expected.append(z if z > eps else 0.0)
    got = model.rewards(CAPTIONS)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert (got == 0).sum() == 3  # the median splits six distinct values three and three
    assert model.wants_labels is False and model.add_labels([])["reward_model/dataset_size"] == 0
    np.testing.assert_array_equal(model.read_rewards(CAPTIONS), got)  # frozen: no statistics


def test_the_learner_count_scales_once(fitted_file):
    path, _, _ = fitted_file
    model = make_reward_model("motif", path=str(path), quantile=0.25)
    per_caption = model.rewards(CAPTIONS)
    ids = np.arange(len(CAPTIONS), dtype=np.int32)[:, None]  # [T=6, B=1]
    counts = np.array([1, 2, 3, 1, 4, 2], np.int32)[:, None]
    reward = training_reward(
        rewards=np.zeros((6, 1), np.float32), caption_ids=ids, caption_counts=counts,
        captions=CAPTIONS, extrinsic_coef=0.0, reward_scale=1.0, reward_clip=10.0,
        intrinsic_coef=0.4, count_exponent=3.0, intrinsic_fn=model.rewards,
    )  # fmt: skip
    expected = [0.4 * r / n**3 for r, n in zip(per_caption, counts[:, 0], strict=True)]
    np.testing.assert_allclose(reward.intrinsic[:, 0], expected, rtol=1e-5)


def test_bad_files_and_options_are_named(tmp_path, fitted_file):
    path, _, _ = fitted_file
    with pytest.raises(MotifFileError, match="does not exist.*fit-reward"):
        load_fitted(tmp_path / "nope.pt")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a torch file")
    with pytest.raises(MotifFileError, match="not a readable fitted Motif reward"):
        load_fitted(corrupt)
    other = tmp_path / "other.pt"
    torch.save({"weights": 1}, other)
    with pytest.raises(MotifFileError, match="not a fitted Motif reward file"):
        load_fitted(other)
    with pytest.raises(ValueError, match=r"quantile=0.33.*0\.05, 0\.10"):
        make_reward_model("motif", path=str(path), quantile=0.33)
    with pytest.raises(ValueError, match="path"):
        make_reward_model("motif")


def test_a_checkpoint_of_another_fitted_file_is_refused(fitted_file, tmp_path):
    path, _, quantiles = fitted_file
    model = make_reward_model("motif", path=str(path))
    state = model.state_dict()
    model.load_state_dict(state)  # same file: fine
    torch.manual_seed(4)
    net = ScalarRewardNet(**OPTIONS)
    save_fitted(path, FittedReward(OPTIONS, net.state_dict(), MEAN, STD, quantiles, {}))
    with pytest.raises(ValueError, match="sha256"):
        make_reward_model("motif", path=str(path)).load_state_dict(state)


def test_a_reward_that_barely_tells_captions_apart_is_named(tmp_path, fitted_file):
    from cluster.config import load_config
    from cluster.run_files import check_run_files
    from reward_models.motif import MIN_TELLING_STD, barely_fitted

    path, _, quantiles = fitted_file
    fitted = load_fitted(path)
    assert barely_fitted(fitted) is None  # std 0.5: its rewards mean something
    info = {"train_pairs": 80, "train_ties": 77}  # as a judge that calls most pairs ties
    flat = FittedReward(OPTIONS, fitted.net, MEAN, 0.0003, quantiles, info)
    why = barely_fitted(flat)
    assert "std 0.0003" in why and "77 of its 80 training pairs ties" in why
    assert (
        barely_fitted(FittedReward(OPTIONS, fitted.net, MEAN, MIN_TELLING_STD, quantiles, {}))
        is None
    )
    save_fitted(tmp_path / "flat.pt", flat)
    overrides = [
        "reward_model.name=motif",
        f"reward_model.path={tmp_path / 'flat.pt'}",
        "reward.intrinsic_coef=0.4",
    ]
    (line,) = check_run_files(load_config(None, [f"run_dir={tmp_path}/run", *overrides]))
    assert "flat.pt" in line and "mostly noise" in line and "fit it again" in line
    assert check_run_files(load_config(None, [f"run_dir={tmp_path}/run"])) == []
