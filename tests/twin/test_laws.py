"""The processing, failure and repair laws: their moments, common random numbers, forks.

Exactness against ground truth lives in `test_dynamics.py` (gamma processing against the
Erlang chain) and `tests/bench/test_simpy_line.py` (every law against the SimPy model); here
each law is checked alone on one station, where renewal theory gives the answer:
over a window of length t, a renewal process with mean m and cv c counts about t / m events
with variance about c² t / m.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from invariants import assert_conserved
from linefactory import station

from linetwin.twin import Twin, bundled_spec
from linetwin.twin import layout as L
from linetwin.twin.spec import LineSpec, parse_spec


def one_station(**keys) -> LineSpec:
    """Return a line of one station `m` with the given keys (cycle 10 s unless given)."""
    keys.setdefault("cycle_time_s", 10.0)
    return parse_spec({"name": "one", "stations": [{"name": "m", **keys}]}, "<test>")


def weibull_cv(shape: float) -> float:
    """Return the coefficient of variation of a Weibull law of `shape`."""
    g1, g2 = math.gamma(1 + 1 / shape), math.gamma(1 + 2 / shape)
    return math.sqrt(g2 / g1**2 - 1)


def counts(spec: LineSpec, n: int, hours: float, seed: int = 1, warmup_h: float = 0.5):
    """Return the twin's `(start, end)` snapshots around `hours` after `warmup_h`."""
    twin = Twin(spec, n, seed=seed)
    start = twin.step(warmup_h * 3600.0)
    return start, twin.step(hours * 3600.0)


@pytest.mark.parametrize(
    ("keys", "cv"),
    [
        ({"processing": "gamma", "cv": 0.4}, 0.4),
        ({"processing": "gamma", "cv": 1.6}, 1.6),  # shape below 1: the boosted sampler
        ({"processing": "lognormal", "cv": 0.4}, 0.4),
        ({"processing": "lognormal", "cv": 1.2}, 1.2),
        ({"processing": "exponential"}, 1.0),
    ],
)
def test_processing_laws_have_their_mean_and_cv(keys, cv):
    n, hours = 512, 6.0
    start, end = counts(one_station(**keys), n, hours)
    parts = (end.completed - start.completed)[:, 0].astype(float)
    expected = hours * 3600.0 / 10.0
    se = parts.std(ddof=1) / math.sqrt(n)
    assert abs(parts.mean() - expected) < 4 * se + 1.0, (parts.mean(), expected, se)
    # Var(N) / E(N) -> cv²; its sampling error with 512 scenarios is about 6 %.
    assert parts.var(ddof=1) / parts.mean() == pytest.approx(cv**2, rel=0.2)


@pytest.mark.parametrize("shape", [0.7, 3.0])
def test_weibull_failures_have_mean_mtbf_and_their_shape_in_busy_time(shape):
    """A nearly always busy station: failures per busy second -> 1 / mtbf, and the spread of
    the count over scenarios is that of a Weibull renewal process (cv² per expected failure)."""
    spec = one_station(
        processing="deterministic",
        mtbf_s=600.0,
        mttr_s=1.0,
        failure_law="weibull",
        failure_shape=shape,
    )
    n = 1024
    start, end = counts(spec, n, 20.0)
    fails = (end.failures - start.failures)[:, 0].astype(float)
    busy = (end.status_time_s - start.status_time_s)[:, 0, L.BUSY]
    rate = fails.sum() / busy.sum() * 600.0
    se = math.sqrt(weibull_cv(shape) ** 2 / fails.sum())
    assert abs(rate - 1.0) < 4 * se, (rate, se)
    # The repairs take 1 s in 600: busy time is nearly the window, so N is a renewal count.
    assert fails.var(ddof=1) / fails.mean() == pytest.approx(weibull_cv(shape) ** 2, rel=0.15)


def test_weibull_wear_scales_the_hazard():
    """With failure_gain, worn stations fail sooner, as with exponential failures."""
    base = {"processing": "deterministic", "mtbf_s": 3600.0, "mttr_s": 60.0}
    weibull = {"failure_law": "weibull", "failure_shape": 2.0}
    plain = one_station(**base, **weibull)
    worn = one_station(**base, **weibull, wear={"failure_gain": 2.0, "speed_exponent": 0.0})
    a, b = (counts(s, 256, 20.0, warmup_h=0.0) for s in (plain, worn))
    fa = (a[1].failures - a[0].failures).sum()
    fb = (b[1].failures - b[0].failures).sum()
    assert fb > 1.3 * fa


def test_lognormal_repairs_have_mean_mttr():
    spec = one_station(
        processing="deterministic",
        mtbf_s=300.0,
        mttr_s=120.0,
        repair_law="lognormal",
        repair_cv=1.5,
    )
    start, end = counts(spec, 4096, 5.0)
    fails = (end.failures - start.failures)[:, 0].sum()
    down = (end.status_time_s - start.status_time_s)[:, 0, L.DOWN].sum()
    # Each scenario's window cuts at most two repairs; 1.5 cv over ~200k repairs: SE ~0.4 %.
    assert down / fails == pytest.approx(120.0, rel=0.03)
    assert_conserved(end)
    # The spread: a repair in progress at a fixed time is length-biased, so what is left of it
    # has mean E[R²] / (2 E[R]) = mttr * (1 + cv²) / 2 (195 s here; 120 s if exponential).
    left = end.state.fstate[end.status[:, 0] == L.DOWN, 0, L.F_TREPAIR] - end.time_s
    se = left.std(ddof=1) / math.sqrt(left.size)
    assert left.size > 500
    assert abs(left.mean() - 120.0 * (1 + 1.5**2) / 2) < 4 * se, (left.mean(), se)


def test_each_part_draws_the_same_numbers_whatever_the_speed():
    """Common random numbers: at 1.25 times the speed, the same parts (scrapped or not) are
    finished in 1 / 1.25 of the time, for rejection (gamma) and fixed-count (lognormal) draws."""
    spec = parse_spec(
        {
            "name": "crn",
            "stations": [
                station("a", 10.0, 2, processing="gamma", cv=0.3, scrap={"base": 0.1}),
                station("b", 9.0, 1, processing="lognormal", cv=0.5, scrap={"base": 0.05}),
                station("c", 11.0, processing="gamma", cv=1.3),
            ],
        },
        "<test>",
    )
    slow = Twin(spec, 8, seed=3).step(10_000.0)
    fast = Twin(spec, 8, seed=3, setpoints={s: {"speed": 1.25} for s in "abc"}).step(8_000.0)
    np.testing.assert_array_equal(slow.completed, fast.completed)
    np.testing.assert_array_equal(slow.scrapped, fast.scrapped)
    np.testing.assert_array_equal(slow.status, fast.status)
    assert slow.scrapped.sum() > 0


def test_fork_keeps_the_clocks_that_are_not_memoryless():
    spec = bundled_spec("varied")
    twin = Twin(spec, 16, seed=8)
    snap = twin.step(3 * 3600.0)
    forks = Twin.fork(snap, 16, scenario=np.arange(16), seed=2).snapshot()
    a, b = snap.state.fstate, forks.state.fstate
    status = snap.status
    p = twin.params.params
    kept = p[:, L.P_PROC_LAW] != L.LAW_EXPONENTIAL
    busy_kept = (status == L.BUSY) & kept
    assert busy_kept.any()
    np.testing.assert_array_equal(a[..., L.F_TDONE][busy_kept], b[..., L.F_TDONE][busy_kept])
    down = status == L.DOWN
    np.testing.assert_array_equal(a[..., L.F_LEFT][down & kept], b[..., L.F_LEFT][down & kept])
    lognormal = down & (p[:, L.P_REPAIR_LAW] == L.LAW_LOGNORMAL)
    np.testing.assert_array_equal(a[..., L.F_TREPAIR][lognormal], b[..., L.F_TREPAIR][lognormal])
    np.testing.assert_array_equal(a[..., L.F_AGE], b[..., L.F_AGE])
    np.testing.assert_array_equal(a[..., L.F_WEAR], b[..., L.F_WEAR])
    assert (a[..., L.F_AGE] > 0).any()
    unreliable = p[:, L.P_FAIL] > 0
    assert not np.array_equal(a[..., L.F_LIFE][:, unreliable], b[..., L.F_LIFE][:, unreliable])


def test_forks_of_aged_weibull_stations_continue_in_law():
    """Forking after 1.5 h of wear-out (shape 4) must not make the station young again: the
    forks' failures over the next hour match the original's continuation."""
    spec = one_station(
        processing="gamma",
        cv=0.2,
        mtbf_s=7200.0,
        mttr_s=30.0,
        failure_law="weibull",
        failure_shape=4.0,
    )
    n = 4096
    twin = Twin(spec, n, seed=4)
    snap = twin.step(1.5 * 3600.0)
    forks = Twin.fork(snap, n, scenario=np.arange(n), seed=5)
    fa = (twin.step(3600.0).failures - snap.failures)[:, 0].astype(float)
    fb = (forks.step(3600.0).failures - snap.failures)[:, 0].astype(float)
    se = math.sqrt(fa.var(ddof=1) / n + fb.var(ddof=1) / n)
    assert abs(fa.mean() - fb.mean()) < 4 * se, (fa.mean(), fb.mean(), se)
    # A fork that forgot the age would fail about (1.5^4 - 0.5^4)/(2.5^4 - 1.5^4) ~ 15 % as often.
    assert fb.mean() > 0.1


def test_set_wear_ages_weibull_stations_to_match():
    spec = bundled_spec("varied")
    twin = Twin(spec, 2, seed=1, setpoints={"mill": {"speed": 1.2}})
    twin.step(60.0)  # the speed is in force
    wear = np.full((2, spec.n_stations), 0.5)
    twin.set_wear(wear)
    fs = twin.snapshot().state.fstate
    p = twin.params.params
    weibull = p[:, L.P_FAIL_LAW] == L.LAW_WEIBULL
    mill = spec.station_index("mill")
    assert weibull[mill] and not weibull.all()
    np.testing.assert_allclose(fs[:, mill, L.F_AGE], 1800.0 / 1.2**2.5)
    np.testing.assert_allclose(fs[:, weibull, L.F_WEAR], 0.5)
    assert (fs[:, ~weibull, L.F_AGE] < 70.0).all()  # left alone: at most the minute it ran
