"""The setpoint guard over arbitrary proposals and running values (hypothesis): what leaves is
finite, inside the limits, rate limited, on the grid or rounded to the resolution (exact
decimals), outside the deadband; unusable proposals and upstream failures hold the
last-known-good setpoints and say why."""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from linetwin.optimizer.guard import FALLBACKS, Reason, SetpointGuard
from linetwin.twin.params import compile_params
from linetwin.twin.spec import LineSpec

SPECIAL = (math.nan, math.inf, -math.inf, 1e308, -1e308, 1e12, -1e12, 0.0, -0.0)
WRONG_SHAPES = ((), (0, 2), (1,), (2, 3), (20,), (10, 1), (10, 3), (11, 2), (9, 2), (1, 10, 2))
UPSTREAM = (
    Reason.STALE_DATA,
    Reason.BAD_DATA,
    Reason.MODEL_FAILED,
    Reason.OUT_OF_ENVELOPE,
    Reason.SOLVER_FAILED,
    Reason.SOLVER_TIMEOUT,
)
PROPERTY = settings(
    max_examples=250,
    deadline=None,
    database=None,
    derandomize=True,  # the same examples on every run: no flaky CI
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@dataclass(frozen=True)
class Limits:
    """A line's setpoint limits read from the spec, independently of the guard."""

    present: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    nominal: np.ndarray
    max_step: np.ndarray
    resolution: np.ndarray
    grid: np.ndarray

    @classmethod
    def of(cls, spec: LineSpec) -> Limits:
        lp = compile_params(spec)
        shape = lp.present.shape
        step, res, grid = np.zeros(shape), np.zeros(shape), np.zeros(shape)
        for i, s in enumerate(spec.stations):
            for k, sp in enumerate((s.setpoints.speed, s.setpoints.temperature)):
                if sp is not None:
                    step[i, k], res[i, k], grid[i, k] = sp.max_step, sp.resolution, sp.grid or 0
        return cls(
            lp.present,
            np.nan_to_num(lp.lower),
            np.nan_to_num(lp.upper),
            np.nan_to_num(lp.nominal),
            step,
            res,
            grid,
        )

    def sanitised(self, values: np.ndarray, fallback: np.ndarray) -> np.ndarray:
        v = np.where(np.isfinite(values), values, fallback)
        return np.where(self.present, np.clip(v, self.lower, self.upper), 0.0)

    def lattice(self, values: np.ndarray, toward: np.ndarray) -> np.ndarray:
        """Round each value of a grid-free line to a multiple of its resolution, toward
        `toward`, inside the limits, computed in decimal arithmetic (absent or resolution-free
        setpoints are returned as they are)."""
        out = np.array(values, dtype=float, copy=True)
        for idx in np.ndindex(out.shape):
            res = self.resolution[idx]
            if not self.present[idx] or res == 0 or self.grid[idx] > 0:
                continue
            k = out[idx] / res
            k = math.floor(k + 1e-9) if out[idx] >= toward[idx] else math.ceil(k - 1e-9)
            lo = math.ceil(self.lower[idx] / res - 1e-9)
            hi = math.floor(self.upper[idx] / res + 1e-9)
            out[idx] = float(Decimal(min(max(k, lo), hi)) * Decimal(str(res)))
        return out

    def on_grid(self, values: np.ndarray) -> np.ndarray:
        """Where each value sits on its grid (True where a setpoint has no grid)."""
        g = np.where(self.grid > 0, self.grid, 1.0)
        k = (values - self.lower) / g
        return (self.grid == 0) | (np.abs(k - np.round(k)) < 1e-6)


@st.composite
def values(draw: st.DrawFn, lim: Limits, near: np.ndarray | None = None) -> np.ndarray:
    """A `(n_stations, 2)` array: values inside and outside the limits, small moves from
    `near` (below and above the resolution), and NaN, infinities and huge numbers."""
    base = lim.nominal if near is None else near
    span = np.where(lim.present, lim.upper - lim.lower, 1.0)
    out = np.empty(lim.present.shape)
    for idx in np.ndindex(out.shape):
        kind = draw(st.sampled_from(("inside", "outside", "near", "near", "special")))
        if kind == "inside":
            out[idx] = lim.lower[idx] + draw(st.floats(0.0, 1.0)) * span[idx]
        elif kind == "outside":
            out[idx] = lim.lower[idx] + draw(st.floats(-3.0, 4.0)) * span[idx]
        elif kind == "near":
            unit = max(lim.resolution[idx], lim.max_step[idx] / 4, 1e-3)
            out[idx] = base[idx] + draw(st.floats(-6.0, 6.0)) * unit
        else:
            out[idx] = draw(st.sampled_from(SPECIAL))
    return out


@st.composite
def running_values(draw: st.DrawFn, lim: Limits) -> np.ndarray | None:
    """What the plant runs: None (the guard's last-known-good), or any array of the shape."""
    if draw(st.booleans()):
        return None
    if draw(st.booleans()):  # legal running values, on the grid
        u = np.array(
            draw(
                st.lists(st.floats(0.0, 1.0), min_size=lim.present.size, max_size=lim.present.size)
            )
        ).reshape(lim.present.shape)
        v = lim.lower + u * (lim.upper - lim.lower)
        g = np.where(lim.grid > 0, lim.grid, 1.0)
        on = lim.lower + np.floor((v - lim.lower) / g) * g
        return np.where(lim.present, np.where(lim.grid > 0, on, v), 0.0)
    return draw(values(lim))


def reference(lim: Limits, now: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, set[Reason]]:
    """What the guard must publish for a finite proposal on a line without grids: the target
    rounded to the resolution toward the running value, one rate-limited move toward it,
    rounded again toward the running value, no move away from the target or below the
    resolution."""
    clipped = np.where(lim.present, np.clip(p, lim.lower, lim.upper), 0.0)
    target = lim.lattice(clipped, now)
    reasons = set()
    if np.any((lim.resolution > 0) & (target == now) & (np.abs(clipped - now) > 1e-9)):
        reasons.add(Reason.DEADBAND)  # the rounding took the whole move away
    if np.any(lim.present & ((p < lim.lower) | (p > lim.upper))):
        reasons.add(Reason.CLAMPED)
    move = np.clip(target - now, -lim.max_step, lim.max_step)
    if np.any(np.abs(move - (target - now)) > 1e-12):
        reasons.add(Reason.RAMPED)
    out = lim.lattice(now + move, now)
    away = (out - now) * (target - now) < 0  # from an off-resolution running value
    out = np.where(away | (np.abs(out - now) > lim.max_step + 1e-12), now, out)
    small = (np.abs(out - now) < lim.resolution) & (out != now)
    if small.any():
        reasons.add(Reason.DEADBAND)
    return np.where(small, now, out), reasons


def assert_exact_decimals(lim: Limits, values: np.ndarray, where: np.ndarray) -> None:
    """Each value `where` True of a gridded or resolved setpoint reads back as a decimal with
    no more places than its grid (and minimum) or resolution: no binary noise."""
    has = where & lim.present & ((lim.grid > 0) | (lim.resolution > 0))
    for idx in zip(*np.nonzero(has), strict=True):
        step = lim.grid[idx] or lim.resolution[idx]
        origin = lim.lower[idx] if lim.grid[idx] else 0.0
        places = max(-int(Decimal(str(x)).as_tuple().exponent) for x in (step, origin))
        written = Decimal(repr(float(values[idx])))
        assert -int(written.as_tuple().exponent) <= max(places, 1), (idx, values[idx])


def assert_safe(lim: Limits, sp: np.ndarray) -> None:
    assert sp.shape == lim.present.shape
    assert np.isfinite(sp).all()
    assert np.all(sp[~lim.present] == 0.0)
    assert np.all(sp[lim.present] >= lim.lower[lim.present])
    assert np.all(sp[lim.present] <= lim.upper[lim.present])


class Line(tuple):  # (spec, limits) with a short repr for hypothesis reports
    def __repr__(self) -> str:
        return f"<line {self[0].name}>"


@pytest.fixture(scope="module", params=["example", "gridded"])
def line(request: pytest.FixtureRequest) -> tuple[LineSpec, Limits]:
    spec = request.getfixturevalue(request.param)
    return Line((spec, Limits.of(spec)))


def test_the_lines_exercise_what_the_properties_claim(example: LineSpec, gridded: LineSpec) -> None:
    ex, gr = Limits.of(example), Limits.of(gridded)
    assert (~ex.present).any() and (ex.grid == 0).all() and (ex.resolution > 0).any()
    assert (gr.grid > 0).sum() == 4 and (~gr.present).any()
    assert (gr.grid == gr.max_step).any()  # a grid step as large as one cycle's move
    # a grid whose maximum is not on it, and a setpoint without resolution
    assert not gr.on_grid(gr.upper)[2, 0] and (gr.resolution[gr.present] == 0).any()


@PROPERTY
@given(data=st.data())
def test_any_proposal_gives_safe_setpoints_or_holds_last_good(
    line: tuple[LineSpec, Limits], data: st.DataObject
) -> None:
    spec, lim = line
    start = data.draw(st.none() | values(lim), label="last_good")
    guard = SetpointGuard(spec, start)
    assert_safe(lim, guard.last_good)
    assert lim.on_grid(guard.last_good).all()
    if start is not None:
        np.testing.assert_allclose(
            guard.last_good,
            lim.sanitised(start, lim.lower),
            # snapped down onto the grid or the resolution at most one step
            atol=np.max(np.maximum(lim.grid, lim.resolution)) + 1e-9,
        )
    for _ in range(data.draw(st.integers(1, 4), label="cycles")):
        before = guard.last_good.copy()
        running = data.draw(running_values(lim), label="running")
        now = before if running is None else lim.sanitised(running, before)
        bad = data.draw(st.integers(0, 5), label="bad") == 0
        if bad:
            proposal = data.draw(
                st.sampled_from(WRONG_SHAPES).map(lambda s: np.full(s, 1.0))
                | values(lim).filter(lambda v: not np.isfinite(v[lim.present]).all())
                | st.none(),
                label="bad proposal",
            )
        else:
            proposal = data.draw(values(lim, now), label="proposal")
            # an absent setpoint may hold anything: it is not sent
            proposal = np.where(lim.present, proposal, data.draw(st.sampled_from(SPECIAL)))
            bad = not np.isfinite(proposal[lim.present]).all()
        result = guard.check(proposal, running)
        assert_safe(lim, result.setpoints)
        if bad:
            assert result.fallback and result.reasons == (Reason.BAD_PROPOSAL,)
            assert result.target is None
            np.testing.assert_array_equal(guard.last_good, before)  # unchanged on fallback
            # back toward the last-known-good, never a jump from what the plant runs
            out = result.setpoints
            assert np.all(np.abs(out - now) <= lim.max_step + 1e-9)
            assert ((out - now) * (before - now) >= 0).all()
            if running is None:
                np.testing.assert_array_equal(out, before)
            if (lim.grid == 0).all():
                expected, _ = reference(lim, now, before)
                np.testing.assert_array_equal(out, expected)
            continue
        assert not result.fallback and result.target is not None
        np.testing.assert_array_equal(guard.last_good, result.setpoints)
        assert result.setpoints is not guard.last_good  # a copy: callers cannot change it
        out = result.setpoints
        assert np.all(np.abs(out - now) <= lim.max_step + 1e-9)
        moved = out != now
        assert np.all(np.abs(out - now)[moved] >= lim.resolution[moved] - 1e-12)
        assert_safe(lim, result.target)
        # on the grid, or at a maximum that is not (see the xfail test below)
        assert (lim.on_grid(result.target) | (result.target == lim.upper)).all()
        # a move never goes away from the target (but see the xfail test below for grid steps
        # larger than one cycle's move)
        toward = (out - now) * (result.target - now) >= 0
        assert toward[lim.grid <= lim.max_step].all()
        on = lim.on_grid(now)
        assert lim.on_grid(out)[on].all()  # from a grid value, the move stays on the grid
        assert_exact_decimals(lim, out, moved)  # every move lands on a clean decimal
        assert_exact_decimals(lim, result.target, lim.present)
        reasons = set(result.reasons)
        assert (Reason.CLAMPED in reasons) == bool(
            np.any(lim.present & ((proposal < lim.lower) | (proposal > lim.upper)))
        )
        assert (Reason.OK in reasons) == (result.reasons == (Reason.OK,))
        assert len(result.reasons) == len(reasons) and not reasons & FALLBACKS
        if (lim.grid == 0).all():
            # exactly the decimal rounding: no 1.2000000000000002 reaches the plant
            expected, why = reference(lim, now, proposal)
            np.testing.assert_array_equal(out, expected)
            clipped = np.where(lim.present, np.clip(proposal, lim.lower, lim.upper), 0.0)
            np.testing.assert_array_equal(result.target, lim.lattice(clipped, now))
            assert reasons - {Reason.OK} == why


def test_published_values_are_rounded_to_the_resolution(example: LineSpec) -> None:
    """Wash speed (resolution 0.005, max_step 0.1) ramping up from 1.0: 1.1, then 1.2 exactly
    (not the 1.2000000000000002 of adding 0.1 twice); a target off the resolution is rounded
    toward the running value."""
    lim = Limits.of(example)
    guard = SetpointGuard(example)
    assert lim.resolution[3, 0] == 0.005 and lim.max_step[3, 0] == 0.1
    running = lim.nominal.copy()
    p = lim.nominal.copy()
    p[3, 0] = 1.2345
    seen = []
    for _ in range(4):
        result = guard.check(p, running)
        running = result.setpoints
        seen.append(repr(float(running[3, 0])))
    assert seen == ["1.1", "1.2", "1.23", "1.23"]
    assert result.target is not None and repr(float(result.target[3, 0])) == "1.23"


def test_wrong_shapes_and_non_finite_proposals_fall_back(example: LineSpec) -> None:
    lim = Limits.of(example)
    guard = SetpointGuard(example)
    first = guard.check(lim.nominal + 0.04 * lim.present)  # one accepted move
    assert not first.fallback
    good = guard.last_good.copy()
    assert not np.array_equal(good, lim.nominal)
    bad: list[object] = [None, 1.0, np.zeros(20), np.zeros((10, 3)), np.zeros((1, 10, 2))]
    for value in (math.nan, math.inf, -math.inf):
        p = lim.nominal.copy()
        p[6, 1] = value  # cure temperature
        bad.append(p)
    for p in bad:
        result = guard.check(p, lim.nominal)
        assert result.fallback and result.reasons == (Reason.BAD_PROPOSAL,), p
        np.testing.assert_array_equal(result.setpoints, good)
        np.testing.assert_array_equal(guard.last_good, good)


def test_non_finite_values_in_absent_slots_are_ignored(example: LineSpec) -> None:
    lim = Limits.of(example)
    guard = SetpointGuard(example)
    p = np.where(lim.present, lim.nominal, math.nan)
    result = guard.check(p)
    assert not result.fallback and result.reasons == (Reason.OK,)
    np.testing.assert_array_equal(result.setpoints, lim.nominal)


@pytest.mark.parametrize("reason", UPSTREAM, ids=str)
def test_each_upstream_failure_holds_last_good_with_its_reason(
    example: LineSpec, reason: Reason
) -> None:
    lim = Limits.of(example)
    guard = SetpointGuard(example)
    # 0.4 of a step, rounded down to the resolution: above every resolution
    d = lim.lattice(lim.nominal + 0.4 * lim.max_step, lim.nominal) - lim.nominal
    guard.check(lim.nominal + d)
    good = guard.last_good.copy()
    np.testing.assert_allclose(good, lim.nominal + d)
    perfectly_fine = lim.nominal + 2 * d
    result = guard.check(perfectly_fine, lim.nominal, failure=reason)
    assert result.fallback and result.reasons == (reason,) and result.target is None
    np.testing.assert_array_equal(result.setpoints, good)
    np.testing.assert_array_equal(guard.last_good, good)
    assert reason in FALLBACKS
    again = guard.check(perfectly_fine, good)  # the next good cycle moves on from there
    assert not again.fallback
    np.testing.assert_allclose(again.setpoints, good + d)


def test_deadband_holds_moves_below_the_resolution(example: LineSpec) -> None:
    lim = Limits.of(example)
    guard = SetpointGuard(example)
    i = 1  # press speed: resolution 0.01, max_step 0.05
    assert lim.resolution[i, 0] == 0.01
    p = lim.nominal.copy()
    p[i, 0] += 0.004
    p[6, 1] += 3.0  # cure temperature: a real move (resolution 0.5)
    result = guard.check(p, lim.nominal)
    assert result.reasons == (Reason.DEADBAND,)
    assert result.setpoints[i, 0] == lim.nominal[i, 0]  # not sent
    assert result.setpoints[6, 1] == lim.nominal[6, 1] + 3.0  # sent
    p[i, 0] = lim.nominal[i, 0] + 0.02
    result = guard.check(p, lim.nominal)
    assert result.reasons == (Reason.OK,) and result.setpoints[i, 0] == p[i, 0]
    # exactly the resolution (0.5 degC, exact in binary) is sent
    assert lim.resolution[6, 1] == 0.5
    p[i, 0] = lim.nominal[i, 0]
    p[6, 1] = lim.nominal[6, 1] + 0.5
    result = guard.check(p, lim.nominal)
    assert result.reasons == (Reason.OK,) and result.setpoints[6, 1] == p[6, 1]
    # a hair less is binary noise around 190.5: published as 190.5 exactly
    p[6, 1] = np.nextafter(lim.nominal[6, 1] + 0.5, 0.0)
    result = guard.check(p, lim.nominal)
    assert result.reasons == (Reason.OK,) and result.setpoints[6, 1] == 190.5
    p[6, 1] = lim.nominal[6, 1] + 0.49  # a real move below the resolution is not sent
    result = guard.check(p, lim.nominal)
    assert result.reasons == (Reason.DEADBAND,) and result.setpoints[6, 1] == lim.nominal[6, 1]


def test_clamped_and_ramped_say_what_happened(example: LineSpec) -> None:
    lim = Limits.of(example)
    guard = SetpointGuard(example)
    p = lim.nominal.copy()
    p[1, 0] = 9.0  # press speed far above its max 1.4: clamped, then ramped by 0.05
    result = guard.check(p, lim.nominal)
    assert result.reasons == (Reason.CLAMPED, Reason.RAMPED)
    assert result.target is not None and result.target[1, 0] == 1.4
    assert result.setpoints[1, 0] == pytest.approx(1.05)
    p[1, 0] = 1.03  # inside the limits, within one step
    assert guard.check(p, lim.nominal).reasons == (Reason.OK,)
    p[1, 0] = 1.3  # inside the limits, beyond one step
    result = guard.check(p, lim.nominal)
    assert result.reasons == (Reason.RAMPED,) and result.setpoints[1, 0] == pytest.approx(1.05)
    p[1, 0] = 0.1  # below the min, within one step of it from the running value
    running = lim.nominal.copy()
    running[1, 0] = 0.62
    result = guard.check(p, running)
    assert result.reasons == (Reason.CLAMPED,) and result.setpoints[1, 0] == 0.6


def test_ramp_follows_the_running_values_not_the_last_proposal(example: LineSpec) -> None:
    lim = Limits.of(example)
    guard = SetpointGuard(example)
    running = lim.nominal.copy()
    running[1, 0] = math.nan  # a NaN running value is read as the last-known-good one
    running[5, 0] = 1e300  # a huge one as its limit
    p = lim.upper.copy()
    result = guard.check(p, running)
    assert result.setpoints[1, 0] == pytest.approx(lim.nominal[1, 0] + 0.05)
    assert result.setpoints[5, 0] == lim.upper[5, 0]


def test_gridded_setpoints_land_on_the_grid(gridded: LineSpec) -> None:
    lim = Limits.of(gridded)
    guard = SetpointGuard(gridded)
    p = lim.nominal.copy()
    p[0, 0] = 1.234  # a: grid 0.1 from 0.5, max_step 0.25 -> 1.2 (rounded toward running)
    p[1, 1] = 157.9  # oven temperature: grid 2.5 from 100, max_step 6 -> 155 (ramped)
    p[2, 0] = 1.5  # c: max 1.5 is off its grid 0.2 from 0.6 -> 1.2 (ramp 0.3, grid)
    result = guard.check(p, lim.nominal)
    assert result.setpoints[0, 0] == pytest.approx(1.2)
    assert result.setpoints[1, 1] == pytest.approx(155.0)
    assert result.setpoints[2, 0] == pytest.approx(1.2)
    assert lim.on_grid(result.setpoints).all()
    # from an off-grid running value, the first move reaches the grid
    running = lim.nominal.copy()
    running[0, 0] = 1.03
    result = guard.check(p, running)
    assert result.setpoints[0, 0] == pytest.approx(1.2)
    running[0, 0], p[0, 0] = 1.03, 0.5
    result = guard.check(p, running)
    assert result.setpoints[0, 0] == pytest.approx(0.8)  # 1.03 - 0.25 = 0.78, up to 0.8


def test_the_target_of_a_gridded_setpoint_is_on_its_grid(gridded: LineSpec) -> None:
    lim = Limits.of(gridded)
    guard = SetpointGuard(gridded)
    running, p = lim.nominal.copy(), lim.nominal.copy()
    running[2, 0], p[2, 0] = 1.5, 1.425  # c runs at its maximum, off the grid
    result = guard.check(p, running)
    assert result.setpoints[2, 0] == pytest.approx(1.4)
    assert result.target is not None and lim.on_grid(result.target).all(), result.target[2]


def test_a_gridded_move_never_goes_away_from_its_target(gridded: LineSpec) -> None:
    lim = Limits.of(gridded)
    guard = SetpointGuard(gridded)
    running, p = lim.nominal.copy(), lim.nominal.copy()
    running[1, 0], p[1, 0] = 1.08, 0.6  # oven speed: grid 0.1, max_step 0.1, runs off-grid
    result = guard.check(p, running)
    assert result.setpoints[1, 0] <= 1.08, result.setpoints[1, 0]


@pytest.mark.parametrize(
    "proposal, running",
    [
        pytest.param([[1.0, 0.0]] * 9 + [[1.0]], None, id="ragged proposal"),
        pytest.param("fast", None, id="text proposal"),
        pytest.param("nominal", np.ones((10, 3)), id="running of the wrong shape"),
    ],
)
def test_malformed_inputs_never_make_the_guard_raise(
    example: LineSpec, proposal: object, running: np.ndarray | None
) -> None:
    lim = Limits.of(example)
    guard = SetpointGuard(example)
    if isinstance(proposal, str) and proposal == "nominal":
        proposal = lim.nominal.copy()
    result = guard.check(proposal, running)  # type: ignore[arg-type]
    assert_safe(lim, result.setpoints)
    if not result.fallback:
        assert np.all(np.abs(result.setpoints - lim.nominal) <= lim.max_step + 1e-9)
    else:
        assert result.reasons == (Reason.BAD_PROPOSAL,)


def test_a_fallback_heads_back_at_the_rate_limit_when_the_plant_moved(example: LineSpec) -> None:
    """An operator set the press far from the last-known-good at the panel; the model then
    fails: the guard heads back one cycle's move at a time, never jumping."""
    lim = Limits.of(example)
    guard = SetpointGuard(example)
    good = guard.last_good.copy()
    running = good.copy()
    running[1, 0] = lim.lower[1, 0]  # press speed, 0.5 below its last-known-good 1.0
    held = guard.check(None, running, failure=Reason.STALE_DATA)  # running came with stale data
    np.testing.assert_array_equal(held.setpoints, good)
    steps = []
    for _ in range(10):
        result = guard.check(None, running, failure=Reason.MODEL_FAILED)
        assert result.fallback and result.reasons == (Reason.MODEL_FAILED,)
        assert np.all(np.abs(result.setpoints - running) <= lim.max_step + 1e-12)
        steps.append(result.setpoints[1, 0])
        running = result.setpoints
    assert steps[0] == pytest.approx(lim.lower[1, 0] + lim.max_step[1, 0])
    np.testing.assert_allclose(running, good)  # back at the last-known-good after 5 cycles
    np.testing.assert_array_equal(guard.last_good, good)


@PROPERTY
@given(data=st.data())
def test_check_many_is_check_on_each_line(
    line: tuple[LineSpec, Limits], data: st.DataObject
) -> None:
    """One batched pass gives, line by line, what a guard of each line's own gives."""
    spec, lim = line
    n = data.draw(st.integers(1, 5), label="lines")
    guards = [SetpointGuard(spec, data.draw(values(lim), label="last_good")) for _ in range(n)]
    batch = SetpointGuard(spec)
    last_good = np.stack([g.last_good for g in guards])
    for _ in range(data.draw(st.integers(1, 3), label="cycles")):
        running = np.stack(
            [
                r if r is not None else g.last_good
                for g, r in zip(
                    guards, [data.draw(running_values(lim)) for _ in guards], strict=True
                )
            ]
        )
        proposals = np.stack([data.draw(values(lim, running[i])) for i in range(n)])
        result = batch.check_many(proposals, running, last_good)
        for i, g in enumerate(guards):
            one = g.check(proposals[i], running[i])
            np.testing.assert_array_equal(result.setpoints[i], one.setpoints)
            assert result.reasons[i] == one.reasons
            assert result.fallback[i] == one.fallback
            if one.target is not None:
                np.testing.assert_array_equal(result.targets[i], one.target)
            np.testing.assert_array_equal(last_good[i], g.last_good)


def test_check_many_refuses_misshapen_batches(example: LineSpec) -> None:
    guard = SetpointGuard(example)
    good = np.zeros((2, 10, 2))
    with pytest.raises(ValueError, match="proposals must be"):
        guard.check_many(np.zeros((10, 2)), good, good.copy())
    with pytest.raises(ValueError, match="setpoints must have shape"):
        guard.check_many(good, np.zeros((2, 9, 2)), good.copy())
