"""The byte-level char-CNN text encoder shared by the classification and ranking reward models
(ONI's `lt_cnn`, reference section 4.2), and the MLP builder for the heads on top of it."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from reward_models.text_encoder import CAPTION_LENGTH


def _pooled_length(length: int) -> int:
    """Positions left after the conv/pool stack for an input of `length` bytes."""
    length = (length - 6) // 3  # conv k7, max-pool 3
    length = (length - 6) // 3  # conv k7, max-pool 3
    return (length - 8) // 3  # four conv k3, max-pool 3


class CharCNN(nn.Module):
    """Bytes [B, L] int64 -> text features [B, out_dim] (after ReLU).

    ONI's sizes (the defaults): embedding 256 -> 32 (byte 0 is padding); conv 32 -> 64 k7, ReLU,
    max-pool 3; conv 64 -> 64 k7, ReLU, max-pool 3; four conv 64 -> 64 k3 with ReLU; max-pool 3;
    flatten 5 x 64 = 320; linear -> 128, ReLU. `embed_dim`, `channels` and `out_dim` shrink it.
    """

    def __init__(
        self,
        *,
        length: int = CAPTION_LENGTH,
        embed_dim: int = 32,
        channels: int = 64,
        out_dim: int = 128,
    ) -> None:
        super().__init__()
        positions = _pooled_length(length)
        if positions < 1:
            raise ValueError(f"caption length {length} is too short for the conv stack")
        self.embedding = nn.Embedding(256, embed_dim, padding_idx=0)
        layers: list[nn.Module] = [
            nn.Conv1d(embed_dim, channels, 7),
            nn.ReLU(),
            nn.MaxPool1d(3),
            nn.Conv1d(channels, channels, 7),
            nn.ReLU(),
            nn.MaxPool1d(3),
        ]
        for _ in range(4):
            layers += [nn.Conv1d(channels, channels, 3), nn.ReLU()]
        layers.append(nn.MaxPool1d(3))
        self.convs = nn.Sequential(*layers)
        self.fc = nn.Sequential(nn.Linear(positions * channels, out_dim), nn.ReLU())
        self.out_dim = out_dim

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens: int64 [B, L] -> float [B, out_dim]."""
        x = self.embedding(tokens).transpose(1, 2)  # [B, embed_dim, L]
        return self.fc(self.convs(x).flatten(1))


def mlp(
    in_dim: int, sizes: Sequence[int], out_dim: int, dropout: float | None = None
) -> nn.Sequential:
    """Linear layers in_dim -> sizes... -> out_dim with ReLU (and dropout) between them.

    Any `dropout` value, 0.0 included, adds Dropout layers, so the parameter names (and hence
    checkpoints) do not depend on the rate.
    """
    layers: list[nn.Module] = []
    for size in sizes:
        layers += [nn.Linear(in_dim, size), nn.ReLU()]
        if dropout is not None:
            layers.append(nn.Dropout(dropout))
        in_dim = size
    layers.append(nn.Linear(in_dim, out_dim))
    return nn.Sequential(*layers)
