"""What happened: the audit log, the decision history and the pending recommendation."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from linetwin.api.auth import Principal
from linetwin.api.deps import READ, RuntimeDep
from linetwin.api.routes.common import AUTH_ERRORS, MAX_INT64
from linetwin.api.schemas import (
    AuditHeadOut,
    AuditOut,
    AuditPage,
    DecisionOut,
    DecisionPage,
    PendingOut,
)
from linetwin.optimizer.decision import encode

router = APIRouter(tags=["history"])

Limit = Annotated[int, Query(ge=1, le=1000)]


@router.get("/v1/audit", response_model=AuditPage, responses=AUTH_ERRORS)
def get_audit(
    runtime: RuntimeDep,
    after: Annotated[int, Query(ge=0, le=MAX_INT64, description="Records after this seq.")] = 0,
    limit: Limit = 100,
    _: Principal = READ,
) -> AuditPage:
    """A page of the audit log, oldest first."""
    records = runtime.audit.page(after, limit)
    return AuditPage(
        records=[AuditOut(**r.as_dict()) for r in records],
        next_after=records[-1].seq if len(records) == limit else None,
    )


@router.get("/v1/decisions", response_model=DecisionPage, responses=AUTH_ERRORS)
def get_decisions(
    runtime: RuntimeDep,
    after: Annotated[
        int, Query(ge=0, le=MAX_INT64, description="Decisions after this version.")
    ] = 0,
    limit: Limit = 100,
    _: Principal = READ,
) -> DecisionPage:
    """A page of the decision history, oldest first."""
    records = runtime.storage.decisions(after, limit)
    return DecisionPage(
        decisions=[DecisionOut.model_validate(r.payload) for r in records],
        next_after=records[-1].version if len(records) == limit else None,
    )


@router.get("/v1/decisions/pending", response_model=PendingOut, responses=AUTH_ERRORS)
def get_pending(runtime: RuntimeDep, _: Principal = READ) -> PendingOut:
    """The advisory recommendation awaiting approval or rejection; null in other modes, and
    once it is approved, rejected or superseded by an engineer's change."""
    mode = str(runtime.mode)
    pending = runtime.pending
    decision = None
    if pending is not None and mode == "advisory":
        stored = runtime.storage.decision(pending.version)
        if stored is not None and stored.id == pending.id:
            decision = DecisionOut.model_validate(stored.payload)
        else:
            decision = DecisionOut.model_validate(encode(pending, runtime.spec))
    return PendingOut.model_validate({"mode": mode, "decision": decision})


@router.get("/v1/audit/head", response_model=AuditHeadOut, responses=AUTH_ERRORS)
def get_audit_head(runtime: RuntimeDep, _: Principal = READ) -> AuditHeadOut:
    """The newest audit record's seq and hash (page back from it with `after`)."""
    seq, digest = runtime.audit.head()
    return AuditHeadOut(seq=seq, hash=digest)
