"""The connector's status, the outcome of a write, the reconnect backoff and the write check."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np


def backoff_delay(attempt: int, initial_s: float, max_s: float, rng: np.random.Generator) -> float:
    """Return the wait before reconnect `attempt` (0-based), in s.

    `min(max_s, initial_s * 2**attempt)` scaled by a uniform draw in [0.5, 1): never above
    `max_s`, never below half of the capped exponential (so clients spread out).
    """
    base = min(max_s, initial_s * 2.0 ** min(attempt, 60))
    return float(base * rng.uniform(0.5, 1.0))


@dataclass(frozen=True)
class ConnectorStatus:
    """What the connector is doing. Times in s; `state` is stopped, connecting, connected or
    reconnecting; `error_kind` auth, certificate, connection or config."""

    state: str
    endpoint: str
    last_error: str | None = None
    error_kind: str | None = None
    failed_attempts: int = 0
    next_retry_s: float | None = None
    rows_delivered: int = 0
    rows_incomplete: int = 0
    rows_rejected: int = 0
    rows_error: str | None = None
    last_row_time_s: float | None = None
    incomplete_reason: str | None = None
    writes_done: int = 0
    writes_refused: int = 0
    writes_failed: int = 0


@dataclass(frozen=True)
class WriteOutcome:
    """The result of one `write_setpoints` call.

    `written` is what reached the plant `{station: {setpoint: value}}`; `refused` says why
    nothing was written (None when the write went through); `skipped` names setpoints the
    mapping has no writable node for.
    """

    written: dict[str, dict[str, float]]
    refused: str | None = None
    skipped: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        """Whether the values went to the plant."""
        return self.refused is None


def plan_writes(
    limits: Mapping[tuple[str, str], tuple[float, float]],
    setpoints: Mapping[str, Mapping[str, float]],
    line: str,
) -> tuple[list[tuple[str, str, float]], str | None]:
    """Read `setpoints` once into `(station, setpoint, value)`; say why they may not go to
    the plant (None: all finite, known and inside the line spec's limits)."""
    if not isinstance(setpoints, Mapping):
        return [], f"expected {{station: {{setpoint: value}}}}, got {type(setpoints).__name__}"
    plan: list[tuple[str, str, float]] = []
    for station, per in setpoints.items():
        if not isinstance(per, Mapping):
            return [], f"{station}: expected {{setpoint: value}}, got {type(per).__name__}"
        for name, value in per.items():
            lim = limits.get((station, name))
            if lim is None:
                return [], f"{station}.{name}: no such setpoint on line {line!r}"
            ok = isinstance(value, int | float | np.floating | np.integer)
            if not ok or isinstance(value, bool) or not math.isfinite(float(value)):
                return [], f"{station}.{name} = {value!r}: not a finite number"
            v = float(value)
            if not lim[0] <= v <= lim[1]:
                return [], (
                    f"{station}.{name} = {v!r} is outside the line spec's "
                    f"limits [{lim[0]}, {lim[1]}]"
                )
            plan.append((station, name, v))
    return plan, None
