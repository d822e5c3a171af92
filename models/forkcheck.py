"""Check a surrogate's predictions against forks of the very states it predicts from.

For each of a batch of line states and setpoints, the model's prediction (mean and calibrated
std of the profit rate, the scrap rate and the line outputs) is set against what `forks` runs
of the twin from that exact state realise over the model's horizon. This is how the level
bias at the operating point was found and how its fix is measured (docs/surrogate.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from linetwin.models.dataset import outputs_of
from linetwin.models.surrogate import Z90, Surrogate, derived_kpis
from linetwin.twin import Twin
from linetwin.twin.snapshot import Snapshot

KPIS = ("profit_per_hour", "scrap_rate", "throughput_per_hour")


@dataclass(frozen=True)
class ForkCheck:
    """Predicted against realised, per state `(n_states,)` for each name in `KPIS`.

    predicted, std: the model's mean and calibrated std (the member spread of the derived KPI
    times the mean band scale of the line outputs, as the controller publishes it). realised:
    the KPI of the mean outputs over the forks; realised_se: its standard error over forks.
    """

    predicted: dict[str, np.ndarray]
    std: dict[str, np.ndarray]
    realised: dict[str, np.ndarray]
    realised_se: dict[str, np.ndarray]
    forks: int

    def relative_bias(self, kpi: str) -> float:
        """Mean predicted over mean realised, minus 1."""
        return float(self.predicted[kpi].mean() / self.realised[kpi].mean() - 1.0)

    def bias_se(self, kpi: str) -> float:
        """Standard error of the mean difference predicted - realised across states."""
        d = self.predicted[kpi] - self.realised[kpi]
        return float(d.std(ddof=1) / np.sqrt(d.size)) if d.size > 1 else float("nan")

    def coverage(self, kpi: str, z: float = Z90) -> float:
        """Share of states whose realised expected KPI lies in mean ± z std, the std widened
        by the realised value's own standard error (the forks are a finite sample)."""
        half = z * np.hypot(self.std[kpi], self.realised_se[kpi])
        return float((np.abs(self.predicted[kpi] - self.realised[kpi]) <= half).mean())


def check_on_forks(
    model: Surrogate,
    snap: Snapshot,
    recent_throughput_per_hour: np.ndarray,
    setpoints: np.ndarray,
    forks: int,
    rng: np.random.Generator,
) -> ForkCheck:
    """Predict from every scenario of `snap` at `setpoints` `(n_states, n_setpoints)` and run
    `forks` forks of each for the model's horizon under them.

    `recent_throughput_per_hour` `(n_states,)` is the state feature of the same name.
    """
    schema = model.schema
    spec = snap.spec
    n = snap.n_scenarios
    setpoints = np.broadcast_to(np.asarray(setpoints, dtype=float), (n, schema.n_setpoints))
    state = schema.state_features(snap, recent_throughput_per_hour)
    pred = model.predict_batched(state, setpoints)
    kpis = derived_kpis(spec.economics, pred.members)  # (members, n) each
    scale = float(np.mean(model.band_scale[:3]))
    source = np.repeat(np.arange(n), forks)
    twin = Twin.fork(snap, n * forks, scenario=source, rng=rng)
    base = np.repeat(snap.setpoints, forks, axis=0)
    twin.set_setpoints(schema.setpoint_array(np.repeat(setpoints, forks, axis=0), base))
    start = twin.snapshot()
    out = outputs_of(schema, start, twin.step(schema.horizon_s)).reshape(n, forks, -1)
    real = derived_kpis(spec.economics, out.mean(axis=1))
    per_fork = derived_kpis(spec.economics, out)  # (n, forks) each
    return ForkCheck(
        predicted={k: kpis[k].mean(axis=0) for k in KPIS},
        std={k: kpis[k].std(axis=0) * scale for k in KPIS},
        realised={k: real[k] for k in KPIS},
        realised_se={
            k: per_fork[k].std(axis=1, ddof=1) / np.sqrt(forks) if forks > 1 else np.zeros(n)
            for k in KPIS
        },
        forks=forks,
    )
