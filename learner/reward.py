"""The training reward, computed by the learner from a batch at train time (so old fragments are
relabelled with the current reward model):
    r = c_ext * clip(s * r_ext, -clip, clip) + c_int * r_int(caption) * N_ep(caption)^-beta
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from reward_models.counts import count_scaling

IntrinsicFn = Callable[[Sequence[str], np.ndarray], np.ndarray]
"""(distinct captions [N], their occurrences in the batch int64 [N]) -> intrinsic reward float32
[N]: a reward model's `rewards`, whose running statistics count each occurrence."""


@dataclass(frozen=True)
class TrainingReward:
    """Both terms of the training reward, [T, B] float32 each."""

    extrinsic: np.ndarray
    intrinsic: np.ndarray

    @property
    def total(self) -> np.ndarray:
        return self.extrinsic + self.intrinsic


def training_reward(
    *,
    rewards: np.ndarray,
    caption_ids: np.ndarray,
    caption_counts: np.ndarray,
    captions: Sequence[str],
    extrinsic_coef: float,
    reward_scale: float,
    reward_clip: float,
    intrinsic_coef: float = 0.0,
    count_exponent: float = 3.0,
    intrinsic_fn: IntrinsicFn | None = None,
) -> TrainingReward:
    """rewards, caption_ids (-1 = no caption), caption_counts: [T, B]; captions indexes ids."""
    extrinsic = extrinsic_coef * np.clip(reward_scale * rewards, -reward_clip, reward_clip)
    intrinsic = np.zeros_like(extrinsic)
    if intrinsic_coef != 0.0 and intrinsic_fn is not None and len(captions):
        has_caption = caption_ids >= 0
        occurrences = np.bincount(caption_ids[has_caption], minlength=len(captions))
        per_caption = np.asarray(intrinsic_fn(captions, occurrences), np.float32)
        ids = np.where(has_caption, caption_ids, 0)
        scaling = count_scaling(np.maximum(caption_counts, 1), count_exponent)
        scaled = per_caption[ids] * scaling
        intrinsic = np.where(has_caption, intrinsic_coef * scaled, 0.0)
    return TrainingReward(extrinsic.astype(np.float32), intrinsic.astype(np.float32))


def episode_intrinsic(
    *,
    captions: Sequence[str | None],
    rewards: Sequence[float],
    reward_config,
    read_rewards: Callable[[Sequence[str]], np.ndarray],
) -> np.ndarray:
    """The intrinsic term of `training_reward` for each step of one episode, float32 [T]:
    c_int * r_int(caption) * N_ep(caption)^-beta, where N_ep counts the caption's sightings so far
    in this episode and a step without a caption (None) gets 0. `reward_config` is the run
    config's `reward` section; `read_rewards` a reward model's side-effect-free `read_rewards`
    (evaluating moves no running statistics). What evaluation and replay show is what training
    would give."""
    index: dict[str, int] = {}
    seen: dict[str, int] = {}
    ids, counts = [], []
    for caption in captions:
        if caption is None:
            ids.append(-1)
            counts.append(0)
            continue
        seen[caption] = seen.get(caption, 0) + 1
        ids.append(index.setdefault(caption, len(index)))
        counts.append(seen[caption])
    cfg = reward_config
    reward = training_reward(
        rewards=np.asarray(rewards, np.float32)[:, None],
        caption_ids=np.asarray(ids, np.int32)[:, None],
        caption_counts=np.asarray(counts, np.int32)[:, None],
        captions=list(index),
        extrinsic_coef=cfg.extrinsic_coef,
        reward_scale=cfg.reward_scale,
        reward_clip=cfg.reward_clip,
        intrinsic_coef=cfg.intrinsic_coef,
        count_exponent=cfg.count_exponent,
        intrinsic_fn=lambda distinct, _occurrences: read_rewards(distinct),
    )
    return reward.intrinsic[:, 0]
