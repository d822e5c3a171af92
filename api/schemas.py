"""Request and response bodies of the HTTP API (pydantic at the edge only)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

FiniteNumber = Annotated[float, Field(allow_inf_nan=False, strict=True)]
ModeName = Literal["closed", "advisory", "manual"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Estimate(BaseModel):
    """A predicted KPI: mean and calibrated standard deviation (null when not finite)."""

    mean: float | None
    std: float | None


class DecisionOut(BaseModel):
    """A published decision: what the guard let through, why, and what the model predicts."""

    id: str
    version: int = Field(description="Increases by one per published decision; the ETag.")
    line_time_s: float = Field(description="Line time of the snapshot decided on, s.")
    created_at: float = Field(description="Wall time of the decision, s since the epoch.")
    mode: ModeName
    setpoints: dict[str, dict[str, float]] = Field(
        description="{station: {setpoint: value}} to run now (speed; temperature °C)."
    )
    target: dict[str, dict[str, float]] | None = Field(
        description="The optimizer's steady-state target the setpoints ramp toward; null on "
        "fallback."
    )
    predicted: dict[str, Estimate] = Field(description="KPI name -> estimate at the target.")
    status: str
    gap: float | None
    solve_seconds: float | None
    reasons: list[str]
    fallback: bool = Field(description="True when the last-known-good setpoints are held.")
    applied: bool = Field(description="Whether the decision went to the plant.")
    timings: dict[str, float | None] = Field(default_factory=dict)


class DecisionPage(BaseModel):
    """A page of the decision history, oldest first; pass `next_after` as `after` to go on."""

    decisions: list[DecisionOut]
    next_after: int | None


class AckIn(_Strict):
    """What a control system applied: the decision's version and the values actually set."""

    version: Annotated[int, Field(ge=1, strict=True)]
    values: dict[str, dict[str, FiniteNumber]] = Field(
        description="{station: {setpoint: value}} as applied, inside the line's limits."
    )


class AckOut(BaseModel):
    """The stored acknowledgement."""

    client: str = Field(description="The acknowledging key's id.")
    version: int
    values: dict[str, dict[str, float]]
    received_at: float


class StationState(BaseModel):
    name: str
    status: Literal["starved", "busy", "blocked", "down"]
    temperature_c: float | None = Field(description="Sensor reading, °C; null when absent.")
    power_kw: float | None = Field(description="Sensor reading, kW; null when dropped out.")
    setpoints: dict[str, float]


class BufferState(BaseModel):
    after: str = Field(description="The station the buffer follows.")
    level: int
    capacity: int


class StateOut(BaseModel):
    """The latest snapshot of the line."""

    line: str
    time_s: float = Field(description="Line time, s since the run began.")
    stations: list[StationState]
    buffers: list[BufferState]
    power_kw: float | None = Field(description="Total sensed power, kW.")
    good: int = Field(description="Cumulative good parts out.")
    scrap: int = Field(description="Cumulative scrapped parts.")


class ModeOut(BaseModel):
    mode: ModeName


class ModeIn(_Strict):
    mode: ModeName
    reason: Annotated[str, Field(min_length=1, max_length=1000)] = Field(
        description="Why (recorded in the audit log)."
    )


class ModeChangeOut(BaseModel):
    mode: ModeName
    previous: ModeName
    audit_seq: int


class AuditOut(BaseModel):
    seq: int
    at: float
    actor: str
    action: str
    old: Any
    new: Any
    reason: str
    prev_hash: str
    hash: str


class AuditPage(BaseModel):
    """A page of the audit log, oldest first; pass `next_after` as `after` to go on."""

    records: list[AuditOut]
    next_after: int | None


class Health(BaseModel):
    status: Literal["ok"]


class Check(BaseModel):
    ok: bool
    detail: str


class Readiness(BaseModel):
    ready: bool
    checks: dict[str, Check]


class ErrorOut(BaseModel):
    detail: str
