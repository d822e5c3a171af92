"""`calibrate`: fit a skeleton line spec to a recorded log, validate it on the held-out tail.

One streamed pass over the recording: rows before the held-out tail feed the fit
(`events.LogScan`), rows from its start on feed the validation (`validate.Holdout`).
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from linetwin.twin.calibrate.errors import CalibrationError
from linetwin.twin.calibrate.events import LogScan, Rows
from linetwin.twin.calibrate.fit import ParamFit, StationFit, fit_station
from linetwin.twin.calibrate.laws import LawChoice, available_laws
from linetwin.twin.calibrate.spec_out import fitted_spec
from linetwin.twin.calibrate.validate import (
    Holdout,
    comparison_table,
    coverage,
    simulate_tail,
)
from linetwin.twin.errors import RecordingError
from linetwin.twin.recorder import Recording, iter_recording, read_spec
from linetwin.twin.spec import LineSpec

BATCH_TICKS = 4096
MIN_TAIL_ROWS = 10


@dataclass
class Calibration:
    """What `calibrate` found: the fitted spec, every parameter with its uncertainty and
    source, the law choices, the validation table (empty without a held-out tail), and the
    interval data of each station's processing fit (for the report's plots)."""

    recording: str
    skeleton: LineSpec
    spec: LineSpec
    params: list[ParamFit]
    laws: list[LawChoice]
    validation: list[dict[str, Any]]
    summary: dict[str, Any]
    stations: dict[str, StationFit] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        """JSON-ready: fitted parameters, laws and why, the validation table and coverage."""
        out: dict[str, Any] = dict(self.summary)
        out["parameters"] = [p.as_dict() for p in self.params]
        out["laws"] = [c.as_dict() for c in self.laws]
        out["validation"] = self.validation
        return json.loads(json.dumps(out, default=_jsonable), parse_constant=lambda _: None)


def _jsonable(x: Any) -> Any:
    if isinstance(x, np.generic):
        return x.item()
    raise TypeError(f"not JSON: {type(x).__name__}")


def _rows(c: Recording, lo: int, hi: int, s: int = 0) -> Rows:
    return Rows(
        tick=c.tick[lo:hi],
        time_s=c.time_s[lo:hi],
        status=c.status[lo:hi, s],
        completed=c.completed[lo:hi, s],
        scrapped=c.scrapped[lo:hi, s],
        failures=c.failures[lo:hi, s],
        speed=c.speed[lo:hi, s],
        temperature_setpoint_c=c.temperature_setpoint_c[lo:hi, s],
        temperature_c=c.temperature_c[lo:hi, s],
        temperature_valid=c.temperature_valid[lo:hi, s],
        power_kw=c.power_kw[lo:hi, s],
        power_valid=c.power_valid[lo:hi, s],
        wear=c.wear[lo:hi, s],
        buffer_level=c.buffer_level[lo:hi, s],
    )


def _check_line(path: Path, rec_spec: LineSpec, skeleton: LineSpec, source: str) -> None:
    got = [s.name for s in rec_spec.stations]
    want = [s.name for s in skeleton.stations]
    if got != want:
        raise CalibrationError(
            f"{path}: the log's stations {got} are not the skeleton's ({source}: {want})"
        )


def calibrate(
    recording: str | os.PathLike[str],
    skeleton: LineSpec,
    *,
    holdout: float = 0.25,
    replications: int = 32,
    seed: int = 0,
    skeleton_source: str = "skeleton",
) -> Calibration:
    """Fit `skeleton` to the recording at `recording` (scenario 0) and validate the fit on its
    last `holdout` share of rows. Raises CalibrationError (naming the file and the value) for
    a log that cannot be used at all; a parameter the log cannot identify keeps the
    skeleton's value, with the reason in its `ParamFit`."""
    t_start = time.perf_counter()
    path = Path(recording)
    if not (isinstance(holdout, int | float) and 0.0 <= holdout < 0.9):
        raise CalibrationError(f"{path}: holdout must be in [0, 0.9), got {holdout!r}")
    if isinstance(replications, bool) or not 2 <= replications <= 100_000:
        raise CalibrationError(f"replications must be in [2, 100000], got {replications!r}")
    rec_spec = read_spec(path)
    _check_line(path, rec_spec, skeleton, skeleton_source)
    meta = pq.read_metadata(path)
    kv = meta.metadata or {}
    n_sc = json.loads(kv.get(b"linetwin.n_scenarios", b"null")) or 0
    n_ticks = meta.num_rows // n_sc if n_sc else 0
    if n_ticks < 3:
        raise CalibrationError(f"{path}: the log has {n_ticks} rows; calibration needs more")
    split = math.floor(n_ticks * (1.0 - holdout))
    if holdout > 0 and n_ticks - split < MIN_TAIL_ROWS:
        raise CalibrationError(
            f"{path}: a held-out share of {holdout} leaves {n_ticks - split} rows of {n_ticks} "
            f"(need {MIN_TAIL_ROWS}); use a longer log or --holdout 0"
        )
    if split < 2:
        raise CalibrationError(f"{path}: only {split} rows are left to fit on")
    scan: LogScan | None = None
    hold = Holdout()
    dt_check: list[float] = []
    for chunk in iter_recording(path, batch_ticks=BATCH_TICKS):
        first = int(chunk.tick[0])
        hi = min(chunk.n_ticks, split + 1 - first)  # the split row ends the fit, starts the tail
        if scan is None:
            dts = np.diff(chunk.time_s)
            if dts.size == 0 or not (dts > 0).all():
                raise CalibrationError(f"{path}: time_s does not increase from row to row")
            dt = float(np.median(dts))
            scan = LogScan(skeleton, dt)
        if hi > 0:
            scan.feed(_rows(chunk, 0, hi))
            dt_check.append(float(np.ptp(np.diff(chunk.time_s[:hi])) if hi > 1 else 0.0))
        if holdout > 0 and first + chunk.n_ticks > split:
            hold.feed(chunk, max(split - first, 0))
    assert scan is not None
    scan.finish()
    laws = available_laws()
    params: list[ParamFit] = []
    choices: list[LawChoice] = []
    updates: dict[str, dict[str, Any]] = {}
    fits: dict[str, StationFit] = {}
    for j, st in enumerate(skeleton.stations):
        f = fit_station(scan, j, laws)
        fits[st.name] = f
        params += f.params
        choices += f.laws
        updates[st.name] = f.updates
    spec = fitted_spec(skeleton, updates)
    fit_s = time.perf_counter() - t_start
    rows: list[dict[str, Any]] = []
    summary: dict[str, Any] = {
        "line": skeleton.name,
        "recording": str(path),
        "rows": n_ticks,
        "fit_rows": split + 1,
        "holdout": holdout,
        "log_interval_s": scan.dt,
        "fit_span_h": (scan.last_time_s - scan.first_time_s) / 3600.0,
        "fitted": sum(p.status == "fitted" for p in params),
        "kept": sum(p.status == "kept" for p in params),
        "fit_seconds": fit_s,
    }
    if max(dt_check, default=0.0) > 0.01 * scan.dt:
        summary["warning"] = (
            "rows are not evenly spaced: processing intervals are counted in rows of the "
            f"median spacing {scan.dt:g} s"
        )
    if holdout > 0 and hold.start is not None and hold.duration_s > 0:
        rng = np.random.default_rng(seed)
        plant = hold.plant()
        twins = {
            "fitted": simulate_tail(spec, hold, replications, rng),
            "skeleton": simulate_tail(skeleton, hold, replications, rng),
        }
        rows = comparison_table(spec, plant, twins)
        summary["validation_summary"] = {
            "tail_h": hold.duration_s / 3600.0,
            "replications": replications,
            "setpoint_changes": len(hold.changes),
            "interval": "2.5% to 97.5% quantiles of the replications",
            "coverage": {name: coverage(rows, name) for name in twins},
        }
    summary["seconds"] = time.perf_counter() - t_start
    return Calibration(str(path), skeleton, spec, params, choices, rows, summary, fits)


def check_recording(path: str | os.PathLike[str]) -> None:
    """Raise CalibrationError unless `path` names a readable recording (CLI's early check)."""
    try:
        read_spec(path)
    except RecordingError as exc:
        raise CalibrationError(str(exc)) from None
