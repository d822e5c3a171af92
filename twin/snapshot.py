"""The snapshot: one instant of the line, exact state and sensor readings together."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from linetwin.twin import layout as L
from linetwin.twin.errors import TwinError
from linetwin.twin.sensors import Readings
from linetwin.twin.spec import LineSpec
from linetwin.twin.state import TwinState


@dataclass(frozen=True)
class Snapshot:
    """The line at `time_s` (s since the run began) in every scenario.

    `state` is the exact internal state (host arrays; enough to fork the run), `readings` what
    the sensors report, `setpoints (n_scenarios, n_stations, 2)` the setpoints in force.
    Properties give the exact digital signals a PLC would report.
    """

    spec: LineSpec
    time_s: float
    state: TwinState
    setpoints: np.ndarray
    readings: Readings

    def scenario(self, index: int) -> Snapshot:
        """Return scenario `index` alone, as a one-scenario snapshot (arrays copied)."""
        if not 0 <= index < self.n_scenarios:
            raise TwinError(f"scenario {index} is not in the snapshot ({self.n_scenarios})")
        rows = [index]
        r = self.readings
        readings = Readings(
            temperature_c=r.temperature_c[rows],
            power_kw=r.power_kw[rows],
            vibration_mm_s=r.vibration_mm_s[rows],
            valid=r.valid[rows],
        )
        return Snapshot(
            self.spec, self.time_s, self.state.take(rows), self.setpoints[rows], readings
        )

    @property
    def n_scenarios(self) -> int:
        """Number of scenarios."""
        return self.state.n_scenarios

    @property
    def status(self) -> np.ndarray:
        """Station status codes `(n_scenarios, n_stations)`, see `twin.layout.STATUS_NAMES`."""
        return self.state.istate[:, :, L.I_STATUS]

    @property
    def buffer_level(self) -> np.ndarray:
        """Parts in each buffer `(n_scenarios, n_stations - 1)`."""
        return self.state.level[:, :-1]

    @property
    def completed(self) -> np.ndarray:
        """Cumulative parts finished per station, good and scrapped `(n_scenarios, n_stations)`."""
        return self.state.istate[:, :, L.I_DONE]

    @property
    def scrapped(self) -> np.ndarray:
        """Cumulative parts scrapped per station `(n_scenarios, n_stations)`."""
        return self.state.istate[:, :, L.I_SCRAP]

    @property
    def failures(self) -> np.ndarray:
        """Cumulative failures per station `(n_scenarios, n_stations)`."""
        return self.state.istate[:, :, L.I_FAILS]

    @property
    def released(self) -> np.ndarray:
        """Cumulative parts started at the first station `(n_scenarios,)`."""
        return self.state.counts[:, L.C_RELEASED]

    @property
    def good_out(self) -> np.ndarray:
        """Cumulative good parts that left the line `(n_scenarios,)`."""
        return self.state.counts[:, L.C_OUT]

    @property
    def scrap_total(self) -> np.ndarray:
        """Cumulative scrapped parts `(n_scenarios,)`."""
        return self.state.counts[:, L.C_SCRAP]

    @property
    def holding(self) -> np.ndarray:
        """Whether each station holds a part (busy, blocked or down) `(n_scenarios, n_stations)`."""
        return self.status != L.STARVED

    @property
    def work_in_process(self) -> np.ndarray:
        """Parts inside the line, in stations and buffers `(n_scenarios,)`."""
        return self.holding.sum(axis=1) + self.buffer_level.sum(axis=1)

    @property
    def energy_kwh(self) -> np.ndarray:
        """Cumulative energy per station, kWh `(n_scenarios, n_stations)`."""
        return self.state.fstate[:, :, L.F_ENERGY]

    @property
    def status_time_s(self) -> np.ndarray:
        """Cumulative seconds per status `(n_scenarios, n_stations, 4)`."""
        return self.state.fstate[:, :, L.F_T0 : L.F_T0 + L.N_STATUS]

    @property
    def wear(self) -> np.ndarray:
        """Wear since the last repair, equivalent busy hours `(n_scenarios, n_stations)`."""
        return self.state.fstate[:, :, L.F_WEAR]

    @property
    def temperature_true_c(self) -> np.ndarray:
        """Exact temperatures, °C (NaN on stations without thermal dynamics)."""
        thermal = np.array([s.is_thermal for s in self.spec.stations])
        return np.where(thermal, self.state.fstate[:, :, L.F_TEMP], np.nan)
