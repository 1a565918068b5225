"""Collate fragments from several workers into one training batch: arrays joined along the env
axis, caption tables merged so caption ids index one shared tuple."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from actors.fragment import Fragment


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
    lengths = {f.actions.shape[0] for f in fragments}
    if len(lengths) != 1:
        raise ValueError(f"fragments have different unroll lengths {sorted(lengths)}")
    captions: dict[str, int] = {}
    caption_ids = []
    for f in fragments:
        remap = np.array(
            [captions.setdefault(c, len(captions)) for c in f.captions] + [-1], np.int32
        )
        caption_ids.append(remap[f.caption_ids])  # id -1 picks the trailing -1
    join = lambda name: np.concatenate([getattr(f, name) for f in fragments], axis=1)  # noqa: E731
    return Batch(
        obs={k: np.concatenate([f.obs[k] for f in fragments], axis=1) for k in fragments[0].obs},
        actions=join("actions"),
        logp=join("logp"),
        values=join("values"),
        rewards=join("rewards"),
        terminated=join("terminated"),
        truncated=join("truncated"),
        final_values=join("final_values"),
        caption_ids=np.concatenate(caption_ids, axis=1),
        caption_counts=join("caption_counts"),
        captions=tuple(captions),
        initial_state=np.concatenate([f.initial_state for f in fragments], axis=0),
        policy_versions=np.concatenate(
            [np.full(f.actions.shape[1], f.policy_version, np.int64) for f in fragments]
        ),
    )
