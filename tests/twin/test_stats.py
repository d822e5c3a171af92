"""Student-t intervals of means."""

from __future__ import annotations

import math

import numpy as np
import pytest

from linetwin.twin.stats import mean_interval, t975


@pytest.mark.parametrize(
    ("df", "quantile"),
    [(1, 12.7062), (2, 4.3027), (30, 2.0423), (31, 2.0395), (40, 2.0211), (100, 1.9840),
     (1000, 1.9623)],
)  # fmt: skip
def test_t975_matches_tables(df: int, quantile: float) -> None:
    assert t975(df) == pytest.approx(quantile, abs=2e-4)


def test_t975_refuses_no_degrees_of_freedom() -> None:
    with pytest.raises(ValueError, match="degrees of freedom"):
        t975(0)


def test_interval_covers_the_mean_95_percent_of_the_time() -> None:
    rng = np.random.default_rng(0)
    for n in (3, 8, 50):
        hits = [mean_interval(rng.normal(2.0, 3.0, n)).contains(2.0) for _ in range(4000)]
        assert 0.935 <= np.mean(hits) <= 0.965, n


def test_interval_ignores_nan_and_reports_small_samples() -> None:
    i = mean_interval(np.array([1.0, np.nan, 3.0]))
    assert (i.mean, i.n) == (2.0, 2)
    one = mean_interval(np.array([5.0]))
    assert one.mean == 5.0 and math.isnan(one.low)
    assert one.as_dict()["ci_low"] is None
    assert mean_interval(np.array([])).n == 0
    flat = mean_interval(np.zeros(4))
    assert flat.low == flat.high == 0.0 and flat.contains(0.0)
