"""Controller modes: closed applies every decision, advisory waits for an approval, manual
never applies; the switch into closed is bumpless. Also: the exact method in the loop, the warm
start, locked stations, JSON decisions and the model's line check.

A small surrogate with random weights stands in for a trained one: these tests are about who
applies what, not about how good the setpoints are.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from opthelpers import FakeClock, LineRun, Recorder, assert_versions_increase, small_surrogate

import linetwin.optimizer.controller as controller_module
from linetwin.models.surrogate import Surrogate
from linetwin.optimizer.controller import Controller, Decision, MemoryStore, Mode
from linetwin.optimizer.decision import encode
from linetwin.optimizer.errors import OptimizerError, StateError
from linetwin.optimizer.fast import Solution
from linetwin.twin.params import compile_params
from linetwin.twin.spec import LineSpec

BUDGET = 10.0
CYCLE_S = 300.0


@pytest.fixture(scope="module")
def model(example: LineSpec) -> Surrogate:
    return small_surrogate(example, (16, 16), 2, seed=3)


def max_step(spec: LineSpec) -> np.ndarray:
    out = np.zeros((spec.n_stations, 2))
    for i, st in enumerate(spec.stations):
        for k, sp in enumerate((st.setpoints.speed, st.setpoints.temperature)):
            if sp is not None:
                out[i, k] = sp.max_step
    return out


class Setup:
    """A controller on a one-scenario twin; `apply` records and forwards to the twin."""

    def __init__(self, spec: LineSpec, model: Surrogate, mode: Mode, **kw: object) -> None:
        self.spec = spec
        self.run = LineRun(spec, 5)
        self.apply = Recorder(self.run.twin.set_setpoints)
        self.store = MemoryStore()
        self.clock = FakeClock()
        self.ctrl = Controller(
            spec,
            model,
            self.store,
            mode=mode,
            budget_s=BUDGET,
            apply=self.apply,
            clock=self.clock,
            **kw,
        )
        self.step = max_step(spec)
        self.nominal = np.nan_to_num(compile_params(spec).nominal)

    def cycle(self, age: float | None = None) -> Decision:
        self.clock.t += CYCLE_S
        snap, recent = self.run.step(CYCLE_S)
        return self.ctrl.cycle(snap, recent, None if age is None else self.clock() - age)

    @property
    def running(self) -> np.ndarray:
        return self.run.twin.setpoints[0]


def test_closed_mode_applies_every_decision(example: LineSpec, model: Surrogate) -> None:
    s = Setup(example, model, Mode.CLOSED)
    decisions = []
    for k in range(4):
        before = s.running
        d = s.cycle(age=1000.0 if k == 2 else None)  # one fallback among them
        decisions.append(d)
        assert d.applied and d.mode is Mode.CLOSED and s.ctrl.pending is None
        assert len(s.apply.calls) == k + 1
        np.testing.assert_array_equal(s.apply.calls[-1], d.setpoints)
        np.testing.assert_array_equal(s.running, d.setpoints)  # the line runs it
        assert np.all(np.abs(d.setpoints - before) <= s.step + 1e-9)
    assert [d.fallback for d in decisions] == [False, False, True, False]
    assert not np.array_equal(decisions[-1].setpoints, s.nominal)  # it did move the line
    with pytest.raises(OptimizerError):
        s.ctrl.approve(decisions[-1].id)
    assert_versions_increase(s.store)


def test_advisory_mode_waits_for_approval(example: LineSpec, model: Surrogate) -> None:
    s = Setup(example, model, Mode.ADVISORY)
    first = s.cycle()
    assert not first.applied and first.mode is Mode.ADVISORY and not first.fallback
    assert s.ctrl.pending is first and s.apply.calls == []
    np.testing.assert_array_equal(s.running, s.nominal)  # nothing reached the line
    second = s.cycle()
    if second.version == 0:  # the same vector again: not published, the first stays pending
        np.testing.assert_array_equal(second.setpoints, first.setpoints)
        assert s.ctrl.pending is first and s.apply.calls == []
        second = first
    else:
        assert s.ctrl.pending is second and s.apply.calls == []
        with pytest.raises(OptimizerError):
            s.ctrl.approve(first.id)  # superseded by the second
    with pytest.raises(StateError, match="not the pending one"):
        s.ctrl.approve("not-a-decision")
    running = s.running
    approved = s.ctrl.approve(second.id, running)
    assert approved.applied and approved.reasons[-1] == "approved" and not approved.fallback
    assert approved.id != second.id and approved.version == second.version + 1
    assert s.store.latest() is approved and s.ctrl.pending is None
    assert len(s.apply.calls) == 1
    np.testing.assert_array_equal(s.apply.calls[0], approved.setpoints)
    np.testing.assert_array_equal(s.running, approved.setpoints)
    np.testing.assert_array_equal(approved.setpoints, second.setpoints)
    assert np.all(np.abs(approved.setpoints - running) <= s.step + 1e-9)
    assert not np.array_equal(approved.setpoints, running)
    with pytest.raises(OptimizerError):
        s.ctrl.approve(second.id)  # only once
    assert len(s.apply.calls) == 1
    assert_versions_increase(s.store)


def test_manual_mode_never_applies(example: LineSpec, model: Surrogate) -> None:
    s = Setup(example, model, Mode.MANUAL)
    decisions = [s.cycle() for _ in range(3)]
    assert all(not d.applied and d.mode is Mode.MANUAL for d in decisions)
    assert not any(d.fallback for d in decisions)
    assert s.apply.calls == [] and s.ctrl.pending is None
    np.testing.assert_array_equal(s.running, s.nominal)
    with pytest.raises(OptimizerError):
        s.ctrl.approve(decisions[-1].id)
    assert_versions_increase(s.store)


@pytest.mark.parametrize("first", ["solved", "fallback"])
def test_switching_into_closed_is_bumpless(example: LineSpec, model: Surrogate, first: str) -> None:
    s = Setup(example, model, Mode.MANUAL)
    for _ in range(2):
        s.cycle()
    # meanwhile the operators move the line by hand, far from the advice
    lp = compile_params(example)
    hand = np.where(lp.present, np.clip(s.nominal - 3 * s.step, lp.lower, lp.upper), 0.0)
    s.run.twin.set_setpoints(hand)
    assert np.any(np.abs(s.ctrl.guard.last_good - hand) > s.step + 1e-9)
    s.ctrl.set_mode(Mode.CLOSED, hand)
    d = s.cycle(age=1000.0 if first == "fallback" else None)
    assert d.mode is Mode.CLOSED and d.applied and d.fallback == (first == "fallback")
    assert np.all(np.abs(d.setpoints - hand) <= s.step + 1e-9)
    np.testing.assert_array_equal(s.apply.calls[-1], d.setpoints)
    if first == "fallback":
        np.testing.assert_array_equal(d.setpoints, hand)
    else:
        assert not np.array_equal(d.setpoints, hand)


def test_locked_stations_keep_their_setpoints(example: LineSpec, model: Surrogate) -> None:
    s = Setup(example, model, Mode.CLOSED, locked=("press", "cure"))
    free = Setup(example, model, Mode.CLOSED)
    for _ in range(3):
        d, f = s.cycle(), free.cycle()
        assert not d.fallback and not f.fallback
    press, cure = example.station_index("press"), example.station_index("cure")
    np.testing.assert_array_equal(s.running[[press, cure]], s.nominal[[press, cure]])
    assert not np.array_equal(free.running[[press, cure]], s.nominal[[press, cure]])
    assert not np.array_equal(s.running, s.nominal)  # the others moved


def test_the_controller_warm_starts_from_its_last_solution(
    example: LineSpec, model: Surrogate, monkeypatch: pytest.MonkeyPatch
) -> None:
    warm: list[np.ndarray | None] = []
    answers: list[Solution] = []
    original = controller_module.solve_fast

    def spy(*args: object, **kwargs: object) -> Solution:
        w = kwargs.get("warm")
        warm.append(None if w is None else np.array(w, copy=True))
        answers.append(original(*args, **kwargs))  # type: ignore[arg-type]
        return answers[-1]

    monkeypatch.setattr(controller_module, "solve_fast", spy)
    s = Setup(example, model, Mode.CLOSED)
    for _ in range(3):
        assert not s.cycle().fallback
    assert len(warm) == 3 and warm[0] is None
    np.testing.assert_array_equal(warm[1], answers[0].setpoints)
    np.testing.assert_array_equal(warm[2], answers[1].setpoints)


def test_the_exact_method_runs_in_the_loop(two: LineSpec) -> None:
    model = small_surrogate(two, (8, 8), 2, seed=2)
    s = Setup(two, model, Mode.CLOSED, exact=True)
    d = s.cycle()
    assert not d.fallback and d.status == "optimal"
    assert d.gap is not None and d.gap <= 1e-4
    assert d.target is not None and d.timings["solving_s"] > 0


def test_decisions_are_plain_json(example: LineSpec, model: Surrogate) -> None:
    s = Setup(example, model, Mode.ADVISORY)
    good, stale = s.cycle(), s.cycle(age=1000.0)
    for d in (good, stale):
        data = json.loads(json.dumps(encode(d, example)))
        assert data["version"] == d.version and data["mode"] == "advisory"
        assert data["reasons"] == list(d.reasons) and data["fallback"] == d.fallback
        assert set(data["setpoints"]) == {st.name for st in example.stations}
        assert set(data["setpoints"]["cure"]) == {"speed", "temperature"}
        assert set(data["setpoints"]["press"]) == {"speed"}
        assert data["setpoints"]["cure"]["temperature"] == d.setpoints[6, 1]
    assert json.loads(json.dumps(encode(stale, example)))["target"] is None
    data = encode(good, example)
    assert data["target"] is not None and data["predicted"]["profit_per_hour"]["std"] >= 0


def test_a_model_of_another_line_is_refused(example: LineSpec, two: LineSpec) -> None:
    with pytest.raises(OptimizerError, match="another line"):
        Controller(example, small_surrogate(two), MemoryStore())
