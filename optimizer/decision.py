"""The decision: one type from the solver to the poller, and its one wire codec.

`Decision` is what the controller publishes. `encode(decision, spec)` makes the JSON object
every consumer sees (the store's payload, `GET /v1/setpoints`, the history, the poller; the
API's `DecisionOut` schema documents it) and `decode(payload, spec)` makes a `Decision` of it
again. `validate(payload)` checks a payload's shape without the line's spec: what a polling
client, which has no spec, can check. Numbers that are not finite (a prediction the model could
not make) travel as null; setpoints and targets are always finite, or the codec refuses them.

Importing this module imports neither torch nor the twin's kernels (numba): a poller decodes
without them. The parts that need the line import the twin when they are called, and a caller
that has a `LineSpec` has imported the twin already.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import numpy as np

from linetwin.optimizer.errors import DecisionCodecError
from linetwin.optimizer.hold import HoldSummary

if TYPE_CHECKING:
    from linetwin.twin.spec import LineSpec

Setpoints = dict[str, dict[str, float]]
"""`{station: {setpoint: value}}` (speed; temperature °C)."""


class Mode(StrEnum):
    """Who decides what the plant runs."""

    CLOSED = "closed"
    ADVISORY = "advisory"
    MANUAL = "manual"


@dataclass(frozen=True)
class Decision:
    """One published decision.

    `setpoints (n_stations, 2)` is what the guard lets through this cycle (speed, temperature
    °C; 0 where a station has no such setpoint), `target` the optimizer's steady-state target
    (None on fallback), `predicted` KPI name -> (mean, std) at the target, `applied` whether
    it went to the plant (closed mode, or approved in advisory mode). `version` is assigned by
    the store that publishes it (0 before).
    """

    id: str
    version: int
    line_time_s: float
    created_at: float
    mode: Mode
    setpoints: np.ndarray
    target: np.ndarray | None
    predicted: dict[str, tuple[float, float]]
    status: str
    gap: float | None
    solve_seconds: float
    reasons: tuple[str, ...]
    fallback: bool
    applied: bool
    timings: dict[str, float] = field(default_factory=dict)
    hold: HoldSummary | None = None

    def setpoint_mapping(self, spec: LineSpec, which: str = "setpoints") -> Setpoints:
        """`{station: {setpoint: value}}` of `setpoints` or `target` ({} when None)."""
        arr = self.setpoints if which == "setpoints" else self.target
        return {} if arr is None else _mapping(spec, arr, which)


FIELDS = (
    "id",
    "version",
    "line_time_s",
    "created_at",
    "mode",
    "setpoints",
    "target",
    "predicted",
    "status",
    "gap",
    "solve_seconds",
    "reasons",
    "fallback",
    "applied",
    "timings",
    "hold",
)
"""The payload's keys, in the order `encode` writes them."""


# -- encode ----------------------------------------------------------------------------------
def encode(decision: Decision, spec: LineSpec) -> dict[str, Any]:
    """Return `decision` as a JSON-ready object of `FIELDS` (strict JSON: no NaN).

    Raises `DecisionCodecError` when a setpoint or target is not finite, or the arrays do not
    have the line's shape `(n_stations, 2)`.
    """
    return {
        "id": str(decision.id),
        "version": int(decision.version),
        "line_time_s": _finite(decision.line_time_s, "line_time_s"),
        "created_at": _finite(decision.created_at, "created_at"),
        "mode": str(Mode(decision.mode)),
        "setpoints": _mapping(spec, decision.setpoints, "setpoints"),
        "target": None if decision.target is None else _mapping(spec, decision.target, "target"),
        "predicted": {
            str(k): {"mean": _number(m), "std": _number(s)}
            for k, (m, s) in decision.predicted.items()
        },
        "status": str(decision.status),
        "gap": _number(decision.gap),
        "solve_seconds": _number(decision.solve_seconds),
        "reasons": [str(r) for r in decision.reasons],
        "fallback": bool(decision.fallback),
        "applied": bool(decision.applied),
        "timings": {str(k): _number(v) for k, v in decision.timings.items()},
        "hold": None if decision.hold is None else _hold_json(decision.hold),
    }


def _hold_json(hold: HoldSummary) -> dict[str, Any]:
    return {k: _number(v) if isinstance(v, float) else v for k, v in hold.to_json().items()}


def _number(value: float | None) -> float | None:
    """A finite float, or None (null) for None, NaN and infinities."""
    if value is None:
        return None
    v = float(value)
    return v if math.isfinite(v) else None


def _finite(value: float, where: str) -> float:
    v = float(value)
    if not math.isfinite(v):
        raise DecisionCodecError(f"decision.{where}: must be a finite number, got {v!r}")
    return v


def _mapping(spec: LineSpec, values: np.ndarray, where: str) -> Setpoints:
    from linetwin.twin.params import setpoints_to_mapping

    arr = np.asarray(values, dtype=float)
    if arr.shape != (spec.n_stations, 2):
        raise DecisionCodecError(
            f"decision.{where}: expected shape ({spec.n_stations}, 2) for line {spec.name!r}, "
            f"got {arr.shape}"
        )
    out = setpoints_to_mapping(spec, arr)
    for station, entries in out.items():
        for name, value in entries.items():
            if not math.isfinite(value):
                raise DecisionCodecError(
                    f"decision.{where}.{station}.{name}: must be a finite number, got {value!r}"
                )
    return out


# -- validate (no spec needed) ---------------------------------------------------------------
def validate(payload: Any) -> dict[str, Any]:
    """Check a payload's shape and return its fields (`FIELDS`; numbers as float, null as
    None; `timings` {} when absent; unknown keys are left out). No line spec is needed, so
    stations and setpoint names are not checked against a line (`decode` does that).

    Raises `DecisionCodecError` naming the first bad field, e.g. `decision.setpoints.a.speed`.
    """
    if not isinstance(payload, Mapping):
        raise DecisionCodecError(f"decision: expected an object, got {type(payload).__name__}")

    def get(key: str) -> Any:
        if key not in payload:
            raise DecisionCodecError(f"decision.{key}: missing")
        return payload[key]

    ident = get("id")
    if not isinstance(ident, str) or not ident:
        raise DecisionCodecError(f"decision.id: expected a non-empty string, got {ident!r}")
    version = get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        raise DecisionCodecError(f"decision.version: expected an integer >= 0, got {version!r}")
    mode = get("mode")
    if mode not in tuple(Mode):
        raise DecisionCodecError(f"decision.mode: expected one of {', '.join(Mode)}, got {mode!r}")
    status = get("status")
    if not isinstance(status, str):
        raise DecisionCodecError(f"decision.status: expected a string, got {status!r}")
    reasons = get("reasons")
    if not isinstance(reasons, list) or not all(isinstance(r, str) for r in reasons):
        raise DecisionCodecError(f"decision.reasons: expected a list of strings, got {reasons!r}")
    flags = {}
    for key in ("fallback", "applied"):
        flag = get(key)
        if not isinstance(flag, bool):
            raise DecisionCodecError(f"decision.{key}: expected true or false, got {flag!r}")
        flags[key] = flag
    predicted = get("predicted")
    if not isinstance(predicted, Mapping):
        raise DecisionCodecError(f"decision.predicted: expected an object, got {predicted!r}")
    estimates: dict[str, dict[str, float | None]] = {}
    for kpi, est in predicted.items():
        if not isinstance(est, Mapping):
            raise DecisionCodecError(f"decision.predicted.{kpi}: expected an object")
        estimates[str(kpi)] = {
            k: _read_number(est.get(k), f"predicted.{kpi}.{k}", null=True) for k in ("mean", "std")
        }
    timings = payload.get("timings", {})
    if not isinstance(timings, Mapping):
        raise DecisionCodecError(f"decision.timings: expected an object, got {timings!r}")
    target = get("target")
    hold = payload.get("hold")  # decisions stored before the steady hold have none
    if hold is not None:
        try:
            hold = HoldSummary.from_json(hold).to_json()
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise DecisionCodecError(f"decision.hold: malformed ({exc!r}): {hold!r}") from None
    return {
        "id": ident,
        "version": version,
        "line_time_s": _read_number(get("line_time_s"), "line_time_s"),
        "created_at": _read_number(get("created_at"), "created_at"),
        "mode": mode,
        "setpoints": _read_setpoints(get("setpoints"), "setpoints"),
        "target": None if target is None else _read_setpoints(target, "target"),
        "predicted": estimates,
        "status": status,
        "gap": _read_number(get("gap"), "gap", null=True),
        "solve_seconds": _read_number(get("solve_seconds"), "solve_seconds", null=True),
        "reasons": list(reasons),
        **flags,
        "timings": {str(k): _read_number(v, f"timings.{k}", null=True) for k, v in timings.items()},
        "hold": hold,
    }


def _read_number(value: Any, where: str, null: bool = False) -> Any:
    if value is None and null:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        what = "a finite number or null" if null else "a finite number"
        raise DecisionCodecError(f"decision.{where}: expected {what}, got {value!r}")
    return float(value)


def _read_setpoints(data: Any, where: str) -> Setpoints:
    if not isinstance(data, Mapping) or not data:
        raise DecisionCodecError(f"decision.{where}: expected a non-empty object of stations")
    out: Setpoints = {}
    for station, entries in data.items():
        if not isinstance(entries, Mapping) or not entries:
            raise DecisionCodecError(
                f"decision.{where}.{station}: expected a non-empty object of setpoints"
            )
        out[str(station)] = {
            str(name): _read_number(value, f"{where}.{station}.{name}")
            for name, value in entries.items()
        }
    return out


# -- decode ----------------------------------------------------------------------------------
def decode(payload: Any, spec: LineSpec) -> Decision:
    """Rebuild the `Decision` of `spec` that `encode` wrote (nulls become NaN, a null `gap`
    None). Every station of the line must carry exactly its setpoints.

    Raises `DecisionCodecError` naming the first bad field.
    """
    data = validate(payload)

    def nan(value: float | None) -> float:
        return math.nan if value is None else value

    return Decision(
        id=data["id"],
        version=data["version"],
        line_time_s=data["line_time_s"],
        created_at=data["created_at"],
        mode=Mode(data["mode"]),
        setpoints=_array(spec, data["setpoints"], "setpoints"),
        target=None if data["target"] is None else _array(spec, data["target"], "target"),
        predicted={k: (nan(v["mean"]), nan(v["std"])) for k, v in data["predicted"].items()},
        status=data["status"],
        gap=data["gap"],
        solve_seconds=nan(data["solve_seconds"]),
        reasons=tuple(data["reasons"]),
        fallback=data["fallback"],
        applied=data["applied"],
        timings={k: nan(v) for k, v in data["timings"].items()},
        hold=None if data["hold"] is None else HoldSummary.from_json(data["hold"]),
    )


def _array(spec: LineSpec, mapping: Setpoints, where: str) -> np.ndarray:
    """`(n_stations, 2)` of a checked mapping: the line's stations, each with its setpoints."""
    from linetwin.twin.spec import SETPOINT_NAMES

    names = [st.name for st in spec.stations]
    known = set(names)
    for station in mapping:
        if station not in known:
            raise DecisionCodecError(
                f"decision.{where}.{station}: unknown station (line {spec.name!r} has: "
                f"{', '.join(names)})"
            )
    out = np.zeros((len(names), len(SETPOINT_NAMES)))
    for i, st in enumerate(spec.stations):
        have = SETPOINT_NAMES if st.is_thermal else SETPOINT_NAMES[:1]
        entries = mapping.get(st.name)
        if entries is None or set(entries) != set(have):
            raise DecisionCodecError(
                f"decision.{where}.{st.name}: expected the setpoints {', '.join(have)}, got "
                f"{', '.join(entries or {}) or 'none'}"
            )
        for k, name in enumerate(have):
            out[i, k] = entries[name]
    return out
