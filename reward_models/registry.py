"""Reward models by name, so configs and the learner pick one without branching on strings."""

from __future__ import annotations

import inspect
from typing import Any

from reward_models.base import NoRewardModel, RewardModel
from reward_models.classification import ClassificationRewardModel
from reward_models.ellm import EllmRewardModel
from reward_models.hashing import HashingRewardModel
from reward_models.motif import MotifRewardModel
from reward_models.ranking import RankingRewardModel

REWARD_MODELS: dict[str, type[RewardModel]] = {
    "none": NoRewardModel,
    "hashing": HashingRewardModel,
    "classification": ClassificationRewardModel,
    "ranking": RankingRewardModel,
    "ellm": EllmRewardModel,
    "motif": MotifRewardModel,
}
"""Name (the config's `reward_model.name`) -> class; ONI's retrieval is `hashing`; `motif` is
offline Motif (a frozen fitted reward, reward_models/motif.py)."""


def reward_model_options(name: str) -> dict[str, Any]:
    """The options `name` accepts, with their defaults."""
    cls = _lookup(name)
    return {
        key: param.default
        for key, param in inspect.signature(cls.__init__).parameters.items()
        if param.kind is inspect.Parameter.KEYWORD_ONLY
    }


def make_reward_model(name: str, **options: Any) -> RewardModel:
    """Build the reward model called `name` with keyword `options`.

    Raises ValueError naming the bad name or option and listing what is allowed.
    """
    allowed = reward_model_options(name)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(
            f"unknown option(s) {', '.join(unknown)} for reward model {name!r}; "
            f"allowed: {', '.join(allowed) or '(none)'}"
        )
    return _lookup(name)(**options)


def _lookup(name: str) -> type[RewardModel]:
    if name not in REWARD_MODELS:
        raise ValueError(
            f"unknown reward model {name!r}; choose one of: {', '.join(REWARD_MODELS)}"
        )
    return REWARD_MODELS[name]
