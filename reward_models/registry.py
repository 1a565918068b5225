"""Reward models by name, so configs and the learner pick one without branching on strings, and
built from their config section (`build_reward_model`)."""

from __future__ import annotations

import inspect
from typing import Any

from reward_models.base import NoRewardModel, RewardModel
from reward_models.classification import ClassificationRewardModel
from reward_models.config import RewardModelConfig
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


SMALL_TEXT_NETWORK = {  # reward_model.width=small; options a model does not take are dropped
    "embed_dim": 16,
    "channels": 32,
    "text_dim": 64,
    "mlp_sizes": (128, 128),
    "head_sizes": (64, 128),
}
"""The text network of `width: small`, about 4x cheaper per step than ONI's char-CNN."""


def build_reward_model(rm: RewardModelConfig, *, seed: int, goal: str) -> RewardModel:
    """The reward model the `reward_model.*` section configures, given only the options its
    class accepts. `seed` is the run's seed (weight init, pair sampling); `goal` the annotator's
    goal (annotator.goal), which ellm turns into its goal sentence when none is set.

    Raises ValueError for an unknown `rm.name`, listing the known ones."""
    allowed = reward_model_options(rm.name)
    candidates = {
        "lr": rm.learning_rate,
        "batch_size": rm.batch_size,
        "steps_per_label_batch": rm.steps_per_label_batch,
        "label_batch_size": rm.label_batch_size,
        "switch_dataset_size": rm.switch_dataset_size,
        "normalize": rm.normalize,
        "device": rm.device,
        "seed": seed,
        "path": rm.path,
        "quantile": rm.quantile,
        "goal": goal,
        "goal_sentence": rm.goal_sentence,
        "embedding": rm.embedding,
        "cache_size": rm.embedding_cache,
    }
    if rm.threshold is not None:
        candidates["threshold"] = rm.threshold
    if rm.width == "small":
        candidates.update(SMALL_TEXT_NETWORK)
    return make_reward_model(rm.name, **{k: v for k, v in candidates.items() if k in allowed})


def _lookup(name: str) -> type[RewardModel]:
    if name not in REWARD_MODELS:
        raise ValueError(
            f"unknown reward model {name!r}; choose one of: {', '.join(REWARD_MODELS)}"
        )
    return REWARD_MODELS[name]
