"""Synthetic captions for learning tests: one keyword that decides the label or score, placed
among random filler words, so held-out captions are new combinations of the same words."""

from __future__ import annotations

import numpy as np

FILLER = (
    "the a you see here it is dark small large old new red blue green feel something strange"
).split()


def keyword_caption(rng: np.random.Generator, keyword: str) -> str:
    """2-6 filler words with `keyword` inserted at a random position, ending in a full stop."""
    words = list(rng.choice(FILLER, size=rng.integers(2, 7)))
    words.insert(int(rng.integers(0, len(words) + 1)), keyword)
    return " ".join(words) + "."


def keyword_captions(
    rng: np.random.Generator, keywords: list[str], n: int, exclude: dict[str, int] | None = None
) -> dict[str, int]:
    """n distinct captions not in `exclude` -> index of their keyword in `keywords`."""
    out: dict[str, int] = {}
    while len(out) < n:
        index = int(rng.integers(len(keywords)))
        caption = keyword_caption(rng, keywords[index])
        if exclude is None or caption not in exclude:
            out[caption] = index
    return out
