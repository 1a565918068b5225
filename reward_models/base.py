"""The reward-model interface the learner programs against, its metric names, the per-unique-caption
evaluation every model shares, and the trivial `none` model."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from actors.messages import CaptionLabel, PairLabel

LOSS = "reward_model/loss"
ACCURACY = "reward_model/accuracy"
DATASET_SIZE = "reward_model/dataset_size"
GRADIENT_STEPS = "reward_model/gradient_steps"

Label = CaptionLabel | PairLabel


def unique_captions(captions: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """Distinct captions in first-seen order, and for each input the index of its caption.

    Returns (unique [U], inverse int64 [N]) with unique[inverse[i]] == captions[i]. A dict pass is
    O(N) and, for a few thousand short strings, faster than sorting them with np.unique.
    """
    index: dict[str, int] = {}
    inverse = np.fromiter(
        (index.setdefault(c, len(index)) for c in captions), dtype=np.int64, count=len(captions)
    )
    return list(index), inverse


def check_option(key: str, ok: bool, value: Any, expected: str) -> None:
    """Raise ValueError naming the option, its value and what is allowed, unless `ok`."""
    if not ok:
        raise ValueError(f"reward model option {key}={value!r} is invalid: expected {expected}")


def check_labels(labels: Sequence[Label], kind: type[Label], model: str) -> None:
    """Reject labels of the wrong kind or with a value outside [0, 1]."""
    for label in labels:
        if not isinstance(label, kind):
            raise TypeError(f"{model} learns from {kind.__name__}, got {type(label).__name__}")
        value = label.value if isinstance(label, CaptionLabel) else label.preference
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"label value must be in [0, 1], got {value!r} in {label!r}")


class RewardModel(ABC):
    """Maps captions to intrinsic rewards r_int and learns from the annotator's labels.

    Subclasses implement `_unique_rewards`; `rewards` evaluates it once per distinct caption.
    Threads: `add_labels` may run in one thread while the rest runs in another (the Ray learner
    gives it a concurrency group of its own). The learned models hold a lock for that; the table
    (hashing) needs none, each of its dict operations being atomic in CPython; the frozen ones
    ignore labels. Every other call comes from one thread.
    """

    label_kind: ClassVar[str]
    """"caption" (learns from CaptionLabel) or "pair" (learns from PairLabel)."""
    wants_labels: ClassVar[bool] = True
    """False where labels are ignored, so nobody need ask the LLM for them."""

    def rewards(self, captions: Sequence[str], occurrences: np.ndarray | None = None) -> np.ndarray:
        """r_int for each caption, before count scaling: float32 [N] for N captions.

        The training path: a model with running statistics (ranking) merges this batch into them,
        each caption `occurrences[i]` times (int [N], e.g. a batch's bincount of caption ids),
        or once per element of `captions` when None.
        """
        unique, inverse = unique_captions(captions)
        if not unique:
            return np.zeros(0, dtype=np.float32)
        return np.asarray(self._unique_rewards(unique), dtype=np.float32)[inverse]

    def read_rewards(self, captions: Sequence[str]) -> np.ndarray:
        """r_int as `rewards` gives it now, float32 [N], changing no state (for display)."""
        return RewardModel.rewards(self, captions)

    @abstractmethod
    def _unique_rewards(self, captions: list[str]) -> np.ndarray:
        """r_int for U distinct captions: float32 [U]."""

    @abstractmethod
    def add_labels(self, labels: Sequence[Label]) -> dict[str, float]:
        """Store new labels (a caption or pair seen before is relabelled); may train.

        Returns metrics keyed by the names above; always includes DATASET_SIZE.
        """

    def train_iteration(self) -> dict[str, float]:
        """Called once per learner update; models trained on a schedule may take a step."""
        return {DATASET_SIZE: float(self.dataset_size)}

    @property
    @abstractmethod
    def dataset_size(self) -> int:
        """Number of distinct labelled items (captions or pairs) stored."""

    @abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume: weights, optimiser, dataset, normaliser, counters.

        The returned objects are copies; training on afterwards does not change them.
        """

    @abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned, into a model built with the same options."""


class FrozenRewardModel(RewardModel):
    """A reward model that learns nothing during the run (`none`, `ellm`, `motif`): no LLM is
    asked for it (`wants_labels` False), labels are accepted and ignored, its data set stays
    empty, and by default it has no state to checkpoint. Subclasses give `label_kind` and
    `_unique_rewards`, and may record their options in `state_dict`."""

    wants_labels: ClassVar[bool] = False

    def add_labels(self, labels: Sequence[Label]) -> dict[str, float]:
        """Labels are not used; accepted and ignored. Returns {DATASET_SIZE: 0.0}."""
        return {DATASET_SIZE: 0.0}

    @property
    def dataset_size(self) -> int:
        return 0

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


class NoRewardModel(FrozenRewardModel):
    """`none`: extrinsic reward only. r_int is 0 for every caption and labels are ignored."""

    label_kind: ClassVar[str] = "caption"

    def _unique_rewards(self, captions: list[str]) -> np.ndarray:
        return np.zeros(len(captions), dtype=np.float32)
