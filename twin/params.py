"""Compile a line spec into the arrays the kernel reads, and setpoints into their array."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from linetwin.twin import layout as L
from linetwin.twin.errors import SetpointError
from linetwin.twin.spec import SETPOINT_NAMES, LineSpec, Station


@dataclass(frozen=True)
class LineParams:
    """The kernel's view of a line: `params (n_stations, N_PARAMS)`, `capacity (n_stations,)`."""

    params: np.ndarray
    capacity: np.ndarray
    lower: np.ndarray  # (n_stations, N_SETPOINTS) setpoint minimum (nan where absent)
    upper: np.ndarray  # (n_stations, N_SETPOINTS) setpoint maximum (nan where absent)
    nominal: np.ndarray  # (n_stations, N_SETPOINTS) nominal setpoints (nan where absent)

    @property
    def present(self) -> np.ndarray:
        """Return `(n_stations, N_SETPOINTS)` bool: which setpoints the stations have."""
        return ~np.isnan(self.nominal)


def compile_params(spec: LineSpec) -> LineParams:
    """Turn a validated spec into kernel parameter arrays."""
    n = spec.n_stations
    p = np.zeros((n, L.N_PARAMS))
    cap = np.zeros(n, dtype=np.int64)
    lo = np.full((n, L.N_SETPOINTS), np.nan)
    hi = np.full((n, L.N_SETPOINTS), np.nan)
    nom = np.full((n, L.N_SETPOINTS), np.nan)
    for i, st in enumerate(spec.stations):
        speed = st.setpoints.speed
        p[i, L.P_CYCLE] = st.cycle_time_s
        p[i, L.P_EXPO] = 1.0 if st.processing == "exponential" else 0.0
        _compile_laws(p[i], st)
        p[i, L.P_FAIL] = 1.0 / st.mtbf_s if st.mtbf_s else 0.0
        p[i, L.P_MTTR] = st.mttr_s or 0.0
        p[i, L.P_SCRAP_BASE] = st.scrap.base
        p[i, L.P_SCRAP_SPEED] = st.scrap.speed_gain
        p[i, L.P_SCRAP_TEMP] = st.scrap.temperature_gain
        p[i, L.P_SCRAP_MAX] = st.scrap.max
        p[i, L.P_SPEED_NOM] = speed.nominal
        p[i, L.P_IDLE_KW] = st.energy.idle_kw
        p[i, L.P_RUN_KW] = st.energy.run_kw
        p[i, L.P_ENERGY_EXP] = st.energy.speed_exponent
        p[i, L.P_WEAR_EXP] = st.wear.speed_exponent
        p[i, L.P_WEAR_GAIN] = st.wear.failure_gain
        p[i, L.P_TAU] = 1.0
        cap[i] = st.buffer_after or 0
        lo[i, L.S_SPEED], hi[i, L.S_SPEED], nom[i, L.S_SPEED] = speed.min, speed.max, speed.nominal
        if st.thermal is not None and st.setpoints.temperature is not None:
            th, temp = st.thermal, st.setpoints.temperature
            p[i, L.P_THERMAL] = 1.0
            p[i, L.P_AMBIENT] = th.ambient_c
            p[i, L.P_TAU] = th.time_constant_s
            span = max(temp.max - th.ambient_c, 1e-9)
            p[i, L.P_HEAT_PER_C] = th.heater_kw / span
            p[i, L.P_IDEAL_LO] = th.ideal_min_c
            p[i, L.P_IDEAL_HI] = th.ideal_max_c
            lo[i, L.S_TEMP], hi[i, L.S_TEMP], nom[i, L.S_TEMP] = temp.min, temp.max, temp.nominal
    return LineParams(p, cap, lo, hi, nom)


_PROCESSING_LAWS = {
    "deterministic": L.LAW_DETERMINISTIC,
    "exponential": L.LAW_EXPONENTIAL,
    "gamma": L.LAW_GAMMA,
    "lognormal": L.LAW_LOGNORMAL,
}


def lognormal_sigma(cv: float) -> float:
    """Return the sigma of a lognormal law with coefficient of variation `cv`."""
    return math.sqrt(math.log1p(cv * cv))


def weibull_scale(mean: float, shape: float) -> float:
    """Return the scale of a Weibull law with `shape` and mean `mean` (same unit as mean)."""
    return mean / math.gamma(1.0 + 1.0 / shape)


def _compile_laws(row: np.ndarray, st: Station) -> None:
    """Fill the law columns of one station's parameter row `(N_PARAMS,)`."""
    row[L.P_PROC_LAW] = _PROCESSING_LAWS[st.processing]
    if st.processing == "gamma" and st.cv is not None:
        row[L.P_PROC_SHAPE] = 1.0 / (st.cv * st.cv)
    elif st.processing == "lognormal" and st.cv is not None:
        row[L.P_PROC_SHAPE] = lognormal_sigma(st.cv)
    row[L.P_FAIL_LAW] = L.LAW_EXPONENTIAL
    if st.failure_law == "weibull" and st.failure_shape is not None and st.mtbf_s is not None:
        row[L.P_FAIL_LAW] = L.LAW_WEIBULL
        row[L.P_FAIL_SHAPE] = st.failure_shape
        row[L.P_FAIL_SCALE] = weibull_scale(st.mtbf_s, st.failure_shape)
    row[L.P_REPAIR_LAW] = L.LAW_EXPONENTIAL
    if st.repair_law == "lognormal" and st.repair_cv is not None:
        row[L.P_REPAIR_LAW] = L.LAW_LOGNORMAL
        row[L.P_REPAIR_SIGMA] = lognormal_sigma(st.repair_cv)


def nominal_setpoints(lp: LineParams, n_scenarios: int) -> np.ndarray:
    """Return nominal setpoints `(n_scenarios, n_stations, N_SETPOINTS)`; 0 where absent."""
    base = np.nan_to_num(lp.nominal, nan=0.0)
    return np.broadcast_to(base, (n_scenarios, *base.shape)).copy()


def setpoints_from_mapping(
    spec: LineSpec,
    lp: LineParams,
    values: Mapping[str, Mapping[str, float]],
    n_scenarios: int = 1,
    source: str = "setpoints",
) -> np.ndarray:
    """Build a setpoint array from `{station: {setpoint: value}}`; unnamed ones stay nominal.

    Unknown stations or setpoints, non-numbers, non-finite values and values outside the
    spec's limits raise SetpointError naming `source`, the key and the limit.
    """
    sp = nominal_setpoints(lp, 1)[0]
    if not isinstance(values, Mapping):
        raise SetpointError(
            f"{source}: expected an object of stations, got {type(values).__name__}"
        )
    for station, entries in values.items():
        names = [s.name for s in spec.stations]
        if station not in names:
            raise SetpointError(
                f"{source}: unknown station {station!r} "
                f"(line {spec.name!r} has: {', '.join(names)})"
            )
        i = names.index(station)
        if not isinstance(entries, Mapping):
            raise SetpointError(f"{source}: {station}: expected an object of setpoints")
        for name, value in entries.items():
            where = f"{source}: {station}.{name}"
            if name not in SETPOINT_NAMES or not lp.present[i, SETPOINT_NAMES.index(name)]:
                have = [n for k, n in enumerate(SETPOINT_NAMES) if lp.present[i, k]]
                raise SetpointError(
                    f"{where}: station {station!r} has no setpoint {name!r} "
                    f"(has: {', '.join(have)})"
                )
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise SetpointError(f"{where}: expected a number, got {value!r}")
            k = SETPOINT_NAMES.index(name)
            check_in_limits(float(value), lp.lower[i, k], lp.upper[i, k], where)
            sp[i, k] = float(value)
    return np.broadcast_to(sp, (n_scenarios, *sp.shape)).copy()


def check_in_limits(value: float, low: float, high: float, where: str) -> None:
    """Raise SetpointError unless `value` is finite and within [low, high]."""
    if not np.isfinite(value):
        raise SetpointError(f"{where}: must be a finite number, got {value!r}")
    if not low <= value <= high:
        raise SetpointError(f"{where}: {value!r} is outside its limits [{low}, {high}]")


def validate_setpoint_array(lp: LineParams, sp: np.ndarray, source: str = "setpoints") -> None:
    """Raise SetpointError unless `sp` has the line's shape and every present value is legal."""
    n = lp.params.shape[0]
    if sp.ndim != 3 or sp.shape[1:] != (n, L.N_SETPOINTS):
        raise SetpointError(
            f"{source}: expected shape (n_scenarios, {n}, {L.N_SETPOINTS}), got {sp.shape}"
        )
    present = np.broadcast_to(lp.present, sp.shape)
    vals = sp[present]
    lo = np.broadcast_to(lp.lower, sp.shape)[present]
    hi = np.broadcast_to(lp.upper, sp.shape)[present]
    bad = ~(np.isfinite(vals) & (vals >= lo) & (vals <= hi))
    if bad.any():
        idx = np.argwhere(present)[np.flatnonzero(bad)[0]]
        s, i, k = (int(x) for x in idx)
        check_in_limits(
            float(sp[s, i, k]),
            lp.lower[i, k],
            lp.upper[i, k],
            f"{source}: scenario {s}, station {i} {SETPOINT_NAMES[k]}",
        )


def setpoints_to_mapping(spec: LineSpec, setpoints: np.ndarray) -> dict[str, dict[str, float]]:
    """Return `{station: {setpoint: value}}` of one line's setpoints `(n_stations, 2)`."""
    out: dict[str, dict[str, float]] = {}
    for i, st in enumerate(spec.stations):
        entry = {"speed": float(setpoints[i, L.S_SPEED])}
        if st.is_thermal:
            entry["temperature"] = float(setpoints[i, L.S_TEMP])
        out[st.name] = entry
    return out
