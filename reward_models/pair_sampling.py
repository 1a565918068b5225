"""Choosing which caption pairs to ask the LLM about for ONI-Ranking: uniform over distinct
unordered pairs of distinct captions, skipping pairs already labelled."""

from __future__ import annotations

from collections.abc import Collection, Sequence

import numpy as np

PairKey = tuple[str, str]


def pair_key(first: str, second: str) -> PairKey:
    """The order-free identity of a pair: its two captions sorted."""
    return (first, second) if first <= second else (second, first)


def sample_pairs(
    captions: Sequence[str],
    n: int,
    rng: np.random.Generator,
    exclude: Collection[PairKey] = frozenset(),
) -> list[tuple[str, str]]:
    """Up to `n` distinct pairs drawn uniformly without replacement.

    Duplicates in `captions` are dropped first, so every unordered pair of two different captions
    is equally likely whatever the captions' frequencies (ONI drew indices from its observation
    list, which favours frequent captions and re-asks labelled pairs). Pairs whose `pair_key` is in
    `exclude` are skipped. Each pair's order is random, so neither position is favoured. Returns
    fewer than `n` pairs only when fewer are eligible.
    """
    pool = list(dict.fromkeys(captions))
    m = len(pool)
    total = m * (m - 1) // 2
    if n <= 0 or total == 0:
        return []
    if total <= 4 * (len(exclude) + n) + 10_000:
        chosen = _enumerated(pool, n, rng, exclude)
    else:
        # Eligible pairs are then more than 3/4 of all pairs, so rejection takes < 4/3 draws each.
        chosen = _rejected(pool, n, rng, exclude)
    flips = rng.random(len(chosen)) < 0.5
    return [(b, a) if flip else (a, b) for (a, b), flip in zip(chosen, flips, strict=True)]


def _enumerated(
    pool: list[str], n: int, rng: np.random.Generator, exclude: Collection[PairKey]
) -> list[PairKey]:
    eligible = [
        key
        for i, a in enumerate(pool)
        for b in pool[i + 1 :]
        if (key := pair_key(a, b)) not in exclude
    ]
    picks = rng.choice(len(eligible), size=min(n, len(eligible)), replace=False)
    return [eligible[i] for i in picks]


def _rejected(
    pool: list[str], n: int, rng: np.random.Generator, exclude: Collection[PairKey]
) -> list[PairKey]:
    chosen: dict[PairKey, None] = {}
    while len(chosen) < n:
        i, j = rng.integers(len(pool), size=2)
        if i == j:
            continue
        key = pair_key(pool[i], pool[j])
        if key not in exclude:
            chosen[key] = None
    return list(chosen)
