"""Episodic count scaling of intrinsic rewards (ONI section 4.0): a caption seen for the N-th time
in the current episode earns r_int * N^(-beta)."""

from __future__ import annotations

import numpy as np


def count_scaling(counts: np.ndarray, beta: float) -> np.ndarray:
    """N^(-beta) for within-episode counts N >= 1.

    Args:
        counts: integer array of any shape; N_ep(caption) including the current occurrence.
        beta: the exponent, >= 0 (ONI uses 3: weights 1, 1/8, 1/27, ...).

    Returns:
        float32 array of the same shape as `counts`.
    """
    counts = np.asarray(counts)
    if not np.issubdtype(counts.dtype, np.integer):
        raise TypeError(f"counts must be integers, got dtype {counts.dtype}")
    if counts.size and counts.min() < 1:
        raise ValueError(f"counts must be >= 1, got minimum {counts.min()}")
    if beta < 0:
        raise ValueError(f"beta must be >= 0, got {beta}")
    return np.power(counts.astype(np.float64), -float(beta)).astype(np.float32)
