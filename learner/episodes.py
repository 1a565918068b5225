"""Intrinsic return per episode, as trained on: the learner computes r_int at train time, so it
sums each episode's intrinsic rewards across the fragments (of one worker, in order) it spans."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from actors.messages import Fragment


class IntrinsicReturns:
    """Running intrinsic sums per (worker, env); `add` returns the totals of finished episodes.

    A fragment lost with a dead worker leaves one episode short of some steps: a metric, so an
    approximation there is acceptable.
    """

    def __init__(self) -> None:
        self._sums: dict[tuple[int, int], float] = {}

    def add(self, fragments: Sequence[Fragment], intrinsic: np.ndarray) -> list[float]:
        """intrinsic: [T, B_total] for the fragments side by side, as collated."""
        finished: list[float] = []
        column = 0
        for fragment in fragments:
            done = fragment.done
            for env in range(done.shape[1]):
                key = (fragment.worker_id, env)
                rewards = intrinsic[:, column + env]
                total, start = self._sums.get(key, 0.0), 0
                for t in np.flatnonzero(done[:, env]):
                    finished.append(total + float(rewards[start : t + 1].sum()))
                    total, start = 0.0, t + 1
                self._sums[key] = total + float(rewards[start:].sum())
            column += done.shape[1]
        return finished

    def state_dict(self) -> dict:
        return {"sums": dict(self._sums)}

    def load_state_dict(self, state: dict) -> None:
        self._sums = dict(state["sums"])
