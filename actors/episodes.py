"""A rollout worker's per-episode bookkeeping, done once per sample from rows kept per step:
episode returns, lengths and depths, and each step's caption id with how often the step's
episode has shown that caption. Kept out of the per-step loop, where every extra call runs
with NetHack's code in the core's caches and costs several times what it costs in a loop."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from operator import methodcaller
from types import MappingProxyType

import numpy as np

from actors.messages import EpisodeStats

# A step's captions and depths are read with map() over these: a comprehension per step costs a
# Python frame, which between two NetHack steps took 1.1 us per env step of the worker's time.
_CAPTION, _DEPTH = methodcaller("get", "caption"), methodcaller("get", "depth", 0)
_NO_ENDS: Mapping[int, bool] = MappingProxyType({})  # the success flags of a step ending nothing


@dataclass(frozen=True)
class UnrollTally:
    """What `EpisodeTally.end_unroll` found in one unroll of T steps of B envs.

    rewards:        [T, B] float32, each step's reward
    finished:       the episodes that ended, in step order (and env order within a step)
    caption_ids:    [T, B] int32, index into `captions` of each step's caption (-1: none)
    caption_counts: [T, B] int32, how often the step's episode has shown that caption, this
                    step included (0 where there is no caption)
    captions:       the distinct captions, in order of first sight (row by row)
    """

    rewards: np.ndarray
    finished: list[EpisodeStats]
    caption_ids: np.ndarray
    caption_counts: np.ndarray
    captions: tuple[str, ...]


class EpisodeTally:
    """Running totals of the episode each of `num_envs` environments is in, carried from one
    unroll to the next. `normalize`, if given, maps each caption to its key (e.g.
    `normalize_caption`).

    Per step, `add_step` keeps only what the books need (rewards, captions, depths, success
    flags) and lets go of the info dicts: a dict per env step kept to the end of an unroll
    survives the garbage collector's young generations and brings on full collections, which
    cost a worker process holding Ray and torch a tenth of a second each."""

    def __init__(self, num_envs: int, normalize: Callable[[str], str] | None = None) -> None:
        self.normalize = normalize
        self.returns = [0.0] * num_envs
        self.lengths = [0] * num_envs
        self.max_depth = [0] * num_envs
        self.caption_counts: list[dict[str, int]] = [{} for _ in range(num_envs)]
        self._rows: list[tuple] = []  # per step since the last end_unroll

    def add_step(
        self, rewards: tuple[float, ...], infos: tuple[dict, ...], ended: bool = True
    ) -> None:
        """One step of every env, `rewards` and `infos` [B] as the envs returned them. `ended`:
        whether any env's episode ended on this step; success flags are read only then (the
        books use them for finished episodes alone)."""
        successes = _NO_ENDS
        if ended:
            successes = {i: info["success"] for i, info in enumerate(infos) if "success" in info}
        self._rows.append(
            (rewards, list(map(_CAPTION, infos)), list(map(_DEPTH, infos)), successes)
        )

    def end_unroll(self, done: np.ndarray, truncated: np.ndarray) -> UnrollTally:
        """Account for the T steps added since the last call (a rollout worker calls it once
        per sample, its unrolls' steps in time order): `done` [T, B] whether the episode ended
        after the step, `truncated` [T, B] whether it was cut by the time limit. An env's next
        step after an end begins a new episode."""
        rewards, captions, depths, successes = zip(*self._rows, strict=True)
        self._rows = []
        if self.normalize is not None:
            captions = [[c if c is None else self.normalize(c) for c in row] for row in captions]
        index: dict[str, int] = {}
        ids = [
            [-1 if c is None else index.setdefault(c, len(index)) for c in row] for row in captions
        ]
        counts = self._count_captions(captions, done.tolist())

        reward_columns = [[float(r) for r in column] for column in zip(*rewards, strict=True)]
        depth_columns = [[int(d) for d in column] for column in zip(*depths, strict=True)]
        start = [0] * len(self.returns)  # first row of each env's current episode
        finished = []
        for t, i in zip(*np.nonzero(done), strict=True):
            t, i = int(t), int(i)
            self._add(i, reward_columns[i][start[i] : t + 1], depth_columns[i][start[i] : t + 1])
            success = successes[t].get(i)
            finished.append(
                EpisodeStats(
                    return_extrinsic=self.returns[i],
                    length=self.lengths[i],
                    success=None if success is None else bool(success),
                    max_depth=self.max_depth[i] or None,
                    truncated=bool(truncated[t, i]),
                )
            )
            self.returns[i], self.lengths[i], self.max_depth[i] = 0.0, 0, 0
            start[i] = t + 1
        for i, first in enumerate(start):
            self._add(i, reward_columns[i][first:], depth_columns[i][first:])
        return UnrollTally(
            rewards=np.array(rewards, np.float32),
            finished=finished,
            caption_ids=np.array(ids, np.int32).reshape(done.shape),
            caption_counts=np.array(counts, np.int32).reshape(done.shape),
            captions=tuple(index),
        )

    def _add(self, i: int, rewards: list[float], depths: list[int]) -> None:
        """Add consecutive steps of env `i`'s current episode to its totals."""
        total = self.returns[i]
        for reward in rewards:  # one addition at a time (sum() compensates from Python 3.12)
            total += reward
        self.returns[i] = total
        self.lengths[i] += len(rewards)
        self.max_depth[i] = max(self.max_depth[i], max(depths, default=0))

    def _count_captions(
        self, captions: list[list[str | None]], done: list[list[bool]]
    ) -> list[list[int]]:
        """[T][B] per-episode sighting counts of each step's caption; an env's counts start
        again after each end of its episodes."""
        counts = [[0] * len(row) for row in captions]
        for i, seen in enumerate(self.caption_counts):
            for t, row in enumerate(captions):
                caption = row[i]
                if caption is not None:
                    counts[t][i] = seen[caption] = seen.get(caption, 0) + 1
                if done[t][i]:
                    seen = {}
            self.caption_counts[i] = seen
        return counts
