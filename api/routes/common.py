"""What several route modules share: documented error answers and conversions to schemas."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from linetwin.api.schemas import BufferState, ErrorOut, Interval, StateOut, StationState
from linetwin.twin.kpi import Kpis
from linetwin.twin.layout import STATUS_NAMES
from linetwin.twin.params import setpoints_to_mapping
from linetwin.twin.snapshot import Snapshot
from linetwin.twin.spec import LineSpec
from linetwin.twin.stats import t975

MAX_INT64 = 2**63 - 1  # SQLite INTEGER
AUTH_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut, "description": "No key, or an unknown or revoked one."},
    403: {"model": ErrorOut, "description": "The key's role may not do this."},
    429: {"model": ErrorOut, "description": "The key's rate limit; see `Retry-After`."},
}
CONFLICT: dict[int | str, dict[str, Any]] = {
    409: {
        "model": ErrorOut,
        "description": "Nothing pending, another decision pending, or not in advisory mode.",
    },
}
TWIN_KPIS = (
    "throughput_per_hour",
    "scrap_rate",
    "energy_kwh_per_good_part",
    "energy_kwh_per_hour",
    "profit_per_hour",
)


def finite(x: float) -> float | None:
    """`x` as a float, or None when it is not finite (JSON has no NaN)."""
    return float(x) if math.isfinite(x) else None


def interval(values: np.ndarray) -> Interval:
    """Mean, std and 95% Student-t interval of the mean over runs (finite runs only)."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return Interval(mean=None, std=None, ci_low=None, ci_high=None)
    mean = float(v.mean())
    if v.size < 2:
        return Interval(mean=mean, std=None, ci_low=None, ci_high=None)
    std = float(v.std(ddof=1))
    half = t975(v.size - 1) * std / math.sqrt(v.size)
    return Interval(mean=mean, std=std, ci_low=mean - half, ci_high=mean + half)


def scalar(k: Kpis, name: str) -> float | None:
    """KPI `name` of scenario 0 of `k`, None when not finite."""
    return finite(float(np.asarray(getattr(k, name))[0]))


def state_out(spec: LineSpec, snap: Snapshot) -> StateOut:
    """Scenario 0 of `snap` as the API's `StateOut`."""
    r = snap.readings
    stations = [
        StationState(
            name=st.name,
            status=STATUS_NAMES[int(snap.status[0, i])],
            temperature_c=finite(r.temperature_c[0, i]) if st.is_thermal else None,
            power_kw=finite(r.power_kw[0, i]),
            setpoints=setpoints_to_mapping(spec, snap.setpoints[0])[st.name],
        )
        for i, st in enumerate(spec.stations)
    ]
    buffers = [
        BufferState(
            after=st.name,
            level=int(snap.buffer_level[0, i]),
            capacity=int(st.buffer_after or 0),
        )
        for i, st in enumerate(spec.stations[:-1])
    ]
    return StateOut(
        line=spec.name,
        time_s=snap.time_s,
        stations=stations,
        buffers=buffers,
        power_kw=finite(float(r.power_kw[0].sum())),
        good=int(snap.good_out[0]),
        scrap=int(snap.scrap_total[0]),
    )
