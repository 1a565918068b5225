"""count_scaling against hand-computed N^(-beta)."""

from __future__ import annotations

import numpy as np
import pytest

from reward_models import count_scaling


def test_beta_three_matches_hand_values():
    got = count_scaling(np.array([1, 2, 3, 10]), beta=3.0)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, [1.0, 1 / 8, 1 / 27, 1 / 1000], rtol=1e-6)


def test_shape_kept_and_other_betas():
    counts = np.array([[1, 4], [9, 16]])
    np.testing.assert_allclose(count_scaling(counts, 0.5), [[1, 1 / 2], [1 / 3, 1 / 4]], rtol=1e-6)
    np.testing.assert_array_equal(count_scaling(counts, 0.0), np.ones((2, 2)))


@pytest.mark.parametrize(
    ("counts", "beta", "error"),
    [
        (np.array([0, 1]), 3.0, ValueError),
        (np.array([1.0, 2.0]), 3.0, TypeError),
        (np.array([1, 2]), -1.0, ValueError),
    ],
)
def test_rejects_bad_input(counts, beta, error):
    with pytest.raises(error):
        count_scaling(counts, beta)
