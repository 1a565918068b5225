"""Test double: an Embedder whose vectors are given by the test (text -> unit vector), and which
records what it was asked to embed. Named as a double; product code never uses it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from reward_models.embedding import Embedder


class FixedEmbedderDouble(Embedder):
    """`vectors` maps each text to a vector (normalised here); an unknown text is an error."""

    name = "fixed-double"

    def __init__(self, vectors: Mapping[str, Sequence[float]]):
        self.vectors = {
            text: np.asarray(v, np.float64) / np.linalg.norm(v) for text, v in vectors.items()
        }
        self.dim = len(next(iter(self.vectors.values())))
        self.asked: list[list[str]] = []

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.asked.append(list(texts))
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        return np.stack([self.vectors[t] for t in texts]).astype(np.float32)
