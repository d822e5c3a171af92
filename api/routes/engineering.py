"""What engineers change: the mode, pending approvals, overrides, rollbacks, the objective.

Every change goes through the runtime (and so through the setpoint guard) and writes one
audit record; its reason passes `api.text.check_text` (422 otherwise).
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter, Path, Query
from pydantic import AfterValidator

from linetwin.api.auth import Principal
from linetwin.api.deps import APPROVE, MODE, OBJECTIVE, OVERRIDE, READ, ROLLBACK, RuntimeDep
from linetwin.api.routes.common import AUTH_ERRORS, CONFLICT
from linetwin.api.runtime import Published
from linetwin.api.schemas import (
    ChangeOut,
    DecisionChangeOut,
    DecisionOut,
    ErrorOut,
    ModeChangeOut,
    ModeIn,
    ModeOut,
    ObjectiveChangeOut,
    ObjectiveIn,
    ObjectiveOut,
    OverrideIn,
    OverridesOut,
    ReasonIn,
    RollbackIn,
)
from linetwin.api.text import check_text

modes = APIRouter(tags=["modes"])
router = APIRouter(tags=["engineering"])

DecisionId = Annotated[str, Path(min_length=1, max_length=64)]


def _decision_change(published: Published, seq: int) -> DecisionChangeOut:
    return DecisionChangeOut(
        decision=DecisionOut.model_validate_json(published.body), audit_seq=seq
    )


def _query_reason(text: str) -> str:
    return check_text(text, "reason")


@modes.get("/v1/mode", response_model=ModeOut, responses=AUTH_ERRORS)
def get_mode(runtime: RuntimeDep, _: Principal = READ) -> ModeOut:
    """The controller's mode."""
    return ModeOut(mode=runtime.mode.value)


@modes.put("/v1/mode", response_model=ModeChangeOut, responses=AUTH_ERRORS)
def put_mode(body: ModeIn, runtime: RuntimeDep, who: Principal = MODE) -> ModeChangeOut:
    """Switch the controller's mode (bumpless into closed); writes one audit record."""
    old, record = runtime.set_mode(body.mode, actor=who.actor, reason=body.reason)
    return ModeChangeOut(mode=body.mode, previous=old.value, audit_seq=record.seq)


@router.post(
    "/v1/decisions/{decision_id}/approve",
    response_model=DecisionChangeOut,
    responses={**AUTH_ERRORS, **CONFLICT},
)
def post_approve(
    body: ReasonIn, decision_id: DecisionId, runtime: RuntimeDep, who: Principal = APPROVE
) -> DecisionChangeOut:
    """Apply the pending advisory decision `decision_id` (re-checked by the guard, published
    as a new version); 409 unless it is the pending one in advisory mode. Audited."""
    published, record = runtime.approve(decision_id, actor=who.actor, reason=body.reason)
    return _decision_change(published, record.seq)


@router.post(
    "/v1/decisions/{decision_id}/reject",
    response_model=ChangeOut,
    responses={**AUTH_ERRORS, **CONFLICT},
)
def post_reject(
    body: ReasonIn, decision_id: DecisionId, runtime: RuntimeDep, who: Principal = APPROVE
) -> ChangeOut:
    """Reject the pending advisory decision (the plant keeps what it runs); audited with
    the reason."""
    record = runtime.reject(decision_id, actor=who.actor, reason=body.reason)
    return ChangeOut(version=None, audit_seq=record.seq)


@router.get("/v1/overrides", response_model=OverridesOut, responses=AUTH_ERRORS)
def get_overrides(runtime: RuntimeDep, _: Principal = READ) -> OverridesOut:
    """The setpoints engineers hold (their stations are locked for the optimizer)."""
    return OverridesOut(held=runtime.overrides, ramping=runtime.ramping)


@router.post("/v1/overrides", response_model=DecisionChangeOut, responses=AUTH_ERRORS)
def post_override(
    body: OverrideIn, runtime: RuntimeDep, who: Principal = OVERRIDE
) -> DecisionChangeOut:
    """Hold setpoints on chosen stations: checked against the line's limits (422, nothing
    stored), published at once through the guard (reasons include `override`, one
    `max_step` per publish), then held and ramped each cycle until released. Audited."""
    published, record = runtime.override(body.values, actor=who.actor, reason=body.reason)
    return _decision_change(published, record.seq)


@router.delete(
    "/v1/overrides/{station}",
    response_model=ChangeOut,
    responses={**AUTH_ERRORS, 404: {"model": ErrorOut, "description": "Not held."}},
)
def delete_override(
    station: Annotated[str, Path(min_length=1, max_length=64)],
    reason: Annotated[
        str,
        Query(min_length=1, max_length=1000, description="Why."),
        AfterValidator(_query_reason),
    ],
    runtime: RuntimeDep,
    who: Principal = OVERRIDE,
) -> ChangeOut:
    """Release the override of `station`: the controller decides it again. Audited."""
    record = runtime.release(station, actor=who.actor, reason=reason)
    return ChangeOut(version=None, audit_seq=record.seq)


@router.post("/v1/rollback", response_model=DecisionChangeOut, responses=AUTH_ERRORS)
def post_rollback(
    body: RollbackIn, runtime: RuntimeDep, who: Principal = ROLLBACK
) -> DecisionChangeOut:
    """Publish an earlier decision's setpoints again, through the guard (reasons include
    `rollback`; held overrides stay). Closed mode optimizes again from the next cycle.
    Audited."""
    published, record = runtime.rollback(body.version, actor=who.actor, reason=body.reason)
    return _decision_change(published, record.seq)


@router.get("/v1/objective", response_model=ObjectiveOut, responses=AUTH_ERRORS)
def get_objective(runtime: RuntimeDep, _: Principal = OBJECTIVE) -> ObjectiveOut:
    """The controller's objective weights and caps."""
    return ObjectiveOut(**asdict(runtime.objective))


@router.put("/v1/objective", response_model=ObjectiveChangeOut, responses=AUTH_ERRORS)
def put_objective(
    body: ObjectiveIn, runtime: RuntimeDep, who: Principal = OBJECTIVE
) -> ObjectiveChangeOut:
    """Replace the objective weights and caps (422 on bad values, naming the field); the
    controller uses it from the next cycle. Audited."""
    values = body.model_dump(exclude={"reason"})
    old, record = runtime.set_objective(values, actor=who.actor, reason=body.reason)
    return ObjectiveChangeOut(
        objective=ObjectiveOut(**asdict(runtime.objective)),
        previous=ObjectiveOut(**asdict(old)),
        audit_seq=record.seq,
    )
