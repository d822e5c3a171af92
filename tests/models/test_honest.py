"""The shipped example model predicts the level the twin realises from fresh states.

A held-out R² of 0.97 across the whole setpoint box once hid a 5% offset at the operating
point (docs/surrogate.md, "Honest predictions"). These checks fork the twin from fresh states
the model never saw, at the setpoints that matter (nominal, the optimizer's answer, local
moves), and compare the predicted mean with what the forks realise over the model's horizon.
"""

from __future__ import annotations

import numpy as np
import pytest

from linetwin.models.checkpoint import load
from linetwin.models.dataset import candidate_setpoints, recent_throughput
from linetwin.models.forkcheck import ForkCheck, check_on_forks
from linetwin.models.pretrained import bundled_checkpoint
from linetwin.models.surrogate import Surrogate
from linetwin.optimizer.oneshot import optimize_line
from linetwin.twin import Twin, bundled_spec
from linetwin.twin.snapshot import Snapshot

STATES, FORKS = 48, 16
PROFIT_TOLERANCE = 0.02
SCRAP_RATE_TOLERANCE = 0.10
NOMINAL_SCRAP_RATE_TOLERANCE = 0.35
"""Short of the 10% target: exactly at nominal the model under-predicts the scrap rate by
about 31% (74% before the fix; docs/surrogate.md, "What is left"). Tighten when it is fixed."""


@pytest.fixture(scope="module")
def model() -> Surrogate:
    spec = bundled_spec("example")
    folder = bundled_checkpoint(spec)
    assert folder is not None
    return load(folder, spec)


@pytest.fixture(scope="module")
def fresh() -> tuple[Snapshot, np.ndarray]:
    """Fresh states of a line run at nominal setpoints for two hours, as `optimize` starts."""
    twin = Twin(bundled_spec("example"), STATES, seed=20_261_208)
    twin.advance(6600.0)
    before = twin.snapshot()
    now = twin.step(600.0)
    return now, recent_throughput(before, now)


def _within(check: ForkCheck, kpi: str, tolerance: float) -> None:
    bias = check.relative_bias(kpi)
    mean = check.realised[kpi].mean()
    assert abs(bias) <= tolerance, (
        f"{kpi}: predicted {check.predicted[kpi].mean():.4g}, realised {mean:.4g} "
        f"({bias:+.1%}, standard error {check.bias_se(kpi) / mean:.1%})"
    )


def test_nominal_setpoints(model: Surrogate, fresh: tuple[Snapshot, np.ndarray]) -> None:
    snap, recent = fresh
    nominal = model.schema.setpoint_features(snap.setpoints)
    check = check_on_forks(model, snap, recent, nominal, FORKS, np.random.default_rng(1))
    _within(check, "profit_per_hour", PROFIT_TOLERANCE)
    _within(check, "scrap_rate", NOMINAL_SCRAP_RATE_TOLERANCE)


def test_the_optimizers_answer(model: Surrogate, fresh: tuple[Snapshot, np.ndarray]) -> None:
    spec = bundled_spec("example")
    chosen = optimize_line(spec, model, seed=0)
    x = model.schema.setpoint_features(chosen.setpoints[None])
    snap, recent = fresh
    check = check_on_forks(model, snap, recent, x, FORKS, np.random.default_rng(2))
    _within(check, "profit_per_hour", PROFIT_TOLERANCE)
    _within(check, "scrap_rate", SCRAP_RATE_TOLERANCE)


def test_local_moves_and_band_coverage(
    model: Surrogate, fresh: tuple[Snapshot, np.ndarray]
) -> None:
    """Moves a controller tries from the running point; their 90% bands cover 85-95%."""
    snap, recent = fresh
    rng = np.random.default_rng(3)
    current = model.schema.setpoint_features(snap.setpoints)
    moves = candidate_setpoints(model.schema, current, 4, rng)[:, :2]  # the local half
    checks = [check_on_forks(model, snap, recent, moves[:, k], FORKS, rng) for k in range(2)]
    for check in checks:
        _within(check, "profit_per_hour", PROFIT_TOLERANCE)
    coverage = np.mean([c.coverage("profit_per_hour") for c in checks])
    assert 0.80 <= coverage <= 1.0, coverage
