"""Measure the line: analog sensor readings with noise and injectable faults."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from linetwin.twin import layout as L
from linetwin.twin.errors import SpecError
from linetwin.twin.params import LineParams
from linetwin.twin.spec import LineSpec

CHANNELS = ("temperature", "power", "vibration")
"""Analog channels, in the order of `Readings.valid`'s last axis."""

FaultKind = Literal["stuck", "nan", "dropout", "drift"]
FAULT_KINDS = ("stuck", "nan", "dropout", "drift")


@dataclass(frozen=True)
class Readings:
    """Sensor values at one instant, `(n_scenarios, n_stations)` each.

    temperature_c (°C, NaN on stations without thermal dynamics), power_kw (kW, electrical plus
    heating), vibration_mm_s (mm/s). `valid (n_scenarios, n_stations, 3)` is False where a
    channel dropped out (its value is then NaN); a NaN with valid True is a faulty sensor.
    """

    temperature_c: np.ndarray
    power_kw: np.ndarray
    vibration_mm_s: np.ndarray
    valid: np.ndarray

    def channel(self, name: str) -> np.ndarray:
        """Return the array of channel `name` ('temperature', 'power' or 'vibration')."""
        return {
            "temperature": self.temperature_c,
            "power": self.power_kw,
            "vibration": self.vibration_mm_s,
        }[name]


@dataclass(frozen=True)
class SensorFault:
    """A fault on one channel of one station from `start_s` to `end_s` (line time, s).

    kinds: `stuck` (holds the value read when the fault began), `nan` (reads NaN),
    `dropout` (no reading: NaN and valid False), `drift` (adds `rate_per_h` per hour since
    the start). `scenarios` limits the fault to those scenario indices (None: all).
    """

    station: str
    channel: str
    kind: str
    start_s: float = 0.0
    end_s: float = math.inf
    rate_per_h: float = 0.0
    scenarios: tuple[int, ...] | None = None


def true_values(
    lp: LineParams, fstate: np.ndarray, istate: np.ndarray, vib: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return noise-free (temperature °C, power kW, vibration mm/s), `(n_sc, n_st)` each.

    `vib (n_stations, 2)` holds each station's nominal vibration and its wear gain.
    """
    p = lp.params
    status = istate[:, :, L.I_STATUS]
    busy = status == L.BUSY
    thermal = p[:, L.P_THERMAL] > 0
    temp = np.where(thermal, fstate[:, :, L.F_TEMP], np.nan)
    heating = np.where(
        thermal,
        p[:, L.P_HEAT_PER_C] * np.maximum(fstate[:, :, L.F_TEMP] - p[:, L.P_AMBIENT], 0.0),
        0.0,
    )
    power = np.where(busy, fstate[:, :, L.F_RUN_KW], p[:, L.P_IDLE_KW]) + heating
    ratio = fstate[:, :, L.F_SPEED] / p[:, L.P_SPEED_NOM]
    running = vib[:, 0] * ratio**2 * (1.0 + vib[:, 1] * fstate[:, :, L.F_WEAR])
    vibration = np.where(busy, running, np.where(status == L.DOWN, 0.0, 0.1 * vib[:, 0]))
    return temp, power, vibration


class Sensors:
    """Turn exact state into readings: Gaussian noise from `rng`, then the injected faults."""

    def __init__(
        self,
        spec: LineSpec,
        lp: LineParams,
        rng: np.random.Generator,
        faults: Sequence[SensorFault] = (),
        n_scenarios: int | None = None,
    ) -> None:
        self.lp = lp
        self.rng = rng
        self.noise = np.array(
            [
                [
                    s.sensors.temperature_noise_c,
                    s.sensors.power_noise_kw,
                    s.sensors.vibration_noise_mm_s,
                ]
                for s in spec.stations
            ]
        )
        self.vib = np.array(
            [[s.sensors.vibration_mm_s, s.sensors.vibration_wear_gain] for s in spec.stations]
        )
        names = [s.name for s in spec.stations]
        self.faults: list[tuple[SensorFault, int, int]] = []
        for f in faults:
            where = f"sensor fault on {f.station!r}"
            if f.station not in names:
                raise SpecError(f"{where}: unknown station (have: {', '.join(names)})")
            if f.channel not in CHANNELS:
                raise SpecError(f"{where}: unknown channel {f.channel!r} (have: {CHANNELS})")
            if f.kind not in FAULT_KINDS:
                raise SpecError(f"{where}: unknown kind {f.kind!r} (have: {FAULT_KINDS})")
            if not (math.isfinite(f.start_s) and math.isfinite(f.rate_per_h)):
                raise SpecError(
                    f"{where}: start_s and rate_per_h must be finite "
                    f"(got {f.start_s}, {f.rate_per_h})"
                )
            if f.scenarios is not None and n_scenarios is not None:
                bad = [k for k in f.scenarios if not 0 <= k < n_scenarios]
                if bad:
                    raise SpecError(f"{where}: scenarios {bad} are not in 0..{n_scenarios - 1}")
            if not f.end_s > f.start_s:
                raise SpecError(f"{where}: end_s must be after start_s (got {f.end_s})")
            self.faults.append((f, names.index(f.station), CHANNELS.index(f.channel)))
        self._stuck: dict[int, np.ndarray] = {}

    def read(self, fstate: np.ndarray, istate: np.ndarray, time_s: float) -> Readings:
        """Return the readings of every scenario at `time_s`."""
        values = np.stack(true_values(self.lp, fstate, istate, self.vib), axis=-1)
        values = values + self.rng.standard_normal(values.shape) * self.noise
        valid = np.ones(values.shape, dtype=bool)
        for k, (f, i, c) in enumerate(self.faults):
            rows = slice(None) if f.scenarios is None else list(f.scenarios)
            if not f.start_s <= time_s < f.end_s:
                self._stuck.pop(k, None)
                continue
            if f.kind == "stuck":
                held = self._stuck.setdefault(k, values[rows, i, c].copy())
                values[rows, i, c] = held
            elif f.kind == "nan":
                values[rows, i, c] = np.nan
            elif f.kind == "dropout":
                values[rows, i, c] = np.nan
                valid[rows, i, c] = False
            else:
                values[rows, i, c] += f.rate_per_h * (time_s - f.start_s) / 3600.0
        return Readings(values[..., 0].copy(), values[..., 1].copy(), values[..., 2].copy(), valid)
