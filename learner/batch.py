"""Collate fragments from several workers into one training batch: arrays joined along the env
axis (`actors.messages.side_by_side`), caption tables merged so caption ids index one shared
tuple, and the policy version behind every column kept for the policy-lag metric."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields

import numpy as np

from actors.messages import Fragment, side_by_side


@dataclass(frozen=True)
class Batch(Fragment):
    """Fragments side by side: a `Fragment` whose every array is [T, B_total, ...] (obs [T+1, ...]),
    plus the version of the weights behind each column (`policy_version` is the oldest)."""

    policy_versions: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # [B_total]

    @property
    def num_samples(self) -> int:
        return self.num_steps


def collate(fragments: Sequence[Fragment]) -> Batch:
    if not fragments:
        raise ValueError("collate needs at least one fragment")
    joined = side_by_side(list(fragments))
    arrays = {f.name: getattr(joined, f.name) for f in fields(Fragment)}
    versions = [np.full(f.actions.shape[1], f.policy_version, np.int64) for f in fragments]
    return Batch(**arrays, policy_versions=np.concatenate(versions))
