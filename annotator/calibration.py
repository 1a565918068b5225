"""Calibration of soft judgements from biased judges: a small model that says "no" to nearly
everything still ranks captions, so "helpful" can mean "P(yes) in the top (1 - q) of recent
captions' P(yes)" instead of "P(yes) > 0.5"."""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

import numpy as np

CALIBRATIONS = ("none", "quantile")


class Calibrator:
    """Maps a batch of raw values (P(yes), or parsed 0/1 answers) to labels.

    "none": the raw value is the label (soft). "quantile": 1.0 when the value is above
    the `quantile` of the last `window` raw values (this batch included), else 0.0.
    """

    def __init__(self, mode: str = "none", quantile: float = 0.8, window: int = 2000):
        if mode not in CALIBRATIONS:
            raise ValueError(f"calibration must be one of {', '.join(CALIBRATIONS)}; got {mode!r}")
        if not 0.0 < quantile < 1.0:
            raise ValueError(f"calibration quantile must be in (0, 1), got {quantile}")
        self.mode = mode
        self.quantile = quantile
        self.recent: deque[float] = deque(maxlen=window)

    def __call__(self, values: Sequence[float]) -> list[float]:
        if self.mode == "none" or not values:
            return [float(v) for v in values]
        self.recent.extend(float(v) for v in values)
        cut = float(np.quantile(np.fromiter(self.recent, float), self.quantile))
        return [1.0 if v > cut else 0.0 for v in values]  # ties (e.g. all 0) stay 0

    def state_dict(self) -> dict:
        return {"recent": list(self.recent)}

    def load_state_dict(self, state: dict) -> None:
        self.recent.clear()
        self.recent.extend(state["recent"])
