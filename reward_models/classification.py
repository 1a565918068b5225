"""ONI-Classification (reference section 4.2): a byte-level char-CNN classifier trained online on
the LLM's caption labels; r_int = 1[P(helpful) > threshold], or P(helpful) itself."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from actors.messages import CaptionLabel
from reward_models.base import Label, check_labels, check_option
from reward_models.char_cnn import CharCNN, mlp
from reward_models.learned import LearnedRewardModel


class CaptionClassifier(nn.Module):
    """Bytes [B, 256] -> logits [B, 2] (index 1: helpful): CharCNN, then an MLP with dropout."""

    def __init__(
        self,
        *,
        embed_dim: int,
        channels: int,
        text_dim: int,
        mlp_sizes: Sequence[int],
        dropout: float,
    ) -> None:
        super().__init__()
        self.encoder = CharCNN(embed_dim=embed_dim, channels=channels, out_dim=text_dim)
        self.head = mlp(text_dim, mlp_sizes, 2, dropout=dropout)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(tokens))


class ClassificationRewardModel(LearnedRewardModel):
    """ONI-Classification. Defaults are ONI's (network sizes, lr, batch, 32 steps, 25k switch).

    Dataset: the distinct labelled captions with their latest (soft) label; relabelling a caption
    replaces its value (ONI kept the first). Loss: cross entropy against soft targets [1 - y, y].
    Accuracy counts captions whose label is not exactly 0.5.
    """

    label_kind: ClassVar[str] = "caption"

    def __init__(
        self,
        *,
        lr: float = 1e-4,
        batch_size: int = 256,
        steps_per_label_batch: int = 32,
        label_batch_size: int = 100,
        switch_dataset_size: int = 25_000,
        threshold: float = 0.5,
        binary: bool = True,
        embed_dim: int = 32,
        channels: int = 64,
        text_dim: int = 128,
        mlp_sizes: Sequence[int] = (512, 512),
        dropout: float = 0.1,
        device: str = "cpu",
        seed: int = 0,
    ) -> None:
        check_option("threshold", 0.0 <= threshold <= 1.0, threshold, "a float in [0, 1]")
        check_option("dropout", 0.0 <= dropout < 1.0, dropout, "a float in [0, 1)")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = CaptionClassifier(
                embed_dim=embed_dim,
                channels=channels,
                text_dim=text_dim,
                mlp_sizes=tuple(mlp_sizes),
                dropout=dropout,
            )
        super().__init__(
            net=net,
            lr=lr,
            batch_size=batch_size,
            steps_per_label_batch=steps_per_label_batch,
            label_batch_size=label_batch_size,
            switch_dataset_size=switch_dataset_size,
            max_grad_norm=None,
            device=device,
            seed=seed,
        )
        self.threshold = threshold
        self.binary = binary
        self.captions: list[str] = []
        self.values: list[float] = []
        self.index: dict[str, int] = {}

    @property
    def dataset_size(self) -> int:
        return len(self.captions)

    def _store(self, labels: Sequence[Label]) -> None:
        check_labels(labels, CaptionLabel, type(self).__name__)
        for label in labels:
            row = self.index.get(label.caption)
            if row is None:
                self.index[label.caption] = len(self.captions)
                self.captions.append(label.caption)
                self.values.append(float(label.value))
            else:
                self.values[row] = float(label.value)

    def _batch_loss(self, indices: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        rows = indices.tolist()
        logits = self.net(self.tokens([self.captions[i] for i in rows]))  # [B, 2]
        y = torch.tensor([self.values[i] for i in rows], device=self.device)  # [B]
        loss = F.cross_entropy(logits, torch.stack([1.0 - y, y], dim=1))
        decided = y != 0.5
        hits = (logits[:, 1] > logits[:, 0]) == (y > 0.5)
        return loss, int((hits & decided).sum()), int(decided.sum())

    def probabilities(self, captions: Sequence[str]) -> torch.Tensor:
        """P(helpful) for each caption: float [N] (the trained net's output, labels or not)."""
        return torch.softmax(self.outputs(captions), dim=1)[:, 1]

    def _outputs_to_rewards(self, outputs: torch.Tensor) -> torch.Tensor:
        p_helpful = torch.softmax(outputs, dim=1)[:, 1]
        return (p_helpful > self.threshold).float() if self.binary else p_helpful

    def _dataset_state(self) -> dict[str, Any]:
        return {"captions": list(self.captions), "values": list(self.values)}

    def _load_dataset_state(self, state: dict[str, Any]) -> None:
        self.captions = list(state["captions"])
        self.values = [float(v) for v in state["values"]]
        self.index = {caption: row for row, caption in enumerate(self.captions)}
