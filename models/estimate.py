"""One KPI estimate for every caller: the surrogate's mean and calibrated std of each KPI.

The controller's predictions, the service's what-if, decision replay and `linetwin optimize`
all estimate KPIs here, so they agree. The derived KPIs (`derived_kpis`: throughput, scrap
rate, energy per good part, profit rate) are computed per ensemble member; their std is the
members' spread times the mean calibration scale of the three line outputs (good, scrap,
energy). `energy_kwh_per_hour` is the energy output itself, calibrated by its own scale. With
calibrated stds, mean ± 1.645 std is about a 90% band (see `Surrogate.band_scale`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from linetwin.models.features import OUT_ENERGY, OUT_GOOD, OUT_SCRAP
from linetwin.models.surrogate import Surrogate, derived_kpis
from linetwin.twin.spec import LineSpec

ENERGY_KPI = "energy_kwh_per_hour"
"""The energy output, estimated beside the derived KPIs."""


@dataclass(frozen=True)
class KpiSamples:
    """Each KPI's ensemble members `(members, batch)` and the scale that calibrates their
    spread (KPI name -> factor)."""

    members: dict[str, np.ndarray]
    scale: dict[str, float]

    def estimate(self, j: int = 0) -> dict[str, tuple[float, float]]:
        """KPI name -> (mean, calibrated std) of candidate `j`."""
        return {
            k: (float(v[:, j].mean()), float(v[:, j].std() * self.scale[k]))
            for k, v in self.members.items()
        }

    def difference(self, j: int, k: int) -> dict[str, tuple[float, float]]:
        """KPI name -> (mean, calibrated std) of candidate `j` minus candidate `k`, member by
        member (paired: the spread of the difference, not of either candidate)."""
        out = {}
        for name, v in self.members.items():
            d = v[:, j] - v[:, k]
            out[name] = (float(d.mean()), float(d.std() * self.scale[name]))
        return out


def kpi_samples(
    model: Surrogate, spec: LineSpec, state: np.ndarray, setpoints: np.ndarray
) -> KpiSamples:
    """Predict the KPIs of candidates from one state.

    `state`: state features `(n_state,)` or `(1, n_state)`; `setpoints`: setpoint features
    `(n_setpoints,)` or `(batch, n_setpoints)` (`FeatureSchema.setpoint_features`).
    """
    state2 = np.atleast_2d(np.asarray(state, dtype=float))[:1]
    x = np.atleast_2d(np.asarray(setpoints, dtype=float))
    pred = model.predict_batched(state2, x)
    members = derived_kpis(spec.economics, pred.members)  # (members, batch) each
    members[ENERGY_KPI] = pred.members[..., OUT_ENERGY]
    band = np.asarray(model.band_scale, dtype=float)
    derived = float(np.mean(band[[OUT_GOOD, OUT_SCRAP, OUT_ENERGY]]))
    scale = {k: derived for k in members}
    scale[ENERGY_KPI] = float(band[OUT_ENERGY])
    return KpiSamples(members, scale)


def kpi_estimate(
    model: Surrogate, spec: LineSpec, state: np.ndarray, setpoints: np.ndarray
) -> dict[str, tuple[float, float]]:
    """KPI name -> (mean, calibrated std) of one candidate: setpoint features
    `(n_setpoints,)` from state features `(n_state,)`."""
    return kpi_samples(model, spec, state, np.atleast_2d(setpoints)[:1]).estimate(0)
