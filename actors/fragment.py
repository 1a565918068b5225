"""The messages a rollout worker produces: a fixed-length `Fragment` of experience and the
`EpisodeStats` of episodes that finished inside it. Both are plain numpy/str data, so they cross
process boundaries (Ray's object store) without custom serialisation."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class EpisodeStats:
    """One finished episode, as the console, TensorBoard and benchmarks see it."""

    return_extrinsic: float
    length: int
    success: bool | None = None  # None where the task has no notion of success
    max_depth: int | None = None  # deepest dungeon level reached (NetHack only)
    truncated: bool = False


@dataclass(frozen=True)
class Fragment:
    """`T` steps of `B` environments, time-major.

    obs:            dict of arrays shaped [T+1, B, ...]; row T is the observation after the last
                    step, used to bootstrap the value of unfinished episodes.
    actions:        [T, B] int64
    logp:           [T, B] float32, log-probability of the action under the behaviour policy
    values:         [T, B] float32, the behaviour policy's value estimate of obs[t]
    rewards:        [T, B] float32, raw extrinsic reward of step t
    terminated:     [T, B] bool, the episode ended by the environment's own rules after step t
    truncated:      [T, B] bool, the episode was cut (time limit) after step t
    final_values:   [T, B] float32, on truncated steps the behaviour value of the cut-off final
                    observation (to bootstrap through the time limit), else 0
    caption_ids:    [T, B] int32, index into `captions` of the caption of the step's outcome
                    (-1 where the env emits no captions)
    caption_counts: [T, B] int32, how often that caption has been seen in the current episode,
                    this step included (1 on first sight)
    captions:       the distinct caption strings of this fragment
    initial_state:  [B, H] float32 recurrent state before step 0 (H=0 for feed-forward policies)
    policy_version: learner update count of the weights that produced the actions
    """

    obs: dict[str, np.ndarray]
    actions: np.ndarray
    logp: np.ndarray
    values: np.ndarray
    rewards: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    final_values: np.ndarray
    caption_ids: np.ndarray
    caption_counts: np.ndarray
    captions: tuple[str, ...]
    initial_state: np.ndarray
    policy_version: int
    worker_id: int = 0
    episodes: tuple[EpisodeStats, ...] = field(default_factory=tuple)

    @property
    def num_steps(self) -> int:
        """Environment steps in this fragment (T * B)."""
        return int(self.actions.size)

    @property
    def done(self) -> np.ndarray:
        """[T, B] bool: the episode ended after step t, for whatever reason."""
        return self.terminated | self.truncated
