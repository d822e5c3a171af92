"""Turn accepted plant rows into snapshots: the newest of a batch restored, the others measured.

`MeasuredLine.snapshots(batch)` takes the rows `replay.plantrows.PlantRows` accepted (recording
columns `(k, 1, ...)`) and returns a `Snapshot` per row, oldest first:

- the newest row is rebuilt by `twin.restore.restore` (hidden clocks drawn from the Generator):
  a line the twin can run and fork from;
- each earlier row carries its measured values exactly (status, counters, buffer levels,
  energy, wear, temperatures, readings, setpoints) on the newest row's hidden clocks, shifted
  to its own time: what KPIs, trends and recordings use. Restoring costs about 2 ms a row on a
  50-station line; a backfill of an hour of 1 Hz rows restores one row, not 3,600;
- cumulative status times (availability, utilisation) are integrated from the reported
  statuses, each interval in the status of the row that starts it, carried across batches
  (`restore` starts them at zero).
"""

from __future__ import annotations

import numpy as np

from linetwin.replay.plantrows import RowBatch
from linetwin.twin import layout as L
from linetwin.twin.params import LineParams
from linetwin.twin.recorder import Recording
from linetwin.twin.restore import restore
from linetwin.twin.sensors import Readings
from linetwin.twin.snapshot import Snapshot
from linetwin.twin.spec import LineSpec
from linetwin.twin.state import TwinState

_CLOCKS = (L.F_TDONE, L.F_TFAIL, L.F_TREPAIR, L.F_TBUSY, L.F_SINCE, L.F_TREF)
"""Columns of `fstate` holding absolute times, s."""


class MeasuredLine:
    """Build snapshots of one line's accepted rows, in arrival order; see the module docstring.

    Not thread-safe (the external plant calls it under its lock).
    """

    def __init__(self, spec: LineSpec, rng: np.random.Generator, params: LineParams) -> None:
        self.spec = spec
        self.rng = rng
        self.params = params
        self._status_time = np.zeros((spec.n_stations, L.N_STATUS))
        self._last_status: np.ndarray | None = None
        self._last_time: float | None = None

    def snapshots(self, batch: RowBatch) -> list[Snapshot]:
        """Build a snapshot per accepted row (see the module docstring), oldest first."""
        t, cols = batch.time_s, batch.columns
        k, n = t.shape[0], self.spec.n_stations
        arrays = dict(cols)
        arrays.setdefault("buffer_level", np.zeros((k, 1, 0), dtype=np.int64))
        rec = Recording(self.spec, {}, np.arange(k), t, **arrays)
        newest = restore(rec, k - 1, 0, self.rng, params=self.params)
        status = cols["status"][:, 0, :].astype(np.int64)
        times = self._status_times(t, status)
        newest.state.fstate[0, :, L.F_T0 : L.F_T0 + L.N_STATUS] = times[-1]
        if k == 1:
            return [newest]
        tpl = newest.state
        shift = (t - t[-1])[:, None]
        fs = np.repeat(tpl.fstate, k, axis=0)
        for c in _CLOCKS:
            fs[:, :, c] += shift
        fs[:, :, L.F_ENERGY] = cols["energy_kwh"][:, 0]
        fs[:, :, L.F_WEAR] = cols["wear"][:, 0]
        fs[:, :, L.F_T0 : L.F_T0 + L.N_STATUS] = times
        temp, temp_sp = cols["temperature_c"][:, 0], cols["temperature_setpoint_c"][:, 0]
        known = np.isfinite(temp) & cols["temperature_valid"][:, 0]
        thermal = self.params.params[:, L.P_THERMAL] > 0
        fs[:, :, L.F_TEMP] = np.where(thermal, np.where(known, temp, temp_sp), fs[:, :, L.F_TEMP])
        ist = np.repeat(tpl.istate, k, axis=0)
        ist[:, :, L.I_STATUS] = status
        ist[:, :, L.I_DONE] = cols["completed"][:, 0]
        ist[:, :, L.I_SCRAP] = cols["scrapped"][:, 0]
        ist[:, :, L.I_FAILS] = cols["failures"][:, 0]
        level = np.repeat(tpl.level, k, axis=0)
        level[:, : n - 1] = arrays["buffer_level"][:, 0]
        counts = np.repeat(tpl.counts, k, axis=0)
        counts[:, L.C_RELEASED] = cols["released"][:, 0]
        counts[:, L.C_OUT] = cols["good_out"][:, 0]
        counts[:, L.C_SCRAP] = cols["scrap_total"][:, 0]
        rng = np.repeat(tpl.rng, k, axis=0)
        tnext = np.repeat(tpl.tnext, k, axis=0) + shift
        sp = np.stack([cols["speed"][:, 0], temp_sp], axis=-1)
        setpoints = np.where(self.params.present, sp, 0.0)
        readings = (temp, cols["power_kw"][:, 0], cols["vibration_mm_s"][:, 0])
        valid = np.stack(
            [cols[f"{c}_valid"][:, 0] for c in ("temperature", "power", "vibration")], -1
        )
        out = []
        for r in range(k - 1):
            s = slice(r, r + 1)
            state = TwinState(fs[s], ist[s], level[s], counts[s], rng[s], tnext[s])
            read = Readings(readings[0][s], readings[1][s], readings[2][s], valid[s])
            out.append(Snapshot(self.spec, float(t[r]), state, setpoints[s], read))
        out.append(newest)
        return out

    def _status_times(self, t: np.ndarray, status: np.ndarray) -> np.ndarray:
        """Cumulative seconds per status `(k, n_stations, 4)` at each row, each interval
        counted in the status of the row that starts it (the first row ever starts at 0)."""
        last = float(t[0]) if self._last_time is None else self._last_time
        held = np.vstack(
            [status[:1] if self._last_status is None else self._last_status[None], status[:-1]]
        )
        dt = np.diff(np.concatenate([[last], t]))
        inc = (held[:, :, None] == np.arange(L.N_STATUS)) * dt[:, None, None]
        times = self._status_time + np.cumsum(inc, axis=0)
        self._status_time, self._last_status = times[-1].copy(), status[-1].copy()
        self._last_time = float(t[-1])
        return times
