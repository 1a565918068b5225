"""The reward model's settings (section `reward_model.*` of the run config): which intrinsic
reward model, how it trains on labels, where it runs. A typed dataclass documented field by
field; each number declares its domain in its type (config_schema/domains.py). The run config
(cluster/config.py) composes it; `reward_models.registry.build_reward_model` builds the model
from it."""

from __future__ import annotations

from dataclasses import dataclass

from config_schema.domains import Count, Finite, Fraction, Positive

REWARD_MODEL_NAMES = ("none", "hashing", "classification", "ranking", "ellm", "motif")
"""What `reward_model.name` may be: the registry's models (reward_models/registry.py), named here
without importing torch so that a config error is reported before any heavy import."""
MOTIF_QUANTILES: tuple[float, ...] = tuple(round(0.05 * i, 2) for i in range(1, 20))
"""The quantiles of the normalised reward a fitted Motif file carries (0.05, 0.10, ..., 0.95),
the values `reward_model.quantile` may take with name=motif."""


@dataclass
class RewardModelConfig:
    name: str = "none"
    """Intrinsic reward model: "none", "hashing" (ONI-retrieval), "classification", "ranking",
    "motif" (frozen, fitted by `rogueray fit-reward`), "ellm" (similarity to a goal sentence)."""
    learning_rate: Positive = 1e-4
    """Adam step size of the reward model (classification, ranking)."""
    batch_size: Count = 256
    """Captions (classification) or pairs (ranking) per reward-model gradient step."""
    steps_per_label_batch: Count = 32
    """Gradient steps per label_batch_size labels arriving, while the data set is below
    switch_dataset_size (ONI: 32)."""
    label_batch_size: Count = 100
    """Labels that earn steps_per_label_batch steps: ONI ran its 32 steps per LLM batch of up to
    100 labels. A delivery of fewer labels earns its share (carried over); one delivery runs at
    most steps_per_label_batch steps."""
    switch_dataset_size: Count = 25_000
    """From this many labels on, one gradient step per learner update instead (ONI's schedule)."""
    threshold: Finite | None = None
    """Reward threshold; None keeps the model's own (classification 0.5 on P(helpful), ranking
    -0.5 on the normalised output, hashing none, ellm 0.4 on the cosine similarity)."""
    normalize: bool = True
    """Ranking: normalise and threshold as ONI intended; false reproduces the released code."""
    width: str = "oni"
    """Text network size: "oni" (ONI's char-CNN, ~470k parameters) or "small" (~4x cheaper per
    step; what a CPU learner can afford while labels stream in)."""
    device: str = "cpu"
    """Torch device the reward model trains and scores on, e.g. "cpu" or "cuda:0"."""
    path: str | None = None
    """motif: the fitted reward file `rogueray fit-reward DATASET` wrote (e.g.
    datasets/score/reward/motif_reward.pt); checked before Ray starts."""
    quantile: Fraction = 0.5
    """motif: the normalised reward is zeroed unless above this quantile of it over the distinct
    training captions; one of 0.05, 0.10, ..., 0.95 (Motif used the median, 0.5)."""
    goal_sentence: str | None = None
    """ellm: the sentence compared with captions; None: annotator.goal's (ellm.GOAL_SENTENCES)."""
    embedding: str = "all-minilm-l6-v2"
    """ellm: the sentence embedding (EMBEDDERS in reward_models/embedding.py)."""
    embedding_cache: Count = 20_000
    """ellm: captions whose embeddings are kept (an LRU; 1.5 KB each for all-minilm-l6-v2)."""
