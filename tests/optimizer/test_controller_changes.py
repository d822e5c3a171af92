"""Everything that changes what the plant runs goes through the controller's methods: held
overrides ramp inside the cycle (one publish per cycle), rollback and approval pass the guard,
a caller's record commits with the decision or nothing changes, and `on_publish` hears of
every publish in version order."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from opthelpers import FakeClock, LineRun, Recorder, small_surrogate

from linetwin.models.surrogate import Surrogate
from linetwin.optimizer.controller import Controller
from linetwin.optimizer.decision import Decision, Mode
from linetwin.optimizer.errors import NotHeldError, ProblemError, StateError
from linetwin.optimizer.problem import Objective
from linetwin.optimizer.store import MemoryStore
from linetwin.twin.spec import LineSpec

CYCLE_S = 300.0
STEP = 0.1  # max_step of the two-station line's speeds


@pytest.fixture(scope="module")
def model(two: LineSpec) -> Surrogate:
    return small_surrogate(two, (8, 8), 2, seed=5)


class Plant:
    """A controller of the two-station line on a one-scenario twin; records every publish."""

    def __init__(self, spec: LineSpec, model: Surrogate, mode: Mode) -> None:
        self.run = LineRun(spec, 3)
        self.store = MemoryStore()
        self.clock = FakeClock()
        self.apply = Recorder(self.run.twin.set_setpoints)
        self.heard: list[tuple[int, int]] = []
        self.ctrl: Controller[Decision] = Controller(
            spec,
            model,
            self.store,
            mode=mode,
            budget_s=10.0,
            apply=self.apply,
            clock=self.clock,
            on_publish=lambda d, stored: self.heard.append((d.version, stored.version)),
            plant_setpoints=lambda: self.run.twin.setpoints[0],
        )

    def cycle(self) -> Decision:
        self.clock.t += CYCLE_S
        snap, recent = self.run.step(CYCLE_S)
        return self.ctrl.cycle(snap, recent)

    @property
    def speed_a(self) -> float:
        return float(self.run.twin.setpoints[0, 0, 0])


@pytest.mark.parametrize("mode", [Mode.ADVISORY, Mode.MANUAL, Mode.CLOSED])
def test_a_held_override_ramps_inside_the_cycle(
    two: LineSpec, model: Surrogate, mode: Mode
) -> None:
    p = Plant(two, model, mode)
    p.cycle()
    start = p.speed_a
    target = 1.45 if start < 1.0 else 0.55
    first = p.ctrl.override({"a": {"speed": target}}, line_time_s=1.0)
    assert first.reasons[:2] == ("override", "ramped") and first.applied
    assert p.speed_a == pytest.approx(start + np.sign(target - start) * STEP)
    assert p.ctrl.locked == ("a",) and p.ctrl.ramping and p.ctrl.pending is None
    for _ in range(8):
        before, published = p.speed_a, len(p.store.decisions)
        d = p.cycle()
        # at most one publish per cycle, and one whenever the ramp moved the plant
        assert len(p.store.decisions) == published + (d.version > 0)
        assert d.version > 0 or p.speed_a == before
        assert abs(p.speed_a - before) <= STEP + 1e-9
        if mode is not Mode.CLOSED and d.status == "override":
            assert d.applied and d.reasons[0] == "override"  # the override's step, not advice
        if mode is Mode.CLOSED:
            assert d.applied and "override" in d.reasons
    assert p.speed_a == pytest.approx(target) and not p.ctrl.ramping
    advice = p.cycle()
    assert advice.applied == (mode is Mode.CLOSED)  # advice again once the override arrived
    assert advice.setpoints[0, 0] == pytest.approx(target)  # and it keeps the held value
    if advice.version > 0:  # a vector equal to the last published one is not published again
        assert p.ctrl.pending is (advice if mode is Mode.ADVISORY else None)
    assert p.heard == [(d.version, d.version) for d in p.store.decisions]


def test_release_rollback_and_bad_overrides(two: LineSpec, model: Surrogate) -> None:
    p = Plant(two, model, Mode.MANUAL)
    first = p.cycle()
    with pytest.raises(ProblemError, match="unknown station 'zz'"):
        p.ctrl.override({"zz": {"speed": 1.0}}, line_time_s=0.0)
    with pytest.raises(ProblemError, match="no setpoint 'temperature'"):
        p.ctrl.override({"a": {"temperature": 100.0}}, line_time_s=0.0)
    with pytest.raises(NotHeldError, match="'a'"):
        p.ctrl.release("a")
    assert len(p.store.decisions) == 1 and p.ctrl.held == {}
    p.ctrl.override({"b": {"speed": 0.6}}, line_time_s=0.0)
    seen: list[Any] = []
    held = p.ctrl.release("b", record=lambda old, new: seen.append((old, new)))
    assert held == {} and seen == [({"b": {"speed": 0.6}}, {})] and p.ctrl.locked == ()
    back = p.ctrl.rollback(first.setpoints, line_time_s=2.0)
    assert back.reasons[0] == "rollback" and back.applied and back.line_time_s == 2.0
    assert back.target is not None
    np.testing.assert_allclose(back.target, first.setpoints)
    assert np.all(np.abs(back.setpoints - p.store.decisions[-2].setpoints) <= STEP + 1e-9)


def test_a_failing_record_changes_nothing(two: LineSpec, model: Surrogate) -> None:
    p = Plant(two, model, Mode.ADVISORY)
    pending = p.cycle()
    last_good = p.ctrl.guard.last_good.copy()
    committed: list[str] = []

    class Transaction:
        def __enter__(self) -> None:
            return None

        def __exit__(self, kind: object, *rest: object) -> None:
            committed.append("rolled back" if kind else "committed")

    def fail(*args: object) -> None:
        raise OSError("disk full (injected)")

    for change in (
        lambda: p.ctrl.approve(pending.id, within=Transaction(), record=fail),
        lambda: p.ctrl.override(
            {"a": {"speed": 1.2}}, line_time_s=0.0, within=Transaction(), record=fail
        ),
        lambda: p.ctrl.rollback(
            pending.setpoints, line_time_s=0.0, within=Transaction(), record=fail
        ),
        lambda: p.ctrl.reject(pending.id, record=fail),
        lambda: p.ctrl.set_mode(Mode.CLOSED, record=fail),
        lambda: p.ctrl.set_objective(Objective(1.0, 1.0, 1.0), record=fail),
    ):
        with pytest.raises(OSError, match="injected"):
            change()
    assert committed == ["rolled back"] * 3
    assert p.ctrl.pending is pending and p.ctrl.mode is Mode.ADVISORY and p.ctrl.held == {}
    assert p.ctrl.objective == Objective.from_economics(two.economics)
    np.testing.assert_array_equal(p.ctrl.guard.last_good, last_good)
    assert p.apply.calls == [] and len(p.heard) == 1  # (MemoryStore has no transactions)
    approved: list[tuple[str, str]] = []
    done = p.ctrl.approve(pending.id, record=lambda d, was: approved.append((d.id, was.id)))
    assert approved == [(done.id, pending.id)] and done.applied and p.ctrl.pending is None
    with pytest.raises(StateError, match="no decision is pending"):
        p.ctrl.reject(pending.id)
    old = p.ctrl.set_mode(Mode.MANUAL)
    assert old is Mode.ADVISORY
    with pytest.raises(StateError, match="approvals need advisory mode"):
        p.ctrl.approve(done.id)
