"""Test double: an Embedder whose vectors are given by the test (text -> unit vector), and which
records what it was asked to embed. Named as a double; product code never uses it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from reward_models.embedding import Embedder


class FixedEmbedderDouble(Embedder):
    """`vectors` maps each text to a vector (normalised here); an unknown text gets `default`,
    or is an error (KeyError) when no default is given."""

    name = "fixed-double"

    def __init__(
        self, vectors: Mapping[str, Sequence[float]], default: Sequence[float] | None = None
    ):
        self.vectors = {
            text: np.asarray(v, np.float64) / np.linalg.norm(v) for text, v in vectors.items()
        }
        self.dim = len(next(iter(self.vectors.values())))
        self.default = None if default is None else np.asarray(default, np.float64)
        self.asked: list[list[str]] = []

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.asked.append(list(texts))
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        rows = [
            self.vectors[t] if self.default is None else self.vectors.get(t, self.default)
            for t in texts
        ]
        return np.stack(rows).astype(np.float32)
