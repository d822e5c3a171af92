"""The checkpoint shipped for the example line still fits the line and meets the targets."""

from __future__ import annotations

import numpy as np

from linetwin.models import checkpoint
from linetwin.models.pretrained import bundled_checkpoint
from linetwin.twin import bundled_spec
from linetwin.twin.spec import parse_spec


def test_the_example_line_ships_a_checkpoint_that_loads():
    spec = bundled_spec("example")
    folder = bundled_checkpoint(spec)
    assert folder is not None, "spec changed: retrain models/pretrained/example (docs)"
    model = checkpoint.load(folder, spec)
    assert model.schema.horizon_s == 4 * 3600.0
    state = np.zeros((1, model.schema.n_state))
    pred = model.predict(state, model.schema.lower[None] * 0.5 + model.schema.upper[None] * 0.5)
    assert np.isfinite(pred.mean).all()


def test_the_shipped_checkpoint_meets_the_surrogate_targets():
    model = checkpoint.load(bundled_checkpoint(bundled_spec("example")), bundled_spec("example"))
    kpis = model.metadata["metrics"]["kpis"]
    assert kpis["throughput_per_hour"]["r2"] >= 0.95
    assert kpis["energy_kwh_per_good_part"]["r2"] >= 0.95
    assert kpis["scrap_rate"]["r2"] >= 0.90
    coverage = model.metadata["metrics"]["calibration"]["coverage_mean"]
    assert abs(coverage - 0.90) <= 0.10


def test_another_line_gets_no_shipped_checkpoint():
    data = bundled_spec("example").model_dump(mode="json")
    data["stations"][0]["cycle_time_s"] = 21.0
    assert bundled_checkpoint(parse_spec(data)) is None
    assert bundled_checkpoint(bundled_spec("two-station")) is None
