"""The steady-target hold (optimizer/steady.py) and the Objective's move-test fields.

Property tests (hypothesis): the hold moves its target only when the paired gain's lower bound,
computed here independently from the ensemble members, beats the minimum gain, both over the
held target and over what the plant runs; otherwise the held target stays exactly as it was.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from statistics import NormalDist

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opthelpers import plausible_inputs, small_surrogate

from linetwin.models.surrogate import Surrogate
from linetwin.optimizer.errors import ProblemError
from linetwin.optimizer.problem import MOVE_MIN_GAIN_PER_HOUR, MOVE_SIGNIFICANCE, Objective
from linetwin.optimizer.steady import (
    MAX_STATES,
    HoldSummary,
    SteadyHold,
    judge,
    paired_gain,
    unchanged,
)
from linetwin.twin.spec import LineSpec

PROPERTY = settings(
    max_examples=150,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


def lower_bound(new: np.ndarray, old: np.ndarray, scale: float, alpha: float) -> float:
    """The paired gain's lower one-sided bound at level `alpha`, written out."""
    d = new - old
    sd = math.sqrt(float(np.mean((d - d.mean()) ** 2))) * scale
    return float(d.mean()) - NormalDist().inv_cdf(1 - alpha) * sd


members = st.integers(2, 8).flatmap(
    lambda e: st.lists(st.floats(-50.0, 50.0), min_size=e, max_size=e).map(np.array)
)


@PROPERTY
@given(
    data=st.data(),
    base=st.floats(100.0, 600.0),
    min_gain=st.floats(0.0, 20.0),
    alpha=st.sampled_from([0.01, 0.05, 0.1, 0.25, 0.5]),
    scale=st.floats(0.5, 3.0),
)
def test_judge_moves_only_for_a_significant_gain(
    data: st.DataObject, base: float, min_gain: float, alpha: float, scale: float
) -> None:
    e = data.draw(st.integers(2, 8), label="members")
    draw = lambda label: np.array(  # noqa: E731
        data.draw(st.lists(st.floats(-60.0, 60.0), min_size=e, max_size=e), label=label)
    )
    running = base + draw("running")
    candidate = base + draw("candidate")
    held = None if data.draw(st.booleans(), label="no held") else base + draw("held")
    which, summary = judge(
        running,
        held,
        candidate,
        scale=scale,
        min_gain_per_hour=min_gain,
        significance=alpha,
    )
    over_running = lower_bound(candidate, running, scale, alpha)
    over_held = over_running if held is None else lower_bound(candidate, held, scale, alpha)
    significant = over_held > min_gain + 1e-9 and over_running > min_gain + 1e-9
    not_significant = over_held < min_gain - 1e-9 or over_running < min_gain - 1e-9
    if significant:
        assert which == "candidate" and summary.moved and summary.why == "significant_gain"
    if not_significant:
        assert which != "candidate" and not summary.moved
        if held is not None and over_held < min_gain - 1e-9:
            assert which == "held"  # hysteresis: the held target stays
    if held is None and which != "candidate":
        assert which == "running"  # nothing held: stay where the plant is
    assert summary.gain.low == pytest.approx(over_held, abs=1e-9)
    assert summary.running_gain.low == pytest.approx(over_running, abs=1e-9)
    assert summary.gain.low <= summary.gain.mean <= summary.gain.high  # type: ignore[operator]
    assert summary.min_gain_per_hour == min_gain and summary.significance == alpha


@PROPERTY
@given(members=members, shift=st.floats(-5.0, 5.0), min_gain=st.floats(0.0, 10.0))
def test_the_same_point_never_moves_and_the_test_off_always_moves(
    members: np.ndarray, shift: float, min_gain: float
) -> None:
    same = judge(members + shift, members, members, scale=1.0, min_gain_per_hour=min_gain,
                 significance=0.05)  # fmt: skip
    assert same[0] == "held" and not same[1].moved and same[1].gain.mean == 0.0
    off = judge(members, members, members - 100.0, scale=1.0, min_gain_per_hour=min_gain,
                significance=1.0)  # fmt: skip
    assert off[0] == "candidate" and off[1].why == "test_off" and off[1].gain.low is None


def test_a_running_point_that_breaks_a_cap_is_left_for_the_candidate() -> None:
    m = np.array([100.0, 101.0, 99.0])
    which, summary = judge(m, m, m, scale=1.0, min_gain_per_hour=5.0, significance=0.1,
                           running_ok=False)  # fmt: skip
    assert which == "candidate" and summary.why == "running_breaks_cap"


def test_the_summary_survives_its_json() -> None:
    m = np.array([100.0, 104.0, 99.0, 101.0])
    for alpha in (0.1, 1.0):
        _which, summary = judge(m, m - 3.0, m + 8.0, scale=1.5, min_gain_per_hour=2.0,
                                significance=alpha)  # fmt: skip
        summary = replace(summary, running_gain=replace(summary.running_gain, high=None))
        back = HoldSummary.from_json(json.loads(json.dumps(summary.to_json())))
        assert back == summary


def test_paired_gain_cancels_what_the_members_agree_on() -> None:
    """Members that disagree on the level but agree on the difference: a tight interval."""
    old = np.array([300.0, 400.0, 500.0, 600.0])
    g = paired_gain(old + 10.0, old, 1.0, 0.05)
    assert g.mean == pytest.approx(10.0) and g.low == pytest.approx(10.0)
    unpaired_sd = float(np.std(old + 10.0))  # what an unpaired comparison would see
    assert unpaired_sd > 100.0


# -- the hold over a real (random-weight) surrogate ----------------------------------------


@pytest.fixture(scope="module")
def model(example: LineSpec) -> Surrogate:
    return small_surrogate(example, (16, 16), 4, seed=3)


@PROPERTY
@given(
    seed=st.integers(0, 10_000),
    cycles=st.integers(2, 6),
    min_gain=st.sampled_from([0.0, 1.0, 5.0, 20.0]),
    alpha=st.sampled_from([0.05, 0.1, 0.3]),
    window=st.sampled_from([0.0, 150.0, 900.0]),
)
def test_a_held_target_moves_only_for_a_significant_gain(
    example: LineSpec,
    model: Surrogate,
    seed: int,
    cycles: int,
    min_gain: float,
    alpha: float,
    window: float,
) -> None:
    """Over cycles of random states and candidates (one a line minute), the target changes
    only when the candidate's paired gain (members of `model.predict` at each state of the
    last `window` line seconds, scaled as the controller scales them) beats the minimum gain
    over both the held target and the running setpoints."""
    rng = np.random.default_rng(seed)
    schema = model.schema
    objective = replace(
        Objective.from_economics(example.economics),
        move_min_gain_per_hour=min_gain,
        move_significance=alpha,
    )
    w = objective.weights(schema.n_outputs)
    scale = float(np.mean(model.band_scale[:3]))
    hold = SteadyHold(window)
    seen: list[tuple[float, np.ndarray]] = []
    for c in range(cycles):
        state, xs = plausible_inputs(schema, 2, rng)
        seen.append((60.0 * c, state[0]))
        recent = np.array([s for t, s in seen if t >= 60.0 * c - window])
        running, candidate = xs[0], xs[1]
        if hold.target is not None and rng.random() < 0.3:  # the plant reached the target
            running = hold.target.copy()
        held = None if hold.target is None else hold.target.copy()
        verdict = hold.decide(model, objective, state[0], running, candidate, time_s=60.0 * c)
        rows = [running, candidate] + ([held] if held is not None else [])
        profit = np.concatenate(  # (E * states, rows): members and states, paired
            [model.predict(s[None], np.array(rows)).members @ w for s in recent]
        )
        over_running = lower_bound(profit[:, 1], profit[:, 0], scale, alpha)
        over_held = (
            over_running if held is None else lower_bound(profit[:, 1], profit[:, 2], scale, alpha)
        )
        if verdict.summary.moved:
            assert over_held > min_gain and over_running > min_gain
            np.testing.assert_array_equal(verdict.target, candidate)
        else:
            assert min(over_held, over_running) <= min_gain + 1e-9
            expected = running if held is None or verdict.summary.why == "stopped" else held
            np.testing.assert_array_equal(verdict.target, expected)
        np.testing.assert_array_equal(hold.target, verdict.target)


def test_a_held_target_outside_the_envelope_or_a_cap_is_dropped(
    example: LineSpec, model: Surrogate
) -> None:
    schema = model.schema
    state, xs = plausible_inputs(schema, 3, np.random.default_rng(0))
    objective = replace(Objective.from_economics(example.economics), move_min_gain_per_hour=1e9)
    hold = SteadyHold()
    hold.target = xs[2].copy()
    v = hold.decide(model, objective, state[0], xs[0], xs[1])
    assert v.summary.dropped is None and not v.summary.moved
    np.testing.assert_array_equal(v.target, xs[2])  # no gain beats 1e9 /h: held
    strict = small_surrogate(example, (16, 16), 4, seed=3, threshold=-1.0)  # the same, no envelope
    v = hold.decide(strict, objective, state[0], xs[0], xs[1])
    assert v.summary.dropped == "out_of_envelope"
    np.testing.assert_array_equal(v.target, xs[0])  # judged over the running point: stays
    hold.target = xs[2].copy()
    capped = replace(objective, energy_cap_kwh_per_hour=1e-3)
    v = hold.decide(model, capped, state[0], xs[0], xs[1])
    assert v.summary.dropped == "breaks_cap" and v.summary.why == "running_breaks_cap"
    hold.target = xs[2].copy()
    v = hold.decide(model, objective, state[0], xs[0], xs[1], locked=("press",))
    assert v.summary.dropped == "locked"


# -- the Objective's fields ------------------------------------------------------------------


def test_objective_defaults_and_validation(example: LineSpec) -> None:
    o = Objective.from_economics(example.economics)
    assert o.move_min_gain_per_hour == MOVE_MIN_GAIN_PER_HOUR > 0
    assert o.move_significance == MOVE_SIGNIFICANCE and 0 < MOVE_SIGNIFICANCE < 0.5
    assert replace(o, move_significance=1.0).move_significance == 1.0  # the test off
    for field, bad in [
        ("move_min_gain_per_hour", -1.0),
        ("move_min_gain_per_hour", math.nan),
        ("move_min_gain_per_hour", math.inf),
        ("move_min_gain_per_hour", "2"),
        ("move_significance", 0.0),
        ("move_significance", 1.5),
        ("move_significance", math.nan),
        ("move_significance", True),
    ]:
        with pytest.raises(ProblemError, match=f"^objective.{field} .*{bad!r}"):
            replace(o, **{field: bad})


# -- publish only changes ----------------------------------------------------------------------


@dataclass(frozen=True)
class Published:
    mode: str
    setpoints: np.ndarray
    fallback: bool
    reasons: tuple[str, ...]


@PROPERTY
@given(
    values=st.lists(st.sampled_from([0.5, 1.0, 1.2, 80.0]), min_size=4, max_size=4),
    change=st.sampled_from(["none", "value", "mode", "fallback", "reason", "ok_reason"]),
)
def test_an_unchanged_vector_is_not_published_again(values: list[float], change: str) -> None:
    last = Published("closed", np.array(values).reshape(2, 2), True, ("stale_data",))
    sp = last.setpoints.copy()
    new = {
        "none": replace(last, setpoints=sp),
        "value": replace(last, setpoints=sp + np.array([[0.0, 0.0], [0.0, 0.01]])),
        "mode": replace(last, mode="advisory", setpoints=sp),
        "fallback": replace(last, fallback=False, reasons=("ok",), setpoints=sp),
        "reason": replace(last, reasons=("model_failed",), setpoints=sp),
        "ok_reason": replace(last, reasons=("ramped",), setpoints=sp),
    }[change]
    assert unchanged(last, new) == (change == "none")
    assert not unchanged(None, new)
    ok = replace(last, fallback=False, reasons=("ok",))
    assert unchanged(ok, replace(ok, reasons=("ramped",), setpoints=sp))  # why, not what


def test_the_state_window_is_bounded_and_restarts_when_time_goes_back(
    example: LineSpec, model: Surrogate
) -> None:
    schema = model.schema
    state, xs = plausible_inputs(schema, 2, np.random.default_rng(5))
    objective = Objective.from_economics(example.economics)
    hold = SteadyHold(window_s=900.0)
    for t in range(100):  # a cycle a line second: the count bounds the window
        hold.decide(model, objective, state[0], xs[0], xs[1], time_s=float(t))
    assert len(hold._states) == MAX_STATES
    hold.decide(model, objective, state[0], xs[0], xs[1], time_s=5000.0)
    assert len(hold._states) == 1  # the others are older than the window
    hold.decide(model, objective, state[0], xs[0], xs[1], time_s=10.0)
    assert len(hold._states) == 1  # time went back: a new run
