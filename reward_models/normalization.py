"""Running mean and variance of rewards (the RunningMeanStd of ONI/Motif, after OpenAI baselines),
merged batch by batch with Chan et al.'s parallel update."""

from __future__ import annotations

from typing import Any

import numpy as np


class RunningMeanStd:
    """Mean and (population) variance of every value passed to `update` so far.

    Starts from mean 0, var 1 with a pseudo-count `epsilon`, as baselines does, so the first batch
    dominates at once and `normalize` is defined before any update.
    """

    def __init__(self, epsilon: float = 1e-4) -> None:
        self.mean = 0.0
        self.var = 1.0
        self.count = float(epsilon)

    def update(self, values: np.ndarray) -> None:
        """Merge a batch of values (any shape, flattened) into the statistics."""
        values = np.asarray(values, dtype=np.float64).ravel()
        if values.size == 0:
            return
        batch_mean, batch_var, batch_count = values.mean(), values.var(), values.size
        delta = batch_mean - self.mean
        total = self.count + batch_count
        m2 = self.var * self.count + batch_var * batch_count
        m2 += delta**2 * self.count * batch_count / total
        self.mean = float(self.mean + delta * batch_count / total)
        self.var = float(m2 / total)
        self.count = float(total)

    def normalize(self, values: np.ndarray, eps: float = 1e-8) -> np.ndarray:
        """(values - mean) / sqrt(var + eps), float32, same shape."""
        values = np.asarray(values, dtype=np.float64)
        return ((values - self.mean) / np.sqrt(self.var + eps)).astype(np.float32)

    def state_dict(self) -> dict[str, Any]:
        return {"mean": self.mean, "var": self.var, "count": self.count}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.mean = float(state["mean"])
        self.var = float(state["var"])
        self.count = float(state["count"])
