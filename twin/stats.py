"""Confidence intervals of means over runs: Student-t, 95%, two-sided."""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

_T975 = (
    12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.306, 2.2622, 2.2281,
    2.201, 2.1788, 2.1604, 2.1448, 2.1314, 2.1199, 2.1098, 2.1009, 2.093, 2.086,
    2.0796, 2.0739, 2.0687, 2.0639, 2.0595, 2.0555, 2.0518, 2.0484, 2.0452, 2.0423,
)  # fmt: skip
_Z975 = NormalDist().inv_cdf(0.975)


def t975(df: int) -> float:
    """The 97.5% quantile of Student's t with `df` >= 1 degrees of freedom.

    Tabulated up to 30; beyond, the Cornish-Fisher expansion in 1/df (error below 1e-4).
    """
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    if df <= len(_T975):
        return _T975[df - 1]
    z = _Z975
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


@dataclass(frozen=True)
class Interval:
    """Mean of `n` finite values, their std (ddof 1) and the 95% t interval of the mean;
    std and the interval are NaN with fewer than two values, everything with none."""

    mean: float
    std: float
    low: float
    high: float
    n: int

    def contains(self, value: float) -> bool:
        """Whether `value` lies in [low, high]."""
        return bool(self.low <= value <= self.high)

    def as_dict(self) -> dict[str, float | int | None]:
        """JSON-ready: NaN becomes None."""
        return {
            k: (None if isinstance(v, float) and not math.isfinite(v) else v)
            for k, v in (
                ("mean", self.mean),
                ("std", self.std),
                ("ci_low", self.low),
                ("ci_high", self.high),
                ("n", self.n),
            )
        }


def mean_interval(values: np.ndarray) -> Interval:
    """The 95% interval of the mean of the finite entries of `values` (any shape)."""
    v = np.asarray(values, dtype=float).reshape(-1)
    v = v[np.isfinite(v)]
    nan = math.nan
    if v.size == 0:
        return Interval(nan, nan, nan, nan, 0)
    mean = float(v.mean())
    if v.size < 2:
        return Interval(mean, nan, nan, nan, 1)
    std = float(v.std(ddof=1))
    half = t975(v.size - 1) * std / math.sqrt(v.size)
    return Interval(mean, std, mean - half, mean + half, int(v.size))
