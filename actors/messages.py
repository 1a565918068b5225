"""Every message that crosses a process boundary, defined once: a rollout worker's `Fragment`
and `EpisodeStats`, the learner's `PolicyWeights`, a worker's caption `Sightings` for the
annotator, and the annotator's `CaptionLabel` / `PairLabel` for the reward model. Plain frozen
numpy/str data, checked when built, so they cross Ray's object store without custom serialisation.
This module imports only numpy: every package may import it (it is the bottom of the layers)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace

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

    obs:            mapping of key -> array shaped [T+1, B, ...]; row T is the observation after
                    the last step, used to bootstrap the value of unfinished episodes. A dict,
                    or a worker's shared-memory slot (actors/observation_slots.py), which its
                    consumer releases when done.
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

    obs: Mapping[str, np.ndarray]
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

    def __post_init__(self) -> None:
        if self.actions.ndim != 2:
            raise ValueError(f"Fragment.actions must be [T, B]; got shape {self.actions.shape}")
        steps, envs = self.actions.shape
        for name in _STEP_ARRAYS:
            shape = getattr(self, name).shape
            if shape != (steps, envs):
                raise ValueError(
                    f"Fragment.{name} is {shape}; actions are [T, B] = {(steps, envs)}"
                )
        for key, value in self.obs.items():
            if value.shape[:2] != (steps + 1, envs):
                raise ValueError(f"Fragment.obs[{key!r}] is {value.shape}; expected [T+1, B, ...]")
        if self.initial_state.shape[:1] != (envs,):
            raise ValueError(
                f"Fragment.initial_state is {self.initial_state.shape}; expected [B, H]"
            )
        if self.caption_ids.size and self.caption_ids.max() >= len(self.captions):
            raise ValueError(
                f"Fragment.caption_ids reach {self.caption_ids.max()}; {len(self.captions)} captions"
            )

    @property
    def num_steps(self) -> int:
        """Environment steps in this fragment (T * B)."""
        return int(self.actions.size)

    @property
    def done(self) -> np.ndarray:
        """[T, B] bool: the episode ended after step t, for whatever reason."""
        return self.terminated | self.truncated


_STEP_ARRAYS = (
    "logp",
    "values",
    "rewards",
    "terminated",
    "truncated",
    "final_values",
    "caption_ids",
    "caption_counts",
)


@dataclass(frozen=True)
class PolicyWeights:
    """The learner's policy weights for the rollout workers.

    state:   parameter and buffer name -> CPU numpy array, shaped as in the policy's state_dict
    version: the learner's update count when the weights were taken (0 before any update); a
             fragment's `policy_version` is the version of the weights that produced it
    """

    state: dict[str, np.ndarray]
    version: int

    def __post_init__(self) -> None:
        if self.version < 0:
            raise ValueError(f"PolicyWeights.version must be >= 0; got {self.version}")
        for name, value in self.state.items():
            if not isinstance(value, np.ndarray):
                raise TypeError(
                    f"PolicyWeights.state[{name!r}] is {type(value).__name__}, not numpy"
                )


@dataclass(frozen=True)
class Sightings(Mapping[str, int]):
    """Captions one fragment showed, each with how many steps showed it (>= 1): what a worker
    tells the annotator. A read-only mapping caption -> count."""

    counts: dict[str, int]

    def __post_init__(self) -> None:
        for caption, count in self.counts.items():
            if not isinstance(caption, str) or int(count) != count or count < 1:
                raise ValueError(f"Sightings need str -> count >= 1; got {caption!r}: {count!r}")

    def __getitem__(self, caption: str) -> int:
        return self.counts[caption]

    def __iter__(self) -> Iterator[str]:
        return iter(self.counts)

    def __len__(self) -> int:
        return len(self.counts)


def _check_probability(owner: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:  # NaN fails too
        raise ValueError(f"{owner}: expected a value in [0, 1], got {value!r}")


@dataclass(frozen=True)
class CaptionLabel:
    """The LLM's judgement of one caption.

    value: 1.0 means "helpful for progress", 0.0 "not helpful"; values in between are soft labels
    (e.g. a calibrated P(yes) from a biased judge). Checked to lie in [0, 1].
    """

    caption: str
    value: float

    def __post_init__(self) -> None:
        _check_probability(f"CaptionLabel({self.caption!r})", self.value)


@dataclass(frozen=True)
class PairLabel:
    """The LLM's preference between two captions.

    preference: probability that `first` shows more progress than `second`: 1.0 first, 0.0 second,
    0.5 a tie (neither, or both equally). Checked to lie in [0, 1].
    """

    first: str
    second: str
    preference: float

    def __post_init__(self) -> None:
        _check_probability(f"PairLabel({self.first!r}, {self.second!r})", self.preference)


def side_by_side(
    fragments: list[Fragment], obs: Mapping[str, np.ndarray] | None = None
) -> Fragment:
    """Fragments of equal length as one fragment whose envs are all of theirs: [T, B1 + B2 + ...].

    Consecutive unrolls of the same environments fit together this way: each column keeps its
    own initial recurrent state and bootstrap observation, which is all V-trace needs. Caption
    ids are renumbered into the merged caption tuple; the policy version is the oldest. `obs`:
    the merged observations {key: [T + 1, B1 + B2 + ...]} when the caller holds them already
    (a rollout worker writes its unrolls side by side into one buffer), else they are joined.
    """
    first = fragments[0]
    lengths = {f.actions.shape[0] for f in fragments}
    if len(lengths) != 1:
        raise ValueError(f"fragments have different unroll lengths {sorted(lengths)}")
    if len(fragments) == 1:
        return first if obs is None else replace(first, obs=obs)
    index: dict[str, int] = {}
    caption_ids = []
    for fragment in fragments:
        mapping = [index.setdefault(c, len(index)) for c in fragment.captions] + [-1]
        caption_ids.append(np.array(mapping, np.int32)[fragment.caption_ids])  # -1 picks the -1

    def cat(name: str) -> np.ndarray:
        return np.concatenate([getattr(f, name) for f in fragments], axis=1)

    if obs is None:
        obs = {k: np.concatenate([f.obs[k] for f in fragments], axis=1) for k in first.obs}

    return Fragment(
        obs=obs,
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
