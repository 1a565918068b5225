"""Collate fragments from several workers into one training batch: arrays joined along the env
axis (`actors.fragment.side_by_side`), caption tables merged so caption ids index one shared
tuple, and the policy version behind every column kept for the policy-lag metric."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np

from actors.fragment import Fragment, side_by_side


@dataclass(frozen=True)
class Batch:
    """Fragments side by side: every array is [T, B_total, ...] (obs [T+1, ...])."""

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
    policy_versions: np.ndarray  # [B_total] version of the weights behind each column

    @property
    def num_samples(self) -> int:
        return int(self.actions.size)


def collate(fragments: Sequence[Fragment]) -> Batch:
    if not fragments:
        raise ValueError("collate needs at least one fragment")
    joined = side_by_side(list(fragments))
    arrays = {f.name: getattr(joined, f.name) for f in fields(Batch) if f.name != "policy_versions"}
    versions = [np.full(f.actions.shape[1], f.policy_version, np.int64) for f in fragments]
    return Batch(**arrays, policy_versions=np.concatenate(versions))
