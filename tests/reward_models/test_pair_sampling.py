"""sample_pairs: distinct, order-free, uniform, excluding given pairs, in both of its regimes."""

from __future__ import annotations

from collections import Counter

import numpy as np

from reward_models import pair_key, sample_pairs


def test_small_pool_uniform_and_exhaustive():
    pool = ["a", "b", "c", "d", "e", "a", "a"]  # duplicates must not make "a" more likely
    exclude = {pair_key("a", "b"), pair_key("d", "c")}
    rng = np.random.default_rng(0)
    draws = Counter(pair_key(*sample_pairs(pool, 1, rng, exclude)[0]) for _ in range(4000))
    assert len(draws) == 8 and not set(draws) & exclude
    assert all(400 <= count <= 600 for count in draws.values()), draws  # 500 expected each
    everything = sample_pairs(pool, 100, rng, exclude)
    assert len(everything) == 8 and len({pair_key(*p) for p in everything}) == 8


def test_order_within_a_pair_is_random():
    rng = np.random.default_rng(1)
    firsts = Counter(sample_pairs(["a", "b"], 1, rng)[0][0] for _ in range(1000))
    assert 400 <= firsts["a"] <= 600


def test_large_pool_distinct_and_excluded():
    pool = [f"caption {i}" for i in range(400)]  # 79,800 pairs: the rejection regime
    rng = np.random.default_rng(2)
    exclude = {pair_key(*p) for p in sample_pairs(pool, 5000, rng)}
    pairs = sample_pairs(pool, 3000, rng, exclude)
    keys = [pair_key(*p) for p in pairs]
    assert len(keys) == len(set(keys)) == 3000
    assert all(a != b for a, b in pairs) and not set(keys) & exclude
    # every caption turns up about equally often (15 expected)
    counts = Counter(c for p in pairs for c in p)
    assert len(counts) > 390 and max(counts.values()) < 40


def test_degenerate_requests():
    rng = np.random.default_rng(3)
    assert sample_pairs(["a", "a"], 5, rng) == []
    assert sample_pairs(["a", "b"], 0, rng) == []
