"""One KPI estimate for every caller: the controller's predictions, the service's what-if,
decision replay and `linetwin optimize` give the same mean and calibrated std as
`models.estimate` for the same state and setpoints."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from linetwin.api.runtime import Runtime
from linetwin.api.settings import Settings
from linetwin.models.checkpoint import load
from linetwin.models.estimate import kpi_estimate, kpi_samples
from linetwin.optimizer.oneshot import nominal_state, optimize_line
from linetwin.replay.decisions import DecisionReplayer
from linetwin.replay.policies import Policy
from linetwin.replay.scan import KPI_NAMES, Point
from linetwin.twin.spec import LineSpec

RECENT = 300.0


def same(got: dict[str, tuple[float, float]], want: dict[str, tuple[float, float]]) -> None:
    assert set(got) == set(want)
    for k, v in want.items():
        np.testing.assert_allclose(got[k], v, rtol=1e-9, err_msg=k)


def test_every_caller_gets_the_one_kpi_estimate(
    two: LineSpec, model_dir: Path, tmp_path: Path
) -> None:
    model = load(model_dir, two)
    schema = model.schema
    assert not np.allclose(model.band_scale[:3], 1.0)  # calibration matters to the check
    settings = Settings.load({}, data_dir=tmp_path, model_dir=model_dir)
    runtime = Runtime(settings, two, model)
    try:
        for _ in range(5):
            runtime.history.append(runtime.twin.tick())
        snap = runtime.twin.latest
        assert snap is not None
        runtime.run_cycle(snap, RECENT)
        decision = runtime.storage.latest()  # as published, through the codec
        assert decision is not None and decision.target is not None, decision
        state = schema.state_features(snap, np.array([RECENT]))[0]
        want = kpi_estimate(model, two, state, schema.setpoint_features(decision.target[None])[0])
        assert {"profit_per_hour", "energy_kwh_per_hour"} <= set(want)
        same(decision.predicted, want)  # the controller
        [whatif] = runtime.surrogate_whatif(snap, decision.target[None])
        same(whatif.kpis, want)  # the service's what-if
    finally:
        runtime.stop()

    # decision replay: the chosen setpoints' estimate and the paired difference to the recorded
    recorded = snap.setpoints[0]
    replayer = DecisionReplayer(two, [Policy("optimizer", "optimizer", model)])
    replayer.add(Point(0, 0, snap.time_s, snap, recorded, RECENT, {}, None))
    chosen = replayer.controllers["optimizer"].store.latest()
    assert chosen is not None
    x = schema.setpoint_features(np.stack([chosen.setpoints, recorded]))
    samples = kpi_samples(model, two, state, x)
    at, diff = samples.estimate(0), samples.difference(0, 1)
    same(at, kpi_estimate(model, two, state, x[0]))
    rows = replayer.rows
    for k in KPI_NAMES:
        assert rows.predicted[k][0] == pytest.approx(at[k][0], rel=1e-9)
        assert (rows.diff[k][0], rows.diff_std[k][0]) == pytest.approx(diff[k], rel=1e-9)

    # linetwin optimize: calibrated like the others (it used to report the raw member spread)
    shot = optimize_line(two, model, seed=0, budget_s=0.5)
    state0, nominal = nominal_state(two, model, 0)
    same(shot.predicted, kpi_estimate(model, two, state0, shot.solution.setpoints))
    nominal_x = schema.setpoint_features(nominal[None])[0]
    same(shot.nominal_predicted, kpi_estimate(model, two, state0, nominal_x))
