"""The byte-level char-CNN text encoder shared by the classification and ranking reward models
(ONI's `lt_cnn`, reference section 4.2), and the MLP builder for the heads on top of it."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from reward_models.text_encoder import CAPTION_LENGTH

BATCH_ROWS = 64
"""The conv stack runs on batches padded up to a multiple of this many rows. PyTorch's CPU
convolutions (oneDNN, through ideep) cache a kernel per input shape, up to 1,024 in each of two
LRU caches, and the learner scores a different number of distinct captions in every batch:
unpadded, its heap grew by up to 36 MB (ONI's sizes) until those caches were full. Padded, a
forward pass of up to INFERENCE_CHUNK (1,024) captions has one of 16 shapes."""


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
        """tokens: int64 [B, L] -> float [B, out_dim]. Rows are independent: the padding rows
        (all byte 0, see BATCH_ROWS) change no output and get no gradient."""
        rows = tokens.shape[0]
        padding = -rows % BATCH_ROWS
        if padding:
            tokens = torch.cat([tokens, tokens.new_zeros(padding, tokens.shape[1])])
        x = self.embedding(tokens).transpose(1, 2)  # [B + padding, embed_dim, L]
        return self.fc(self.convs(x)[:rows].flatten(1))


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
