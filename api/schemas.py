"""Request and response bodies of the HTTP API (pydantic at the edge only)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from linetwin.api.text import check_text
from linetwin.optimizer.problem import MOVE_MIN_GAIN_PER_HOUR, MOVE_SIGNIFICANCE

FiniteNumber = Annotated[float, Field(allow_inf_nan=False, strict=True)]
ModeName = Literal["closed", "advisory", "manual"]
MAX_STATIONS = 500
"""Most stations one value map in a request may name (acknowledgement, override, candidate)."""
MAX_SETPOINTS = 8
"""Most setpoints one station's entry in a value map may name."""
MAX_CANDIDATES = 64
"""Most candidates one what-if request may evaluate."""


def _reason(text: str) -> str:
    return check_text(text, "reason")


Reason = Annotated[
    str,
    Field(min_length=1, max_length=1000, description="Why (audited)."),
    AfterValidator(_reason),
]
"""An audited reason: 1 to 1000 characters, no control, bidi or line-break characters."""
SetpointValues = Annotated[
    dict[str, Annotated[dict[str, FiniteNumber], Field(max_length=MAX_SETPOINTS)]],
    Field(max_length=MAX_STATIONS),
]
"""`{station: {setpoint: value}}`: at most `MAX_STATIONS` stations of `MAX_SETPOINTS` each."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Estimate(BaseModel):
    """A predicted KPI: mean and calibrated standard deviation (null when not finite)."""

    mean: float | None
    std: float | None


class BiasOut(BaseModel):
    """How one KPI's predictions compared with what the line then did."""

    bias: float = Field(description="Mean of predicted minus realised over the closed pairs.")
    bias_se: float = Field(description="Standard error of that bias (overlapping horizons).")
    pairs: int = Field(description="Closed (prediction, outcome) pairs in the window.")
    coverage_90: float | None = Field(
        description="Share of realised values inside the model's 90% band; null before any."
    )


class PredictionPairOut(BaseModel):
    """One prediction and what the line realised over the same window."""

    start_time_s: float = Field(description="Line time the prediction was made at, s.")
    end_time_s: float = Field(description="Line time its horizon ended at, s.")
    predicted: dict[str, Estimate] = Field(description="As the model predicted (uncorrected).")
    realised: dict[str, float | None] = Field(description="Measured over [start, end].")


class PredictionsOut(BaseModel):
    """The controller's predictions against what the line then did, over matching windows:
    published predictions are corrected by `bias` (mean minus bias, std widened by its
    standard error)."""

    horizon_s: float = Field(description="The model's horizon: each pair's window, line s.")
    open_pairs: int = Field(description="Predictions whose horizon has not ended yet.")
    kpis: dict[str, BiasOut]
    recent: list[PredictionPairOut] = Field(description="The newest closed pairs, oldest first.")


class HoldOut(BaseModel):
    """Why the cycle's target moved or held: the new optimum's paired, calibrated profit gain
    over the held target (and over what the plant runs), its one-sided bounds at the
    objective's significance level, and the threshold it had to clear."""

    moved: bool = Field(description="Whether the target moved to the new optimum.")
    why: str = Field(
        description="significant_gain, no_significant_gain, stopped, running_breaks_cap or "
        "test_off."
    )
    gain_per_hour: float | None = Field(description="Mean gain over the held target, per hour.")
    gain_low: float | None = Field(description="Lower bound of that gain; null with the test off.")
    gain_high: float | None = Field(description="Upper bound of that gain; null with the test off.")
    running_gain_per_hour: float | None = Field(
        description="Mean gain over the setpoints the plant runs, per hour."
    )
    running_gain_low: float | None
    running_gain_high: float | None = None
    min_gain_per_hour: float | None = Field(description="The objective's minimum gain, per hour.")
    significance: float | None = Field(description="The objective's significance level.")
    dropped: str | None = Field(
        description="Why a held target was given up before judging (out_of_envelope, "
        "breaks_cap, locked), else null."
    )


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
    hold: HoldOut | None = Field(
        None, description="Why the target moved or held this cycle; null when nothing was solved."
    )


class DecisionPage(BaseModel):
    """A page of the decision history, oldest first; pass `next_after` as `after` to go on."""

    decisions: list[DecisionOut]
    next_after: int | None


class AckIn(_Strict):
    """What a control system applied: the decision's version and the values actually set."""

    version: Annotated[int, Field(ge=1, le=2**63 - 1, strict=True)]
    values: SetpointValues = Field(
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
    reason: Reason = Field(description="Why (recorded in the audit log).")


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
    code: str | None = Field(
        default=None, description="A machine-readable condition (`no_decision`), when any."
    )


class ReasonIn(_Strict):
    reason: Reason


class ChangeOut(BaseModel):
    """A change of plant behaviour: the decision it published (if any) and its audit record."""

    version: int | None = Field(description="Version published by the change; null when none.")
    audit_seq: int


class DecisionChangeOut(BaseModel):
    """A change that published a decision, with the decision and its audit record."""

    decision: DecisionOut
    audit_seq: int


class OverrideIn(_Strict):
    values: SetpointValues = Field(
        description="{station: {setpoint: value}} to hold, inside the line's limits."
    )
    reason: Reason


class OverridesOut(BaseModel):
    """Setpoints engineers hold: {station: {setpoint: value}} (locked for the optimizer)."""

    held: dict[str, dict[str, float]]
    ramping: bool = Field(description="Whether the plant is still ramping toward them.")


class RollbackIn(_Strict):
    version: Annotated[int, Field(ge=1, le=2**63 - 1, strict=True)] = Field(
        description="The earlier decision whose setpoints to publish again."
    )
    reason: Reason


class ObjectiveOut(BaseModel):
    """Profit weights and caps (profit/h = good·good/h - scrap·scrap/h - energy·kWh/h)."""

    good_weight: float
    scrap_weight: float
    energy_weight: float
    energy_cap_kwh_per_hour: float | None
    scrap_rate_cap: float | None
    move_min_gain_per_hour: float = Field(
        description="A setpoint target moves only for a predicted profit gain above this, /h."
    )
    move_significance: float = Field(
        description="Significance level of the move test: the gain's lower one-sided bound at "
        "this level must exceed move_min_gain_per_hour (1: no test, every optimum is taken)."
    )


class ObjectiveIn(_Strict):
    good_weight: Annotated[float, Field(ge=0, allow_inf_nan=False, strict=True)]
    scrap_weight: Annotated[float, Field(ge=0, allow_inf_nan=False, strict=True)]
    energy_weight: Annotated[float, Field(ge=0, allow_inf_nan=False, strict=True)]
    energy_cap_kwh_per_hour: Annotated[
        float | None, Field(gt=0, allow_inf_nan=False, strict=True)
    ] = None
    scrap_rate_cap: Annotated[float | None, Field(gt=0, lt=1, allow_inf_nan=False, strict=True)] = (
        None
    )
    move_min_gain_per_hour: Annotated[float, Field(ge=0, allow_inf_nan=False, strict=True)] = (
        MOVE_MIN_GAIN_PER_HOUR
    )
    move_significance: Annotated[float, Field(gt=0, le=1, allow_inf_nan=False, strict=True)] = (
        MOVE_SIGNIFICANCE
    )
    reason: Reason


class ObjectiveChangeOut(BaseModel):
    objective: ObjectiveOut
    previous: ObjectiveOut
    audit_seq: int


class WhatIfTwinIn(_Strict):
    """Forked twin runs from the latest snapshot: `seeds` runs of `hours` per candidate."""

    seeds: Annotated[int, Field(ge=2, le=32, strict=True)] = 4
    hours: Annotated[float, Field(gt=0, le=8, allow_inf_nan=False)] = 1.0
    seed: Annotated[int, Field(ge=0, strict=True)] = 0


class WhatIfIn(_Strict):
    candidates: Annotated[list[SetpointValues], Field(min_length=1, max_length=MAX_CANDIDATES)] = (
        Field(description="Candidate setpoints; what one leaves out stays as the plant runs it.")
    )
    twin: WhatIfTwinIn | None = Field(
        default=None, description="Also run forked twins (at most 8 candidates)."
    )


class Interval(BaseModel):
    """A KPI over forked runs: mean, std across runs and a 95% confidence interval of the mean
    (Student t); null when not finite (no good parts, say)."""

    mean: float | None
    std: float | None
    ci_low: float | None
    ci_high: float | None


class WhatIfResult(BaseModel):
    setpoints: dict[str, dict[str, float]]
    surrogate: dict[str, Estimate] = Field(description="KPI -> mean and calibrated std.")
    ood_score: float | None
    in_envelope: bool = Field(description="OOD score within the surrogate's threshold.")
    twin: dict[str, Interval] | None = Field(description="KPI -> forked-run interval.")


class WhatIfOut(BaseModel):
    line_time_s: float = Field(description="Line time of the snapshot evaluated from.")
    results: list[WhatIfResult]
    runs: int = Field(description="Forked twin runs per candidate (0: none).")
    hours: float = Field(description="Line hours per forked run.")


class KpisOut(BaseModel):
    """KPIs of the real-time line over a recent window (null when not finite)."""

    window_s: float = Field(description="Actual window, line s (shorter early on).")
    from_time_s: float
    to_time_s: float
    throughput_per_hour: float | None
    scrap_per_hour: float | None
    scrap_rate: float | None
    energy_kwh_per_hour: float | None
    energy_kwh_per_good_part: float | None
    profit_per_hour: float | None
    oee: float | None = Field(
        description="Overall equipment effectiveness as ISO 22400-2 defines it, in [0, 1]: "
        "availability x performance x quality over the window (all of it planned time). "
        "Availability: 1 - the constraint station's downtime / window (the constraint is the "
        "station with the largest cycle time / its maximum speed). Performance: (good + scrap) "
        "x that ideal time per part / available time, against the fastest allowed rate, so "
        "never above 1. Quality: good / (good + scrap)."
    )
    availability: dict[str, float | None]
    utilisation: dict[str, float | None]


class ClientOut(BaseModel):
    client: str = Field(description="The acknowledging key's id.")
    last_version: int
    last_ack_at: float
    age_s: float
    silent: bool = Field(description="Last acknowledgement older than the silence threshold.")


class ClientsOut(BaseModel):
    silent_after_s: float
    clients: list[ClientOut]


class StationSpecOut(BaseModel):
    name: str
    cycle_time_s: float
    setpoints: dict[str, dict[str, Any]] = Field(
        description="{setpoint: {min, max, nominal, max_step, resolution, grid}}."
    )
    buffer_after: int | None


class LineOut(BaseModel):
    """The validated line spec served (the full spec is in `spec`)."""

    name: str
    spec_hash: str
    stations: list[StationSpecOut]
    spec: dict[str, Any]


# -- reads the web page needs ------------------------------------------------------------------
class WhoAmIOut(BaseModel):
    """The calling key: its public id, its role and what that role may do."""

    key_id: str
    role: Literal["viewer", "controller", "gateway", "engineer", "admin"]
    permissions: list[str] = Field(description="Permission names, sorted.")


class KpiPoint(BaseModel):
    """KPIs over the `window_s` line seconds that end at `time_s` (null when not finite)."""

    time_s: float = Field(description="Line time at the end of the window, s.")
    window_s: float = Field(description="Actual window, line s (shorter near the start).")
    throughput_per_hour: float | None
    scrap_rate: float | None
    energy_kwh_per_good_part: float | None
    energy_kwh_per_hour: float | None
    profit_per_hour: float | None


class KpiHistoryOut(BaseModel):
    """Measured KPI trend over the snapshot history the service keeps, oldest first."""

    step_s: float = Field(description="Line s between points (points at multiples of it).")
    average_s: float = Field(description="Line s each point averages over.")
    points: list[KpiPoint]


class PendingOut(BaseModel):
    """The advisory recommendation awaiting approval, if any."""

    mode: ModeName
    decision: DecisionOut | None = Field(description="The pending decision; null when none.")


class AuditHeadOut(BaseModel):
    """The newest audit record's seq and hash (seq 0: the log is empty)."""

    seq: int
    hash: str
