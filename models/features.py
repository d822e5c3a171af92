"""Derive the surrogate's feature schema from a line spec: state in, setpoints in, KPIs out.

Any valid line gets a schema without code changes; `docs/surrogate.md` documents it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from linetwin.models.errors import ModelError
from linetwin.twin import layout as L
from linetwin.twin.params import compile_params
from linetwin.twin.snapshot import Snapshot
from linetwin.twin.spec import SETPOINT_NAMES, LineSpec

DEFAULT_HORIZON_S = 1800.0
LINE_OUTPUTS = ("good_per_hour", "scrap_per_hour", "energy_kwh_per_hour")
OUT_GOOD, OUT_SCRAP, OUT_ENERGY = 0, 1, 2
"""Columns of the line outputs: the profit rate is linear in them (exact MIP embedding)."""


@dataclass(frozen=True)
class FeatureSchema:
    """Names, order and limits of the surrogate's inputs and outputs for one line.

    State features `(n, n_state)`: buffer fill fractions, station status indicators (down,
    blocked, starved), measured temperatures of thermal stations (°C), wear of unreliable
    stations (h), recent good throughput (parts/h). Setpoint features `(n, n_setpoints)`:
    every station's speed, then every thermal station's temperature (°C). Outputs `(n, n_out)`:
    good parts per hour, scrapped parts per hour, energy (kWh/h), then each station's
    utilisation, all as expectations over the next `horizon_s` seconds. The profit rate is
    linear in the first three; scrap rate and energy per part are ratios of them.
    """

    spec_hash: str
    station_names: tuple[str, ...]
    state_names: tuple[str, ...]
    setpoint_names: tuple[str, ...]
    setpoint_slots: tuple[tuple[int, int], ...]  # (station, setpoint kind) per setpoint feature
    output_names: tuple[str, ...]
    setpoint_lower: tuple[float, ...]
    setpoint_upper: tuple[float, ...]
    buffer_capacity: tuple[int, ...]
    thermal_stations: tuple[int, ...]
    wear_stations: tuple[int, ...]
    horizon_s: float = DEFAULT_HORIZON_S

    @classmethod
    def from_spec(cls, spec: LineSpec, horizon_s: float = DEFAULT_HORIZON_S) -> FeatureSchema:
        """Build the schema of `spec` for a prediction horizon of `horizon_s` seconds."""
        if not horizon_s > 0:
            raise ModelError(f"horizon_s must be positive, got {horizon_s}")
        lp = compile_params(spec)
        names = tuple(s.name for s in spec.stations)
        caps = tuple(int(s.buffer_after or 0) for s in spec.stations[:-1])
        thermal = tuple(i for i, s in enumerate(spec.stations) if s.is_thermal)
        # wear matters to the KPIs only where it raises the failure rate
        wear = tuple(
            i
            for i, s in enumerate(spec.stations)
            if s.mtbf_s is not None and s.wear.failure_gain > 0
        )
        state = [f"buffer.{names[i]}" for i in range(len(caps))]
        for flag in ("down", "blocked", "starved"):
            state += [f"{flag}.{n}" for n in names]
        state += [f"temperature.{names[i]}" for i in thermal]
        state += [f"wear.{names[i]}" for i in wear]
        state.append("recent_throughput_per_hour")
        slots = [(i, L.S_SPEED) for i in range(len(names))]
        slots += [(i, L.S_TEMP) for i in thermal]
        sp_names = tuple(f"{names[i]}.{SETPOINT_NAMES[k]}" for i, k in slots)
        outputs = LINE_OUTPUTS + tuple(f"utilisation.{n}" for n in names)
        return cls(
            spec_hash=spec.spec_hash(),
            station_names=names,
            state_names=tuple(state),
            setpoint_names=sp_names,
            setpoint_slots=tuple(slots),
            output_names=outputs,
            setpoint_lower=tuple(float(lp.lower[i, k]) for i, k in slots),
            setpoint_upper=tuple(float(lp.upper[i, k]) for i, k in slots),
            buffer_capacity=caps,
            thermal_stations=thermal,
            wear_stations=wear,
            horizon_s=float(horizon_s),
        )

    @property
    def n_state(self) -> int:
        """Number of state features."""
        return len(self.state_names)

    @property
    def n_setpoints(self) -> int:
        """Number of setpoint features."""
        return len(self.setpoint_names)

    @property
    def n_inputs(self) -> int:
        """State plus setpoint features."""
        return self.n_state + self.n_setpoints

    @property
    def n_outputs(self) -> int:
        """Number of predicted KPIs."""
        return len(self.output_names)

    @property
    def lower(self) -> np.ndarray:
        """Setpoint feature minimums `(n_setpoints,)`."""
        return np.array(self.setpoint_lower)

    @property
    def upper(self) -> np.ndarray:
        """Setpoint feature maximums `(n_setpoints,)`."""
        return np.array(self.setpoint_upper)

    def state_features(self, snap: Snapshot, recent_throughput_per_hour: np.ndarray) -> np.ndarray:
        """Return state features `(n_scenarios, n_state)` of a snapshot.

        A temperature reading that is NaN (fault or dropout) is replaced by the setpoint in
        force: the surrogate is not the place to detect sensor faults (the guard is).
        """
        n = snap.n_scenarios
        caps = np.maximum(np.array(self.buffer_capacity, dtype=float), 1.0)
        status = snap.status
        parts = [snap.buffer_level / caps if caps.size else np.zeros((n, 0))]
        for code in (L.DOWN, L.BLOCKED, L.STARVED):
            parts.append((status == code).astype(float))
        th = list(self.thermal_stations)
        temp = snap.readings.temperature_c[:, th]
        parts.append(np.where(np.isfinite(temp), temp, snap.setpoints[:, th, L.S_TEMP]))
        parts.append(snap.wear[:, list(self.wear_stations)])
        recent = np.broadcast_to(np.asarray(recent_throughput_per_hour, dtype=float), (n,))
        parts.append(recent[:, None])
        return np.concatenate(parts, axis=1)

    def setpoint_features(self, setpoints: np.ndarray) -> np.ndarray:
        """Return setpoint features `(n, n_setpoints)` from a twin setpoint array `(n, S, 2)`."""
        idx = np.array(self.setpoint_slots, dtype=np.int64).reshape(-1, 2)
        return setpoints[:, idx[:, 0], idx[:, 1]]

    def setpoint_array(self, features: np.ndarray, base: np.ndarray) -> np.ndarray:
        """Write setpoint features `(n, n_setpoints)` into copies of `base` `(n, S, 2)`."""
        out = np.array(base, dtype=float, copy=True)
        idx = np.array(self.setpoint_slots, dtype=np.int64).reshape(-1, 2)
        out[:, idx[:, 0], idx[:, 1]] = features
        return out

    def to_json(self) -> dict[str, Any]:
        """Return the schema as plain JSON data."""
        d = self.__dict__.copy()
        return json.loads(json.dumps(d))

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FeatureSchema:
        """Rebuild a schema from `to_json` output."""
        try:
            return cls(
                spec_hash=str(data["spec_hash"]),
                station_names=tuple(data["station_names"]),
                state_names=tuple(data["state_names"]),
                setpoint_names=tuple(data["setpoint_names"]),
                setpoint_slots=tuple((int(a), int(b)) for a, b in data["setpoint_slots"]),
                output_names=tuple(data["output_names"]),
                setpoint_lower=tuple(float(x) for x in data["setpoint_lower"]),
                setpoint_upper=tuple(float(x) for x in data["setpoint_upper"]),
                buffer_capacity=tuple(int(x) for x in data["buffer_capacity"]),
                thermal_stations=tuple(int(x) for x in data["thermal_stations"]),
                wear_stations=tuple(int(x) for x in data["wear_stations"]),
                horizon_s=float(data["horizon_s"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"feature schema is damaged or incomplete: {exc!r}") from None
