"""RunningMeanStd against the mean and variance of everything seen, computed in one go."""

from __future__ import annotations

import numpy as np
import pytest

from reward_models import RunningMeanStd


def reference(history: np.ndarray, epsilon: float = 1e-4) -> tuple[float, float]:
    """Weighted mean/variance of the prior (mean 0, var 1, weight epsilon) plus every value."""
    total = epsilon + history.size
    mean = history.sum() / total
    var = (epsilon * (1.0 + mean**2) + ((history - mean) ** 2).sum()) / total
    return mean, var


def test_matches_statistics_of_the_concatenation():
    rng = np.random.default_rng(0)
    stats, seen = RunningMeanStd(), []
    for size in (7, 1, 50, 13):
        batch = rng.normal(3.0, 2.0, size=size)
        stats.update(batch)
        seen.append(batch)
        history = np.concatenate(seen)
        mean, var = reference(history)
        np.testing.assert_allclose([stats.mean, stats.var], [mean, var], rtol=1e-12)
        # ... which is the plain mean/variance up to the tiny pseudo-count.
        np.testing.assert_allclose(stats.mean, history.mean(), rtol=1e-3)
    values = np.array([0.0, 3.0, 6.0])
    np.testing.assert_allclose(stats.normalize(values), (values - mean) / np.sqrt(var), rtol=1e-6)


def test_empty_update_and_state_round_trip():
    stats = RunningMeanStd()
    stats.update(np.array([1.0, 2.0, 4.0]))
    stats.update(np.array([]))
    copy = RunningMeanStd()
    copy.load_state_dict(stats.state_dict())
    assert (copy.mean, copy.var, copy.count) == (stats.mean, stats.var, stats.count)
    assert copy.count == pytest.approx(3.0001)
