"""Means with 95 % confidence intervals (Student t), for `rogueray evaluate` (over episodes) and
`rogueray compare` (over seeds). Plain numpy: no scipy, no torch."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

# Two-sided 95 %: the 0.975 quantile of Student's t with 1..30 degrees of freedom.
_T975 = (
    12.706205, 4.302653, 3.182446, 2.776445, 2.570582, 2.446912, 2.364624, 2.306004, 2.262157,
    2.228139, 2.200985, 2.178813, 2.160369, 2.144787, 2.131450, 2.119905, 2.109816, 2.100922,
    2.093024, 2.085963, 2.079614, 2.073873, 2.068658, 2.063899, 2.059539, 2.055529, 2.051831,
    2.048407, 2.045230, 2.042272,
)  # fmt: skip
_Z975 = 1.959963984540054


def t_quantile_975(df: int) -> float:
    """The 0.975 quantile of Student's t: a table up to 30 degrees of freedom, then the
    Cornish-Fisher expansion (error below 1e-5 there)."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    if df <= len(_T975):
        return _T975[df - 1]
    z, v = _Z975, float(df)
    return (
        z
        + (z**3 + z) / (4 * v)
        + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * v**2)
        + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * v**3)
    )


@dataclass(frozen=True)
class Estimate:
    """Mean of n values with its 95 % t-interval (low = high = mean when n < 2)."""

    n: int
    mean: float
    std: float
    ci_low: float
    ci_high: float

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def mean_ci(values: Sequence[float]) -> Estimate | None:
    """None for no values; the sample std (ddof=1) is 0 for a single value."""
    data = np.asarray([v for v in values if v is not None], dtype=np.float64)
    if data.size == 0:
        return None
    mean = float(data.mean())
    if data.size < 2:
        return Estimate(1, mean, 0.0, mean, mean)
    std = float(data.std(ddof=1))
    half = t_quantile_975(data.size - 1) * std / math.sqrt(data.size)
    return Estimate(int(data.size), mean, std, mean - half, mean + half)
