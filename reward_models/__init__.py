"""Intrinsic reward models of ONI (none, hashing, classification, ranking) behind one interface,
with episodic count scaling and reward normalisation. Pure torch/numpy."""

from reward_models.base import (
    ACCURACY,
    DATASET_SIZE,
    GRADIENT_STEPS,
    LOSS,
    NoRewardModel,
    RewardModel,
)
from reward_models.classification import ClassificationRewardModel
from reward_models.counts import count_scaling
from reward_models.hashing import HashingRewardModel
from reward_models.labels import CaptionLabel, PairLabel
from reward_models.normalization import RunningMeanStd
from reward_models.pair_sampling import pair_key, sample_pairs
from reward_models.ranking import RankingRewardModel
from reward_models.registry import REWARD_MODELS, make_reward_model, reward_model_options
from reward_models.text_encoder import CAPTION_LENGTH, decode_caption, encode_captions

__all__ = [
    "ACCURACY",
    "CAPTION_LENGTH",
    "DATASET_SIZE",
    "GRADIENT_STEPS",
    "LOSS",
    "REWARD_MODELS",
    "CaptionLabel",
    "ClassificationRewardModel",
    "HashingRewardModel",
    "NoRewardModel",
    "PairLabel",
    "RankingRewardModel",
    "RewardModel",
    "RunningMeanStd",
    "count_scaling",
    "decode_caption",
    "encode_captions",
    "make_reward_model",
    "pair_key",
    "reward_model_options",
    "sample_pairs",
]
