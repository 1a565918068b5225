"""ONI-Retrieval (reference section 4.1): a table from exact caption to the LLM's label; r_int is
the label, 0 until the caption is labelled."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from actors.messages import CaptionLabel
from reward_models.base import DATASET_SIZE, Label, RewardModel, check_labels, check_option


class HashingRewardModel(RewardModel):
    """Caption -> stored label value (soft values allowed), 0.0 for unlabelled captions.

    threshold: None returns the stored value; a float returns 1.0 where value > threshold, else 0.0
    (the table keeps the soft value, so the threshold can change on resume).
    """

    label_kind: ClassVar[str] = "caption"

    def __init__(self, *, threshold: float | None = None) -> None:
        check_option(
            "threshold", threshold is None or 0.0 <= threshold <= 1.0, threshold, "None or [0, 1]"
        )
        self.threshold = threshold
        self.table: dict[str, float] = {}

    def _unique_rewards(self, captions: list[str]) -> np.ndarray:
        values = np.array([self.table.get(c, 0.0) for c in captions], dtype=np.float32)
        if self.threshold is None:
            return values
        return (values > self.threshold).astype(np.float32)

    def add_labels(self, labels: Sequence[Label]) -> dict[str, float]:
        check_labels(labels, CaptionLabel, type(self).__name__)
        self.table.update((label.caption, float(label.value)) for label in labels)
        return {DATASET_SIZE: float(self.dataset_size)}

    @property
    def dataset_size(self) -> int:
        return len(self.table)

    def state_dict(self) -> dict[str, Any]:
        return {"table": dict(self.table)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.table = {str(k): float(v) for k, v in state["table"].items()}
