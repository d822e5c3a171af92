"""Fault injection on the controller: a failing or NaN model, a spent budget, stale data, sensor
faults from the twin and states outside the training data each give a fallback decision that
holds the last-known-good setpoints and says why; the loop keeps running and recovers.

The surrogate is the session's small trained model of the example line; the line runs in the
twin at nominal setpoints for an hour first, so that its state lies in the training envelope.
"""

from __future__ import annotations

import copy
import dataclasses
import math

import numpy as np
import pytest
import torch
from opthelpers import FakeClock, LineRun, assert_versions_increase

from linetwin.models.errors import ModelError
from linetwin.models.surrogate import Prediction, Surrogate
from linetwin.optimizer.controller import Controller, Decision, MemoryStore, Mode
from linetwin.optimizer.guard import Reason
from linetwin.twin.params import compile_params
from linetwin.twin.sensors import SensorFault
from linetwin.twin.snapshot import Snapshot
from linetwin.twin.spec import LineSpec

BUDGET = 10.0  # s: generous, so that only the timeout test times out
CYCLE_S = 300.0
FIRST = 3300.0  # line time of the first cycle (LineRun starts the loop at 3000 s)
FAULT_AT = FIRST + 150.0  # sensor faults begin between the first and the second cycle


class Flaky(Surrogate):
    """A surrogate whose `predict` raises `failure` or returns NaN, or whose OOD score is NaN,
    when told to."""

    failure: BaseException | None = None
    nan: bool = False
    nan_ood: bool = False

    def ood_score(self, state: np.ndarray, setpoints: np.ndarray) -> np.ndarray:
        score = super().ood_score(state, setpoints)
        return np.full_like(score, math.nan) if self.nan_ood else score

    def predict(self, state: np.ndarray, setpoints: np.ndarray) -> Prediction:
        if self.failure is not None:
            raise self.failure
        pred = super().predict(state, setpoints)
        if self.nan:
            nan = np.full_like(pred.members, math.nan)
            return Prediction(nan.mean(axis=0), nan.std(axis=0), nan)
        return pred


def flaky(model: Surrogate) -> Flaky:
    return Flaky(
        model.schema, model.net, model.band_scale, model.ood_reference, model.ood_threshold
    )


class Loop:
    """The controller in closed mode on a one-scenario twin, with every decision checked."""

    def __init__(
        self,
        spec: LineSpec,
        model: Surrogate,
        seed: int = 11,
        faults: tuple[SensorFault, ...] = (),
        **kw: object,
    ) -> None:
        self.spec = spec
        self.run = LineRun(spec, seed, faults)
        self.store = MemoryStore()
        self.clock = FakeClock()
        kw.setdefault("budget_s", BUDGET)
        self.ctrl = Controller(
            spec,
            model,
            self.store,
            mode=Mode.CLOSED,
            apply=self.run.twin.set_setpoints,
            clock=self.clock,
            **kw,
        )
        lp = compile_params(spec)
        self.present, self.lower, self.upper = lp.present, lp.lower, lp.upper
        self.max_step = np.zeros(lp.present.shape)
        for i, st in enumerate(spec.stations):
            for k, sp in enumerate((st.setpoints.speed, st.setpoints.temperature)):
                if sp is not None:
                    self.max_step[i, k] = sp.max_step
        self.snap: Snapshot | None = None
        self.recent = math.nan

    def step(self) -> tuple[Snapshot, float]:
        self.clock.t += CYCLE_S
        self.snap, self.recent = self.run.step(CYCLE_S)
        return self.snap, self.recent

    def cycle(
        self, recent: float | None = None, age: float | None = None, snap: Snapshot | None = None
    ) -> Decision:
        """One cycle on a fresh snapshot (or `snap`); checks what every decision promises."""
        if snap is None:
            snap, rec = self.step()
        else:
            rec = self.recent
        before = self.ctrl.guard.last_good.copy()
        running = snap.setpoints[0]
        wall = None if age is None else self.clock() - age  # when the snapshot was taken
        d = self.ctrl.cycle(snap, rec if recent is None else recent, wall)
        sp = d.setpoints
        assert np.isfinite(sp).all() and np.all(sp[~self.present] == 0)
        assert np.all(sp[self.present] >= self.lower[self.present])
        assert np.all(sp[self.present] <= self.upper[self.present])
        assert d.applied and d.mode is Mode.CLOSED
        if d.fallback:
            assert d.status == "fallback" and d.target is None and len(d.reasons) == 1
            np.testing.assert_array_equal(sp, before)  # the previous last-known-good
            np.testing.assert_array_equal(self.ctrl.guard.last_good, before)
        else:
            assert not set(d.reasons) & {str(r) for r in (Reason.BAD_PROPOSAL,)}
            np.testing.assert_array_equal(self.ctrl.guard.last_good, sp)
            assert np.all(np.abs(sp - running) <= self.max_step + 1e-9)
            assert d.predicted and all(np.isfinite(v).all() for v in d.predicted.values())
        np.testing.assert_array_equal(self.run.twin.setpoints[0], sp)  # applied to the line
        latest = self.store.latest()
        if d.version:
            assert latest is d
        else:  # nothing changed: not published again, the latest decision stays in force
            assert latest is not None and latest.fallback == d.fallback
            np.testing.assert_array_equal(latest.setpoints, sp)
        return d


def test_a_normal_loop_moves_and_publishes(example: LineSpec, trained: Surrogate) -> None:
    loop = Loop(example, trained)
    decisions = [loop.cycle() for _ in range(3)]
    assert not any(d.fallback for d in decisions)
    assert any(str(Reason.RAMPED) in d.reasons for d in decisions)  # it wants to move far
    nominal = np.nan_to_num(compile_params(example).nominal)
    assert not np.array_equal(decisions[-1].setpoints, nominal)
    assert_versions_increase(loop.store)


def test_a_model_that_raises_falls_back_and_the_loop_recovers(
    example: LineSpec, trained: Surrogate
) -> None:
    model = flaky(trained)
    loop = Loop(example, model)
    assert not loop.cycle().fallback
    model.failure = RuntimeError("surrogate broke")
    d = loop.cycle()
    assert d.fallback and d.reasons[0] in ("model_failed", "solver_failed")
    model.failure = None
    assert not loop.cycle().fallback  # the next normal cycle succeeds
    assert_versions_increase(loop.store)


def test_a_model_that_raises_is_reported_as_model_failed(
    example: LineSpec, trained: Surrogate
) -> None:
    model = flaky(trained)
    loop = Loop(example, model)
    model.failure = RuntimeError("surrogate broke")
    assert loop.cycle().reasons == ("model_failed",)


def test_a_model_error_does_not_stop_the_loop(example: LineSpec, trained: Surrogate) -> None:
    model = flaky(trained)
    loop = Loop(example, model)
    model.failure = ModelError("expected 40 state features, got 39")
    d = loop.cycle()
    assert d.fallback and d.reasons == ("model_failed",)


def test_nan_predictions_fall_back_as_model_failed(example: LineSpec, trained: Surrogate) -> None:
    model = flaky(trained)
    loop = Loop(example, model)
    assert not loop.cycle().fallback
    model.nan = True
    d = loop.cycle()
    assert d.fallback and d.reasons == ("model_failed",)
    model.nan = False
    assert not loop.cycle().fallback


def test_a_nan_ood_score_falls_back_as_model_failed(example: LineSpec, trained: Surrogate) -> None:
    model = flaky(trained)
    loop = Loop(example, model)
    assert not loop.cycle().fallback
    model.nan_ood = True
    d = loop.cycle()
    assert d.fallback and d.reasons == ("model_failed",)
    model.nan_ood = False
    assert not loop.cycle().fallback


def test_nan_weights_fall_back_as_model_failed(example: LineSpec, trained: Surrogate) -> None:
    net = copy.deepcopy(trained.net)
    with torch.no_grad():
        net.bias[-1].fill_(math.nan)  # a damaged output layer: every prediction is NaN
    broken = Surrogate(
        trained.schema, net, trained.band_scale, trained.ood_reference, trained.ood_threshold
    )
    loop = Loop(example, broken)
    for _ in range(2):
        d = loop.cycle()
        assert d.fallback and d.reasons == ("model_failed",)
    np.testing.assert_array_equal(d.setpoints, np.nan_to_num(compile_params(example).nominal))


def test_a_spent_budget_falls_back_as_solver_timeout(example: LineSpec, trained: Surrogate) -> None:
    loop = Loop(example, trained)
    assert not loop.cycle().fallback
    loop.ctrl.budget_s = 0.001
    for _ in range(2):
        d = loop.cycle()
        assert d.fallback and d.reasons == ("solver_timeout",)
    loop.ctrl.budget_s = BUDGET
    assert not loop.cycle().fallback


def test_stale_snapshots_fall_back_as_stale_data(example: LineSpec, trained: Surrogate) -> None:
    loop = Loop(example, trained)
    first = loop.cycle()
    assert not first.fallback
    assert loop.ctrl.monitor.stale_after_s == 30.0
    d = loop.cycle(age=1000.0)  # taken 1000 s of wall time ago
    assert d.fallback and d.reasons == ("stale_data",)
    d = loop.cycle(age=29.0)  # fresh enough
    assert not d.fallback
    # an older snapshot than one already used: line time went backwards
    old = loop.snap
    loop.step()
    assert not loop.cycle(snap=loop.snap).fallback
    d = loop.cycle(snap=old)
    assert d.fallback and d.reasons == ("stale_data",)
    assert_versions_increase(loop.store)


@pytest.mark.parametrize("kind", ["nan", "dropout"])
@pytest.mark.parametrize("station", ["cure", "dry"])
def test_nan_and_missing_temperatures_fall_back_as_bad_data(
    example: LineSpec, trained: Surrogate, kind: str, station: str
) -> None:
    fault = SensorFault(station, "temperature", kind, start_s=FAULT_AT, end_s=FAULT_AT + 900)
    loop = Loop(example, trained, faults=(fault,))
    assert not loop.cycle().fallback  # before the fault
    for _ in range(3):  # during the fault
        d = loop.cycle()
        assert d.fallback and d.reasons == ("bad_data",)
    assert not loop.cycle().fallback  # the sensor is back


def test_frozen_temperatures_fall_back_as_bad_data(example: LineSpec, trained: Surrogate) -> None:
    faults = tuple(
        SensorFault(s, "temperature", "stuck", start_s=FAULT_AT) for s in ("dry", "cure")
    )
    loop = Loop(example, trained, faults=faults)
    assert not loop.cycle().fallback  # live readings
    frozen_after = loop.ctrl.monitor.frozen_after
    assert frozen_after == 3
    reasons = [loop.cycle().reasons for _ in range(4)]  # the same reading each time
    # the first stuck reading differs from the live one before; the third in a row is frozen
    assert [("bad_data",) in [r] for r in reasons] == [False, False, True, True], reasons


def test_a_reading_flagged_invalid_is_bad_data(example: LineSpec, trained: Surrogate) -> None:
    loop = Loop(example, trained)
    assert not loop.cycle().fallback
    snap, _recent = loop.step()
    valid = snap.readings.valid.copy()
    valid[0, example.station_index("dry"), 0] = False  # a value is there, but flagged invalid
    assert np.isfinite(snap.readings.temperature_c[0, example.station_index("dry")])
    flagged = dataclasses.replace(snap, readings=dataclasses.replace(snap.readings, valid=valid))
    d = loop.cycle(snap=flagged)
    assert d.fallback and d.reasons == ("bad_data",)
    valid[0, example.station_index("press"), 2] = False  # vibration: not what the monitor reads
    valid[0, example.station_index("dry"), 0] = True
    loop.step()
    ok = dataclasses.replace(
        loop.snap, readings=dataclasses.replace(loop.snap.readings, valid=valid)
    )
    assert not loop.cycle(snap=ok).fallback


def test_one_frozen_sensor_is_detected(example: LineSpec, trained: Surrogate) -> None:
    fault = SensorFault("cure", "temperature", "stuck", start_s=FAULT_AT)
    loop = Loop(example, trained, faults=(fault,))
    reasons = [loop.cycle().reasons for _ in range(6)]
    assert ("bad_data",) in reasons, reasons


def test_states_outside_the_training_data_fall_back_as_out_of_envelope(
    example: LineSpec, trained: Surrogate
) -> None:
    loop = Loop(example, trained)
    assert not loop.cycle().fallback
    snap, _recent = loop.step()
    state = trained.schema.state_features(snap, np.array([50_000.0]))
    current = trained.schema.setpoint_features(snap.setpoints)
    assert trained.ood_score(state, current)[0] > trained.ood_threshold
    d = loop.cycle(recent=50_000.0, snap=snap)  # 50,000 parts/h: ~300 times the real rate
    assert d.fallback and d.reasons == ("out_of_envelope",)
    assert not loop.cycle().fallback
    assert_versions_increase(loop.store)


def test_every_failure_in_one_loop(example: LineSpec, trained: Surrogate) -> None:
    """All the faults in a row on one controller: it never stops and never drifts."""
    model = flaky(trained)
    loop = Loop(example, model)
    reasons = [loop.cycle().reasons]
    model.failure = RuntimeError("boom")
    reasons.append(loop.cycle().reasons)
    model.failure = None
    model.nan = True
    reasons.append(loop.cycle().reasons)
    model.nan = False
    reasons.append(loop.cycle(age=3600.0).reasons)
    reasons.append(loop.cycle(recent=1e6).reasons)
    loop.ctrl.budget_s = 0.001
    reasons.append(loop.cycle().reasons)
    loop.ctrl.budget_s = BUDGET
    reasons.append(loop.cycle().reasons)
    fallbacks = [r[0] for r in reasons[1:-1]]
    assert fallbacks[1:] == ["model_failed", "stale_data", "out_of_envelope", "solver_timeout"]
    assert "fallback" not in {loop.store.decisions[0].status, loop.store.decisions[-1].status}
    assert_versions_increase(loop.store)
    assert len(loop.store.decisions) == 6  # the second model_failed in a row changed nothing
