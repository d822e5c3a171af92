"""The twin's dynamics: conservation, determinism, exact CTMC agreement, queueing laws."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from ctmc import exact_throughput
from invariants import assert_conserved
from linefactory import serial_line

from linetwin.twin import Twin, TwinError, bundled_spec, window_kpis


def test_parts_are_conserved_at_every_step_of_the_example_line():
    twin = Twin(bundled_spec(), 16, seed=3)
    for _ in range(20):
        snap = twin.step(900.0)
        assert_conserved(snap)
    assert snap.good_out.min() > 0
    assert snap.scrap_total.sum() > 0
    assert snap.failures.sum() > 0


def test_same_seed_gives_the_same_run_bit_for_bit():
    a = Twin(bundled_spec(), 4, seed=11).step(7200.0)
    b = Twin(bundled_spec(), 4, seed=11).step(7200.0)
    c = Twin(bundled_spec(), 4, seed=12).step(7200.0)
    assert np.array_equal(a.state.fstate, b.state.fstate)
    assert np.array_equal(a.state.istate, b.state.istate)
    assert np.array_equal(a.readings.power_kw, b.readings.power_kw)
    assert not np.array_equal(a.state.istate, c.state.istate)


def test_scenarios_are_independent_and_reproducible_alone():
    twin = Twin(bundled_spec(), 8, seed=5)
    snap = twin.step(4 * 3600.0)
    assert len(set(snap.completed.sum(axis=1).tolist())) > 4


def test_step_size_does_not_change_the_trajectory():
    """Events are exact: one long step and many short steps give the same events."""
    one = Twin(bundled_spec(), 4, seed=21)
    one_snap = one.step(6 * 3600.0)
    many = Twin(bundled_spec(), 4, seed=21)
    for _ in range(6 * 60):
        many_snap = many.step(60.0)
    assert np.array_equal(one_snap.state.istate, many_snap.state.istate)
    assert np.array_equal(one_snap.state.counts, many_snap.state.counts)
    assert np.allclose(one_snap.energy_kwh, many_snap.energy_kwh, rtol=1e-9)


CTMC_CASES = [
    # (cycle times s, buffers, mtbf s or None, mttr s or None)
    ([10.0, 8.0], [5], None, None),
    ([10.0, 10.0], [0], None, None),
    ([9.0, 12.0, 10.0], [2, 1], None, None),
    ([10.0, 11.0, 9.0, 10.5], [3, 0, 5], None, None),
    ([10.0, 9.0, 11.0], [4, 2], [600.0, None, 900.0], [60.0, None, 120.0]),
    ([8.0, 10.0, 9.0, 10.0], [1, 2, 1], [500.0, 800.0, None, 700.0], [50.0, 100.0, None, 40.0]),
]


@pytest.mark.parametrize(("cycles", "buffers", "mtbf", "mttr"), CTMC_CASES)
def test_exponential_lines_match_the_exact_markov_chain(cycles, buffers, mtbf, mttr):
    spec = serial_line(cycles, buffers, mtbf=mtbf, mttr=mttr)
    fail = [1.0 / m if m else 0.0 for m in mtbf] if mtbf else None
    repair = [1.0 / r if r else 1.0 for r in mttr] if mttr else None
    exact = exact_throughput([1.0 / c for c in cycles], buffers, fail, repair) * 3600.0
    twin = Twin(spec, 64, seed=101)
    start = twin.step(2 * 3600.0)
    end = twin.step(150 * 3600.0)
    th = window_kpis(start, end).throughput_per_hour
    est = th.mean()
    se = th.std(ddof=1) / math.sqrt(th.size)
    assert abs(est / exact - 1.0) < 0.01, (est, exact)
    assert abs(est - exact) < 4.5 * se, (est, exact, se)


@pytest.mark.parametrize("seed", range(4))
def test_deterministic_lines_run_at_the_bottleneck_rate(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 7))
    cycles = [float(x) for x in rng.uniform(5.0, 30.0, n).round(2)]
    buffers = [int(x) for x in rng.integers(0, 4, n - 1)]
    spec = serial_line(cycles, buffers, processing="deterministic")
    speeds = rng.uniform(0.6, 1.4, n).round(3)
    sp = {f"s{i}": {"speed": float(v)} for i, v in enumerate(speeds)}
    twin = Twin(spec, 1, seed=seed, setpoints=sp)
    start = twin.step(3600.0)
    window = 20 * 3600.0
    end = twin.step(window)
    bottleneck = max(c / v for c, v in zip(cycles, speeds, strict=True))
    parts = int(end.good_out[0] - start.good_out[0])
    assert abs(parts - window / bottleneck) <= 1.0


def test_unreliable_throughput_rises_with_buffers_up_to_the_worst_station():
    cycles = [10.0, 10.0, 10.0]
    mtbf, mttr = [900.0, 1200.0, 1500.0], [150.0, 150.0, 150.0]
    isolated = min(1.0 / c * m / (m + r) for c, m, r in zip(cycles, mtbf, mttr, strict=True))
    bound = isolated * 3600.0
    means = []
    for b in (0, 1, 3, 10, 30, 100):
        spec = serial_line(cycles, [b, b], processing="deterministic", mtbf=mtbf, mttr=mttr)
        twin = Twin(spec, 64, seed=7)  # same seed: common random numbers across buffer sizes
        start = twin.step(3600.0)
        end = twin.step(100 * 3600.0)
        means.append(window_kpis(start, end).throughput_per_hour.mean())
    assert all(b >= a - 0.002 * bound for a, b in itertools.pairwise(means)), means
    assert means[-1] > means[0] * 1.05
    assert max(means) <= bound * 1.005
    assert means[-1] >= 0.95 * bound


def test_speed_changes_apply_to_the_part_in_process():
    """Halving a deterministic station's speed mid-part stretches what is left of it."""
    spec = serial_line([100.0], [], processing="deterministic")
    twin = Twin(spec, 1, seed=0)
    twin.step(50.0)  # half of the first part done
    twin.set_setpoints({"s0": {"speed": 0.5}})
    snap = twin.step(99.0)  # the remaining half now takes 100 s
    assert snap.completed[0, 0] == 0
    snap = twin.step(2.0)
    assert snap.completed[0, 0] == 1


def test_fork_starts_from_the_snapshot_and_diverges():
    twin = Twin(bundled_spec(), 1, seed=9)
    snap = twin.step(3 * 3600.0)
    forks = Twin.fork(snap, 6, seed=1)
    assert np.array_equal(forks.snapshot().completed, np.repeat(snap.completed, 6, axis=0))
    after = forks.step(3600.0)
    assert_conserved(after)
    assert len(set(after.completed.sum(axis=1).tolist())) > 1
    again = Twin.fork(snap, 6, seed=1).step(3600.0)
    assert np.array_equal(after.state.istate, again.state.istate)


def test_energy_of_a_station_that_never_stops():
    spec = serial_line([10.0], [], processing="deterministic")
    twin = Twin(spec, 1, seed=0)
    snap = twin.step(3600.0)
    run_kw = spec.stations[0].energy.run_kw
    assert snap.energy_kwh[0, 0] == pytest.approx(run_kw, rel=1e-12)
    twin.set_setpoints({"s0": {"speed": 1.2}})
    snap2 = twin.step(3600.0)
    assert snap2.energy_kwh[0, 0] - snap.energy_kwh[0, 0] == pytest.approx(run_kw * 1.2**2)


def test_a_twin_started_at_a_later_time_accounts_only_simulated_time():
    twin = Twin(bundled_spec(), 2, seed=0, time_s=1000.0)
    snap = twin.step(100.0)
    assert np.allclose(snap.status_time_s.sum(axis=2), 100.0)
    assert snap.time_s == 1100.0


def test_set_wear_raises_the_failure_rate_where_wear_counts():
    from linefactory import station

    from linetwin.twin.spec import parse_spec

    spec = parse_spec(
        {
            "name": "worn",
            "stations": [
                station(
                    "m",
                    10.0,
                    processing="deterministic",
                    mtbf=3600.0,
                    mttr=60.0,
                    wear={"failure_gain": 2.0, "speed_exponent": 0.0},
                ),
            ],
        },
        "<test>",
    )
    fresh = Twin(spec, 256, seed=4)
    worn = Twin(spec, 256, seed=4)
    worn.set_wear(np.full((256, 1), 10.0))  # hazard x 21 until the first repair
    a, b = fresh.step(600.0), worn.step(600.0)
    assert b.failures.sum() > 5 * max(a.failures.sum(), 1)
    with pytest.raises(TwinError, match="wear must be finite"):
        worn.set_wear(np.full((256, 1), -1.0))


ERLANG_CASES = [
    # (cycle times s, buffers, mtbf s or None, mttr s or None, gamma cv = 1 / sqrt(phases))
    ([10.0, 8.0, 11.0], [2, 1], None, None, 0.5),
    ([10.0, 9.0, 11.0], [3, 2], [600.0, None, 900.0], [60.0, None, 120.0], 0.5),
    ([10.0, 9.0], [3], [600.0, 900.0], [60.0, 120.0], 1.0 / 3.0),
]
# (Three stations with 9 phases and failures have 38,439 states: minutes to solve; the cases
# here have at most 3,764 and solve in about a second.)


@pytest.mark.parametrize(("cycles", "buffers", "mtbf", "mttr", "cv"), ERLANG_CASES)
def test_gamma_lines_match_the_exact_erlang_chain(cycles, buffers, mtbf, mttr, cv):
    """Gamma processing with cv 1/sqrt(k) is Erlang-k: the CTMC with k phases is exact."""
    spec = serial_line(cycles, buffers, processing="gamma", cv=cv, mtbf=mtbf, mttr=mttr)
    k = round(1.0 / cv**2)
    fail = [1.0 / m if m else 0.0 for m in mtbf] if mtbf else None
    repair = [1.0 / r if r else 1.0 for r in mttr] if mttr else None
    rates = [1.0 / c for c in cycles]
    exact = exact_throughput(rates, buffers, fail, repair, phases=[k] * len(cycles)) * 3600.0
    expo = exact_throughput(rates, buffers, fail, repair) * 3600.0
    twin = Twin(spec, 64, seed=102)
    start = twin.step(2 * 3600.0)
    end = twin.step(150 * 3600.0)
    th = window_kpis(start, end).throughput_per_hour
    est = th.mean()
    se = th.std(ddof=1) / math.sqrt(th.size)
    assert abs(est / exact - 1.0) < 0.01, (est, exact)
    assert abs(est - exact) < 4.5 * se, (est, exact, se)
    assert abs(est - expo) > 10 * se  # the law matters: the exponential chain is far off
