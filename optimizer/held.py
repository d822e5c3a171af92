"""Held overrides: an engineer's `{station: {setpoint: value}}` that the controller keeps.

Plain functions over a line spec: check and merge values into what is held, write them into a
setpoint array, and tell whether the guard is still ramping a held setpoint toward its value.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from linetwin.optimizer.errors import ProblemError
from linetwin.optimizer.guard import GuardResult, SetpointGuard
from linetwin.twin.spec import SETPOINT_NAMES, LineSpec

Held = dict[str, dict[str, float]]
"""Held overrides: `{station: {setpoint: value}}`."""


def merge(
    spec: LineSpec,
    held: Mapping[str, Mapping[str, float]],
    values: Mapping[str, Mapping[str, float]],
) -> Held:
    """A copy of `held` updated with `values`, checked against the line's stations and
    setpoints (`ProblemError` names an unknown station or setpoint, or a value not finite)."""
    names = {st.name for st in spec.stations}
    out = {k: dict(v) for k, v in held.items()}
    for station, entries in values.items():
        if station not in names:
            raise ProblemError(f"override: unknown station {station!r} on {spec.name!r}")
        st = spec.stations[spec.station_index(station)]
        have = SETPOINT_NAMES if st.is_thermal else SETPOINT_NAMES[:1]
        for name, value in entries.items():
            if name not in have:
                raise ProblemError(f"override: station {station!r} has no setpoint {name!r}")
            if not np.isfinite(value):
                raise ProblemError(f"override: {station}.{name} is not finite ({value!r})")
            out.setdefault(station, {})[name] = float(value)
    return out


def mask(spec: LineSpec, held: Held) -> np.ndarray:
    """Which setpoints are held `(n_stations, 2)`."""
    out = np.zeros((spec.n_stations, len(SETPOINT_NAMES)), dtype=bool)
    for station, entries in held.items():
        for name in entries:
            out[spec.station_index(station), SETPOINT_NAMES.index(name)] = True
    return out


def write(spec: LineSpec, base: np.ndarray, held: Held) -> np.ndarray:
    """A copy of `base` `(n_stations, 2)` with the held values written in."""
    out = np.array(base, dtype=float, copy=True)
    for station, entries in held.items():
        for name, value in entries.items():
            out[spec.station_index(station), SETPOINT_NAMES.index(name)] = value
    return out


def still_ramping(
    spec: LineSpec, guard: SetpointGuard, held: Held, before: np.ndarray, result: GuardResult
) -> bool:
    """Whether the guard cut a held setpoint's move from `before` (what it ramped from) at
    the rate limit: more steps to go."""
    if not held or result.target is None:
        return False
    cut = np.abs(result.target - before) > guard.max_step + 1e-12
    return bool((cut & mask(spec, held)).any())
