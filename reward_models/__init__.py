"""Intrinsic reward models of ONI (none, hashing, classification, ranking) and the ELLM-style
similarity baseline (ellm) behind one interface, with episodic count scaling and reward
normalisation. Pure torch/numpy (ellm also transformers, for its sentence embedding)."""

import importlib
from typing import Any

# Where each public name lives. The package imports its submodules on first use (PEP 562), so
# that a light user (the label store, `rogueray labels`, through pair_sampling) does not import
# torch. The labels themselves are messages: actors/messages.py.
_SOURCES = {
    "ACCURACY": "base",
    "DATASET_SIZE": "base",
    "FrozenRewardModel": "base",
    "GRADIENT_STEPS": "base",
    "LOSS": "base",
    "NoRewardModel": "base",
    "RewardModel": "base",
    "ClassificationRewardModel": "classification",
    "count_scaling": "counts",
    "EllmRewardModel": "ellm",
    "GOAL_SENTENCES": "ellm",
    "Embedder": "embedding",
    "make_embedder": "embedding",
    "HashingRewardModel": "hashing",
    "MotifRewardModel": "motif",
    "RunningMeanStd": "normalization",
    "pair_key": "pair_sampling",
    "sample_pairs": "pair_sampling",
    "RankingRewardModel": "ranking",
    "REWARD_MODELS": "registry",
    "RewardModelConfig": "config",
    "build_reward_model": "registry",
    "make_reward_model": "registry",
    "reward_model_options": "registry",
    "CAPTION_LENGTH": "text_encoder",
    "decode_caption": "text_encoder",
    "encode_captions": "text_encoder",
}


def __getattr__(name: str) -> Any:
    if name not in _SOURCES:
        raise AttributeError(f"module 'reward_models' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"reward_models.{_SOURCES[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_SOURCES])


__all__ = [
    "ACCURACY",
    "CAPTION_LENGTH",
    "DATASET_SIZE",
    "GRADIENT_STEPS",
    "LOSS",
    "REWARD_MODELS",
    "ClassificationRewardModel",
    "EllmRewardModel",
    "Embedder",
    "FrozenRewardModel",
    "GOAL_SENTENCES",
    "HashingRewardModel",
    "MotifRewardModel",
    "NoRewardModel",
    "RankingRewardModel",
    "RewardModel",
    "RewardModelConfig",
    "RunningMeanStd",
    "count_scaling",
    "build_reward_model",
    "decode_caption",
    "encode_captions",
    "make_embedder",
    "make_reward_model",
    "pair_key",
    "reward_model_options",
    "sample_pairs",
]
