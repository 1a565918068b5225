"""ONI-Ranking (reference section 4.3): Motif's Bradley-Terry reward model r(caption), trained
online on the LLM's pairwise preferences, with the normalisation ONI intended (and its bug)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from actors.messages import PairLabel
from reward_models.base import Label, RewardModel, check_labels, check_option
from reward_models.char_cnn import CharCNN, mlp
from reward_models.learned import LearnedRewardModel
from reward_models.normalization import RunningMeanStd
from reward_models.pair_sampling import PairKey, pair_key


class ScalarRewardNet(nn.Module):
    """Bytes [B, 256] -> reward [B]: CharCNN, Motif's FC 128 -> 256 -> 512, then a linear head."""

    def __init__(
        self, *, embed_dim: int, channels: int, text_dim: int, head_sizes: Sequence[int]
    ) -> None:
        super().__init__()
        self.encoder = CharCNN(embed_dim=embed_dim, channels=channels, out_dim=text_dim)
        self.head = mlp(text_dim, head_sizes, 1)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(tokens)).squeeze(-1)


class RankingRewardModel(LearnedRewardModel):
    """ONI-Ranking. Defaults are ONI's (sizes, lr 1e-4, batch 256 pairs, clip 10, 32 steps, 25k).

    Loss: (r(first), r(second)) are 2-way logits, trained by cross entropy against
    [preference, 1 - preference] (Bradley-Terry; a tie is 0.5). Dataset: distinct unordered pairs
    of different captions with their latest preference; pairs of identical captions carry no
    information and are dropped. Accuracy counts non-tie pairs.

    Rewards, `normalize=True` (what ONI meant): each `rewards` call merges the batch's raw rewards,
    one per caption occurrence (each caption `occurrences[i]` times when given, else once per
    element of `captions`), into a running mean/std, returns (r - mu) / sigma, and zeroes
    values <= `threshold` (None keeps all). `read_rewards` applies the current statistics
    without merging anything (for display). `normalize=False` is ONI as released: raw r, no
    threshold. Before the first gradient step rewards are 0 and the statistics are left alone.
    """

    label_kind: ClassVar[str] = "pair"

    def __init__(
        self,
        *,
        lr: float = 1e-4,
        batch_size: int = 256,
        steps_per_label_batch: int = 32,
        label_batch_size: int = 100,
        switch_dataset_size: int = 25_000,
        max_grad_norm: float | None = 10.0,
        normalize: bool = True,
        threshold: float | None = -0.5,
        embed_dim: int = 32,
        channels: int = 64,
        text_dim: int = 128,
        head_sizes: Sequence[int] = (256, 512),
        device: str = "cpu",
        seed: int = 0,
    ) -> None:
        check_option("threshold", threshold is None or np.isfinite(threshold), threshold, "finite")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = ScalarRewardNet(
                embed_dim=embed_dim, channels=channels, text_dim=text_dim, head_sizes=head_sizes
            )
        super().__init__(
            net=net,
            lr=lr,
            batch_size=batch_size,
            steps_per_label_batch=steps_per_label_batch,
            label_batch_size=label_batch_size,
            switch_dataset_size=switch_dataset_size,
            max_grad_norm=max_grad_norm,
            device=device,
            seed=seed,
        )
        self.normalize = normalize
        self.threshold = threshold
        self.normalizer = RunningMeanStd()
        self.pairs: list[PairKey] = []
        self.preferences: list[float] = []  # P(pairs[i][0] preferred over pairs[i][1])
        self.index: dict[PairKey, int] = {}

    @property
    def dataset_size(self) -> int:
        return len(self.pairs)

    def raw_rewards(self, captions: Sequence[str]) -> np.ndarray:
        """The network's r(caption), float32 [N]; leaves the normalisation statistics alone."""
        return RewardModel.rewards(self, captions)

    def rewards(self, captions: Sequence[str], occurrences: np.ndarray | None = None) -> np.ndarray:
        raw = self.raw_rewards(captions)
        if not self.normalize or self.gradient_steps == 0 or raw.size == 0:
            return raw
        self.normalizer.update(raw if occurrences is None else np.repeat(raw, occurrences))
        return self._normalized(raw)

    def read_rewards(self, captions: Sequence[str]) -> np.ndarray:
        raw = self.raw_rewards(captions)
        if not self.normalize or self.gradient_steps == 0 or raw.size == 0:
            return raw
        return self._normalized(raw)

    def _normalized(self, raw: np.ndarray) -> np.ndarray:
        """(raw - mu) / sigma with the current statistics, values <= threshold zeroed."""
        normalized = self.normalizer.normalize(raw)
        if self.threshold is not None:
            normalized[normalized <= self.threshold] = 0.0
        return normalized

    def _store(self, labels: Sequence[Label]) -> None:
        check_labels(labels, PairLabel, type(self).__name__)
        for label in labels:
            if label.first == label.second:
                continue
            key = pair_key(label.first, label.second)
            preference = label.preference if key[0] == label.first else 1.0 - label.preference
            row = self.index.get(key)
            if row is None:
                self.index[key] = len(self.pairs)
                self.pairs.append(key)
                self.preferences.append(float(preference))
            else:
                self.preferences[row] = float(preference)

    def _batch_loss(self, indices: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        rows = indices.tolist()
        firsts = [self.pairs[i][0] for i in rows]
        seconds = [self.pairs[i][1] for i in rows]
        rewards = self.net(self.tokens(firsts + seconds))  # [2B]: one forward for both sides
        logits = torch.stack([rewards[: len(rows)], rewards[len(rows) :]], dim=1)  # [B, 2]
        p = torch.tensor([self.preferences[i] for i in rows], device=self.device)  # [B]
        loss = F.cross_entropy(logits, torch.stack([p, 1.0 - p], dim=1))
        decided = p != 0.5
        hits = (logits[:, 0] > logits[:, 1]) == (p > 0.5)
        return loss, int((hits & decided).sum()), int(decided.sum())

    def _outputs_to_rewards(self, outputs: torch.Tensor) -> torch.Tensor:
        return outputs

    def _dataset_state(self) -> dict[str, Any]:
        return {
            "pairs": list(self.pairs),
            "preferences": list(self.preferences),
        }

    def _load_dataset_state(self, state: dict[str, Any]) -> None:
        self.pairs = [tuple(pair) for pair in state["pairs"]]
        self.preferences = [float(p) for p in state["preferences"]]
        self.index = {pair: row for row, pair in enumerate(self.pairs)}

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "normalizer": self.normalizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.normalizer.load_state_dict(state["normalizer"])
