"""Checks of the exact CTMC line solver against independent results.

* closed forms: one station (with operation-dependent failures), two stations
  (an M/M/1/K birth-death chain), Hunt's 22/39 for three equal stations without buffers;
* structural facts: state counts, flow conservation, reversibility, monotonicity, bounds;
* a vectorised Monte-Carlo of the BAS departure-time recursion, which shares no code
  with the CTMC and handles failures by inflating each service time with its downtime;
* the same for Erlang-k service (``phases``), with gamma service times in the Monte-Carlo.
"""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).parent))

import ctmc
from ctmc import exact_throughput, state_count

REL = 1e-12


# --------------------------------------------------------------------------- closed forms


@pytest.mark.parametrize("mu", [0.5, 1.0, 3.7])
def test_single_station_no_failures(mu: float) -> None:
    assert exact_throughput([mu], []) == pytest.approx(mu, rel=REL)


@pytest.mark.parametrize(("mu", "f", "r"), [(1.0, 0.1, 1.0), (3.0, 0.2, 1.0), (2.0, 1.5, 0.25)])
def test_single_station_with_failures(mu: float, f: float, r: float) -> None:
    # Failures accrue in busy time only: one part takes Exp(mu) busy time, during which
    # Poisson(f/mu) failures occur on average, each costing 1/r seconds of repair.
    cycle = 1.0 / mu + (f / mu) / r
    assert exact_throughput([mu], [], [f], [r]) == pytest.approx(1.0 / cycle, rel=REL)
    assert exact_throughput([mu], [], [f], [r]) == pytest.approx(mu * r / (r + f), rel=REL)


def two_station_closed_form(mu1: float, mu2: float, cap: int) -> float:
    """Two-station exponential BAS line without failures.

    ``N`` = parts in buffer + station 2 + (1 if station 1 is blocked).  Station 1 is
    always busy or blocked, so ``N`` is a birth-death chain on ``0..K`` with
    ``K = cap + 2``: births at ``mu1`` for ``N < K`` (at ``N = K`` station 1 is blocked),
    deaths at ``mu2`` for ``N > 0``.  That is M/M/1/K with ``rho = mu1/mu2`` and
    throughput ``mu1 (1 - p_K) = mu1 (1 - rho^K) / (1 - rho^(K+1))``, or
    ``mu K / (K + 1)`` for equal rates.
    """
    k = cap + 2
    if mu1 == mu2:
        return mu1 * k / (k + 1)
    rho = mu1 / mu2
    return mu1 * (1.0 - rho**k) / (1.0 - rho ** (k + 1))


@pytest.mark.parametrize("cap", [0, 1, 2, 5])
@pytest.mark.parametrize(("mu1", "mu2"), [(1.0, 1.0), (1.0, 2.0), (3.0, 1.2), (0.4, 0.5)])
def test_two_stations_closed_form(mu1: float, mu2: float, cap: int) -> None:
    expected = two_station_closed_form(mu1, mu2, cap)
    assert exact_throughput([mu1, mu2], [cap]) == pytest.approx(expected, rel=1e-11)


def test_two_equal_stations_known_values() -> None:
    # Zero buffer: 2/3 (classic); buffer 5: K = 7, 7/8.
    assert exact_throughput([1.0, 1.0], [0]) == pytest.approx(2.0 / 3.0, rel=REL)
    assert exact_throughput([2.0, 2.0], [5]) == pytest.approx(2.0 * 7.0 / 8.0, rel=REL)


def test_three_equal_stations_zero_buffers_hunt() -> None:
    # Hunt (1956) / Hillier & Boling (1967): 3 identical exponential stations, no
    # buffers, blocking after service -> throughput 22/39 = 0.5641 of the rate.
    assert exact_throughput([1.0, 1.0, 1.0], [0, 0]) == pytest.approx(22.0 / 39.0, rel=REL)
    assert exact_throughput([2.5, 2.5, 2.5], [0, 0]) == pytest.approx(2.5 * 22 / 39, rel=REL)


def test_scale_invariance() -> None:
    # Multiplying every rate by c multiplies throughput by c (time rescaling).
    args = ([1.0, 2.0, 1.5], [1, 0], [0.1, 0.3, 0.05], [1.0, 0.5, 2.0])
    c = 7.3
    scaled = [[c * x for x in a] if i != 1 else a for i, a in enumerate(args)]
    assert exact_throughput(*scaled) == pytest.approx(c * exact_throughput(*args), rel=1e-11)


# --------------------------------------------------------------------------- state counts


def test_state_count_small_cases() -> None:
    # One station: {BUSY}, or {BUSY, DOWN} with failures.
    assert state_count([1.0], []) == 1
    assert state_count([1.0], [], [0.1], [1.0]) == 2
    # Two stations, buffer B, no failures: the N = 0..B+2 chain above, B + 3 states.
    assert state_count([1.0, 1.0], [5]) == 8
    # With failures: N = 0 -> station 1 BUSY/DOWN (2); N = 1..B+1 -> both BUSY/DOWN
    # (4 each); N = B+2 -> station 1 BLOCKED, station 2 BUSY/DOWN (2): 4B + 8.
    assert state_count([1.0, 1.0], [5], [0.1, 0.1], [1.0, 1.0]) == 28
    # Only station 1 can fail: N = 0 -> 2, N = 1..B+1 -> 2 each, N = B+2 -> 1: 2B + 5.
    assert state_count([1.0, 1.0], [5], [0.1, 0.0], [1.0, 1.0]) == 15


def consistent_states(caps: list[int], failing: list[bool]) -> int:
    """Brute-force count of configurations satisfying the BAS invariants."""
    n = len(caps) + 1
    count = 0
    for sts in itertools.product(range(4), repeat=n):
        if sts[0] == ctmc.STARVED or sts[-1] == ctmc.BLOCKED:
            continue
        if any(s == ctmc.DOWN and not failing[i] for i, s in enumerate(sts)):
            continue
        for lv in itertools.product(*(range(c + 1) for c in caps)):
            ok = all(
                not (sts[i + 1] == ctmc.STARVED and (lv[i] > 0 or sts[i] == ctmc.BLOCKED))
                and not (sts[i] == ctmc.BLOCKED and lv[i] != caps[i])
                for i in range(n - 1)
            )
            count += ok
    return count


@pytest.mark.parametrize("caps", [[0], [3], [0, 0], [1, 2], [3, 0, 2], [5, 5, 5]])
@pytest.mark.parametrize("failures", [False, True])
def test_state_count_equals_consistent_configurations(caps: list[int], failures: bool) -> None:
    # Every configuration with: station 0 never starved, last never blocked, a starved
    # station has an empty, unblocked feeder, and a blocked station has a full buffer
    # is reachable (and nothing else is).
    n = len(caps) + 1
    f = [0.1] * n if failures else None
    r = [1.0] * n if failures else None
    assert state_count([1.0] * n, caps, f, r) == consistent_states(caps, [failures] * n)


def test_state_count_reference_values() -> None:
    assert state_count([1.0] * 3, [0, 0]) == 8
    assert state_count([1.0] * 4, [0, 0, 0]) == 21
    assert state_count([1.0] * 4, [5, 5, 5]) == 496
    assert state_count([1.0] * 4, [5, 5, 5], [0.1] * 4, [1.0] * 4) == 5432


# --------------------------------------------------------------------------- internals


def _pi(rates, buffers, f=None, r=None):
    mu, caps, ff, rr = ctmc._validate(rates, buffers, f, r)
    states, rows, cols, vals = ctmc._explore(mu, caps, ff, rr)
    pi = ctmc._stationary_levels(ctmc._wip(states, len(mu)), rows, cols, vals)
    return mu, states, rows, cols, vals, pi


@pytest.mark.parametrize(
    "args",
    [
        ([1.0, 2.0, 1.5], [0, 2], [0.1, 0.2, 0.05], [1.0, 0.5, 2.0]),
        ([1.0, 1.0, 1.0, 1.0], [1, 0, 2], None, None),
        ([0.9, 1.3, 1.1, 1.0], [2, 1, 0], [0.02, 0.05, 0.1, 0.01], [0.5, 1.0, 0.3, 2.0]),
    ],
)
def test_level_reduction_matches_dense_solve_and_conserves_flow(args) -> None:
    mu, states, rows, cols, vals, pi = _pi(*args)
    m = len(states)
    dense = ctmc._stationary_dense(m, rows, cols, vals)
    np.testing.assert_allclose(pi, dense, rtol=1e-9, atol=1e-13)
    assert pi.min() > 0.0 and pi.sum() == pytest.approx(1.0)
    # Global balance residual.
    flow = np.bincount(cols, weights=pi[rows] * vals, minlength=m)
    out = np.bincount(rows, weights=vals, minlength=m) * pi
    np.testing.assert_allclose(flow, out, atol=1e-13)
    # Conservation: every station completes parts at the same long-run rate.
    busy = np.array([[s[i] == ctmc.BUSY for i in range(len(mu))] for s in states])
    per_station = np.asarray(mu) * (pi @ busy)
    np.testing.assert_allclose(per_station, per_station[-1], rtol=1e-10)
    assert exact_throughput(*args) == pytest.approx(per_station[-1], rel=1e-12)


def test_biggest_supported_case_solves() -> None:
    """4 stations, buffers of 5, failures: 5,432 states (speed is not asserted here: tests
    check behaviour, and this one stays in the suite's time budget by construction)."""
    th = exact_throughput([1.0, 1.2, 0.9, 1.1], [5, 5, 5], [0.1] * 4, [1.0] * 4)
    assert state_count([1.0, 1.2, 0.9, 1.1], [5, 5, 5], [0.1] * 4, [1.0] * 4) == 5432
    assert 0.0 < th < 0.9 * 1.0 / 1.1


@pytest.mark.parametrize(
    ("rates", "buffers", "f", "r"),
    [
        ([], [], None, None),
        ([1.0, 1.0], [], None, None),
        ([1.0, 1.0], [-1], None, None),
        ([0.0, 1.0], [1], None, None),
        ([1.0, 1.0], [1], [0.1, 0.1], None),
        ([1.0, 1.0], [1], None, [1.0, 1.0]),
        ([1.0, 1.0], [1], [0.1], [1.0]),
        ([1.0, 1.0], [1], [0.1, 0.1], [1.0, 0.0]),
    ],
)
def test_invalid_arguments(rates, buffers, f, r) -> None:
    with pytest.raises(ValueError):
        exact_throughput(rates, buffers, f, r)


# --------------------------------------------------------------------------- properties

rate = st.floats(min_value=0.2, max_value=5.0)


@st.composite
def lines(draw, failures: bool):
    n = draw(st.integers(min_value=1, max_value=3))
    rates = [draw(rate) for _ in range(n)]
    caps = [draw(st.integers(min_value=0, max_value=3)) for _ in range(n - 1)]
    if not failures:
        return rates, caps, None, None
    f = [draw(st.floats(min_value=0.0, max_value=1.0)) for _ in range(n)]
    r = [draw(st.floats(min_value=0.1, max_value=3.0)) for _ in range(n)]
    return rates, caps, f, r


def efficiencies(rates, f, r) -> list[float]:
    if f is None:
        return list(rates)
    return [mu * rr / (rr + ff) for mu, ff, rr in zip(rates, f, r, strict=True)]


@settings(max_examples=40, deadline=None)
@given(lines(failures=True))
def test_reversal_and_bounds(line) -> None:
    rates, caps, f, r = line
    th = exact_throughput(rates, caps, f, r)
    # Reversibility of BAS lines: each station (service + operation-dependent
    # downtime) is a station with i.i.d. general processing times, for which the
    # reversed line has the same throughput.
    rev = exact_throughput(
        rates[::-1], caps[::-1], None if f is None else f[::-1], None if r is None else r[::-1]
    )
    assert rev == pytest.approx(th, rel=1e-9)
    assert 0.0 < th <= min(efficiencies(rates, f, r)) * (1.0 + 1e-12)


@settings(max_examples=30, deadline=None)
@given(lines(failures=False))
def test_reversal_without_failures(line) -> None:
    rates, caps, _, _ = line
    th = exact_throughput(rates, caps)
    assert exact_throughput(rates[::-1], caps[::-1]) == pytest.approx(th, rel=1e-9)
    assert th <= min(rates) * (1.0 + 1e-12)
    if len(rates) >= 2:
        # Any line is no faster than its worst two-station sub-line without the rest.
        pairs = [two_station_closed_form(rates[i], rates[i + 1], caps[i]) for i in range(len(caps))]
        assert th <= min(pairs) * (1.0 + 1e-12)


@settings(max_examples=25, deadline=None)
@given(lines(failures=True), st.data())
def test_monotone_in_buffers_and_rates(line, data) -> None:
    rates, caps, f, r = line
    th = exact_throughput(rates, caps, f, r)
    if caps:
        i = data.draw(st.integers(min_value=0, max_value=len(caps) - 1))
        bigger = list(caps)
        bigger[i] += 1
        assert exact_throughput(rates, bigger, f, r) > th
    j = data.draw(st.integers(min_value=0, max_value=len(rates) - 1))
    faster = list(rates)
    faster[j] *= 1.5
    assert exact_throughput(faster, caps, f, r) > th
    worse = list(f)
    worse[j] += 0.2
    assert exact_throughput(rates, caps, worse, r) < th


def test_throughput_increases_with_buffer_to_bottleneck_limit() -> None:
    rates = [1.0, 1.3, 0.8]
    ths = [exact_throughput(rates, [b, b]) for b in range(6)]
    assert all(a < b for a, b in itertools.pairwise(ths))
    assert ths[-1] < 0.8
    # With large buffers the line approaches the bottleneck rate.
    assert exact_throughput(rates, [40, 40]) == pytest.approx(0.8, rel=0.02)


# --------------------------------------------------------------------------- Monte-Carlo


def simulate_bas(
    rates: list[float],
    caps: list[int],
    f: list[float] | None,
    r: list[float] | None,
    n_parts: int,
    n_reps: int,
    seed: int,
    warmup: int,
    phases: list[int] | None = None,
) -> np.ndarray:
    """Throughput of ``n_reps`` independent runs of the BAS departure-time recursion.

    ``Sv[i, j]`` = start of part j at station i, ``C`` = its completion, ``D`` = its
    departure from station i (into buffer i or straight into station i+1)::

        Sv[0, j] = D[0, j-1];   Sv[i, j] = max(D[i-1, j], D[i, j-1])
        C[i, j]  = Sv[i, j] + T[i, j]
        D[i, j]  = max(C[i, j], D[i+1, j - caps[i] - 1])      (D = C at the last station)

    Part j may leave station i once part j - caps[i] - 1 has left station i+1, because
    buffer i plus station i+1 hold at most caps[i] + 1 parts.  With operation-
    dependent failures a part's occupation time T is its Exp(mu) service S plus the
    repairs of the Poisson(f S) failures during it, each Exp(r). With ``phases`` the
    service S is Gamma(k, 1 / (k mu)): Erlang-k with mean 1 / mu.
    """
    rng = np.random.default_rng(seed)
    n = len(rates)
    T = np.empty((n, n_parts, n_reps))
    for i, mu in enumerate(rates):
        k = phases[i] if phases else 1
        service = rng.gamma(k, 1.0 / (k * mu), size=(n_parts, n_reps))
        if f is not None and r is not None and f[i] > 0.0:
            k = rng.poisson(f[i] * service)
            service = service + rng.gamma(np.maximum(k, 1), 1.0 / r[i]) * (k > 0)
        T[i] = service
    D = np.zeros((n, n_parts, n_reps))
    zero = np.zeros(n_reps)
    for j in range(n_parts):
        for i in range(n):
            prev_same = D[i, j - 1] if j > 0 else zero
            start = prev_same if i == 0 else np.maximum(D[i - 1, j], prev_same)
            done = start + T[i, j]
            if i < n - 1 and j - caps[i] - 1 >= 0:
                done = np.maximum(done, D[i + 1, j - caps[i] - 1])
            D[i, j] = done
    last = D[n - 1]
    return (n_parts - warmup) / (last[-1] - last[warmup - 1])


@pytest.mark.parametrize(
    ("rates", "caps", "f", "r"),
    [
        ([1.0, 1.0], [0], None, None),
        ([1.0, 1.5, 0.8], [1, 0], None, None),
        ([1.0, 1.2], [2], [0.1, 0.3], [1.0, 0.5]),
        ([1.0, 2.0, 1.5], [0, 2], [0.1, 0.2, 0.05], [1.0, 0.5, 2.0]),
        ([0.9, 1.3, 1.1, 1.0], [2, 1, 0], [0.02, 0.05, 0.1, 0.01], [0.5, 1.0, 0.3, 2.0]),
    ],
)
def test_against_monte_carlo(rates, caps, f, r) -> None:
    est = simulate_bas(rates, caps, f, r, n_parts=3000, n_reps=64, seed=12345, warmup=300)
    mean = est.mean()
    se = est.std(ddof=1) / np.sqrt(len(est))
    exact = exact_throughput(rates, caps, f, r)
    assert abs(mean - exact) < 4.0 * se, (mean, se, exact)
    assert abs(mean - exact) < 0.01 * exact, (mean, se, exact)


ERLANG_CASES = [
    ([1.0, 1.0], [0], None, None, [4, 4]),
    ([1.0, 1.5, 0.8], [1, 0], None, None, [2, 9, 4]),
    ([1.0, 1.2], [2], [0.1, 0.3], [1.0, 0.5], [3, 1]),
    ([0.9, 1.3, 1.1], [2, 1], [0.02, 0.05, 0.1], [0.5, 1.0, 0.3], [4, 2, 5]),
]


@pytest.mark.parametrize(("rates", "caps", "f", "r", "k"), ERLANG_CASES)
def test_erlang_lines_against_monte_carlo(rates, caps, f, r, k) -> None:
    est = simulate_bas(rates, caps, f, r, n_parts=3000, n_reps=64, seed=54321, warmup=300, phases=k)
    mean = est.mean()
    se = est.std(ddof=1) / np.sqrt(len(est))
    exact = exact_throughput(rates, caps, f, r, phases=k)
    assert abs(mean - exact) < 4.0 * se, (mean, se, exact)
    assert abs(mean - exact) < 0.01 * exact, (mean, se, exact)


def test_one_phase_is_the_exponential_chain() -> None:
    args = ([0.9, 1.3, 1.1, 1.0], [2, 1, 0], [0.02, 0.05, 0.1, 0.01], [0.5, 1.0, 0.3, 2.0])
    assert exact_throughput(*args, phases=[1, 1, 1, 1]) == exact_throughput(*args)
    assert state_count(*args, phases=[1, 1, 1, 1]) == state_count(*args)


@pytest.mark.parametrize(("mu", "f", "r", "k"), [(1.0, 0.1, 1.0, 3), (2.0, 1.5, 0.25, 7)])
def test_single_erlang_station_with_failures(mu, f, r, k) -> None:
    # Busy-time failures: Poisson(f / mu) failures per part on average whatever the law.
    assert exact_throughput([mu], [], [f], [r], [k]) == pytest.approx(mu * r / (r + f), rel=1e-11)
    # Phases add states: k busy and k down phases.
    assert state_count([mu], [], [f], [r], [k]) == 2 * k


def test_less_variable_service_raises_throughput() -> None:
    """Less variability, less blocking and starving: throughput rises with the phases."""
    ths = [exact_throughput([1.0, 1.0, 1.0], [1, 1], phases=[k] * 3) for k in (1, 2, 4, 8)]
    assert all(a < b for a, b in itertools.pairwise(ths)), ths
    assert ths[-1] < 1.0


@pytest.mark.parametrize("phases", [[0, 1], [1], [1.5, 2]])
def test_invalid_phases(phases) -> None:
    with pytest.raises(ValueError, match="phases"):
        exact_throughput([1.0, 1.0], [1], phases=phases)
