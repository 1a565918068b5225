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


def side_by_side(fragments: list[Fragment]) -> Fragment:
    """Fragments of equal length as one fragment whose envs are all of theirs: [T, B1 + B2 + ...].

    Consecutive unrolls of the same environments fit together this way: each column keeps its
    own initial recurrent state and bootstrap observation, which is all V-trace needs. Caption
    ids are renumbered into the merged caption tuple; the policy version is the oldest.
    """
    first = fragments[0]
    lengths = {f.actions.shape[0] for f in fragments}
    if len(lengths) != 1:
        raise ValueError(f"fragments have different unroll lengths {sorted(lengths)}")
    if len(fragments) == 1:
        return first
    index: dict[str, int] = {}
    caption_ids = []
    for fragment in fragments:
        mapping = [index.setdefault(c, len(index)) for c in fragment.captions] + [-1]
        caption_ids.append(np.array(mapping, np.int32)[fragment.caption_ids])  # -1 picks the -1

    def cat(name: str) -> np.ndarray:
        return np.concatenate([getattr(f, name) for f in fragments], axis=1)

    return Fragment(
        obs={k: np.concatenate([f.obs[k] for f in fragments], axis=1) for k in first.obs},
        actions=cat("actions"),
        logp=cat("logp"),
        values=cat("values"),
        rewards=cat("rewards"),
        terminated=cat("terminated"),
        truncated=cat("truncated"),
        final_values=cat("final_values"),
        caption_ids=np.concatenate(caption_ids, axis=1),
        caption_counts=cat("caption_counts"),
        captions=tuple(index),
        initial_state=np.concatenate([f.initial_state for f in fragments], axis=0),
        policy_version=min(f.policy_version for f in fragments),
        worker_id=first.worker_id,
        episodes=tuple(e for f in fragments for e in f.episodes),
    )
