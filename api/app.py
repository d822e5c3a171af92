"""The FastAPI app: `create_app(runtime)` serves one `Runtime` under `/v1`.

`GET /v1/setpoints` answers from the runtime's cached bytes of the current version (strong ETag
= the quoted version): a 304 or a 200 costs no serialisation.
"""

from __future__ import annotations

import math
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, HTTPException, Query, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from api.auth import Principal, require
from api.keys import Permission
from api.metrics import CONTENT_TYPE
from api.runtime import Published, Runtime
from api.schemas import (
    AckIn,
    AckOut,
    AuditOut,
    AuditPage,
    BufferState,
    Check,
    DecisionOut,
    DecisionPage,
    ErrorOut,
    Health,
    ModeChangeOut,
    ModeIn,
    ModeOut,
    Readiness,
    StateOut,
    StationState,
)
from api.storage import NotFoundError
from twin.jsonable import finite_json
from twin.layout import STATUS_NAMES
from twin.params import setpoints_to_mapping

MAX_WAIT_S = 60.0
AUTH_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut, "description": "No key, or an unknown or revoked one."},
    403: {"model": ErrorOut, "description": "The key's role may not do this."},
}


def _matches(if_none_match: str | None, current: Published) -> bool:
    """Whether an `If-None-Match` header names the current version (weak comparison)."""
    if if_none_match is None:
        return False
    for tag in if_none_match.split(","):
        tag = tag.strip()
        if tag == "*" or tag.removeprefix("W/") == current.etag:
            return True
    return False


def _finite(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def create_app(runtime: Runtime) -> FastAPI:
    """Return the HTTP API of `runtime` (which the caller starts and stops)."""
    app = FastAPI(
        title="linetwin",
        version="1",
        description="Setpoints, state, modes and audit of one production line.",
    )

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        """422 naming each bad field; the offending input is not echoed (it may be a NaN)."""
        errors = [{k: v for k, v in e.items() if k != "input"} for e in exc.errors()]
        return JSONResponse({"detail": finite_json(jsonable_encoder(errors))}, status_code=422)

    read = Depends(require(runtime.keys, Permission.READ))
    acknowledge = Depends(require(runtime.keys, Permission.ACKNOWLEDGE))
    change_mode = Depends(require(runtime.keys, Permission.MODE))
    metrics = runtime.metrics
    spec = runtime.spec

    @app.get(
        "/v1/setpoints",
        response_model=DecisionOut,
        responses={
            **AUTH_ERRORS,
            304: {"description": "The `If-None-Match` version is still current."},
            503: {"model": ErrorOut, "description": "No decision published yet."},
        },
        tags=["setpoints"],
    )
    async def get_setpoints(
        wait: Annotated[
            float, Query(ge=0, le=MAX_WAIT_S, description="Long-poll up to this many s.")
        ] = 0.0,
        if_none_match: Annotated[str | None, Header()] = None,
        _: Principal = read,
    ) -> Response:
        """The current published decision; `If-None-Match` answers 304 while it is current,
        and with `wait` the request waits for a newer version first (up to `wait` s)."""
        metrics.polls.inc()
        current = runtime.current
        if wait > 0 and (current is None or _matches(if_none_match, current)):
            current = await runtime.wait_newer_async(
                -1 if current is None else current.version, wait
            )
        if current is None:
            raise HTTPException(503, "no decision published yet", headers={"Retry-After": "1"})
        headers = {"ETag": current.etag, "Cache-Control": "no-cache"}
        if _matches(if_none_match, current):
            metrics.not_modified.inc()
            return Response(status_code=304, headers=headers)
        return Response(current.body, media_type="application/json", headers=headers)

    @app.post(
        "/v1/setpoints/ack",
        response_model=AckOut,
        responses=AUTH_ERRORS,
        tags=["setpoints"],
    )
    def post_ack(body: AckIn, who: Principal = acknowledge) -> AckOut:
        """Record what the calling control system applied (version and actual values)."""
        errors = runtime.check_values(body.values)
        if errors:
            raise RequestValidationError(errors)
        try:
            ack = runtime.storage.record_ack(who.key_id, body.version, body.values)
        except NotFoundError:
            raise RequestValidationError(
                [
                    {
                        "loc": ("body", "version"),
                        "msg": f"no published decision version {body.version}",
                        "type": "value_error",
                    }
                ]
            ) from None
        metrics.acks.inc()
        return AckOut(
            client=ack.client, version=ack.version, values=ack.values, received_at=ack.received_at
        )

    @app.get("/v1/state", response_model=StateOut, responses=AUTH_ERRORS, tags=["line"])
    def get_state(_: Principal = read) -> StateOut:
        """The latest snapshot of the line (scenario 0 of the real-time twin)."""
        snap = runtime.twin.latest
        if snap is None:
            snap = runtime.twin.twin.snapshot()
        r = snap.readings
        stations = [
            StationState(
                name=st.name,
                status=STATUS_NAMES[int(snap.status[0, i])],
                temperature_c=_finite(r.temperature_c[0, i]) if st.is_thermal else None,
                power_kw=_finite(r.power_kw[0, i]),
                setpoints=setpoints_to_mapping(spec, snap.setpoints[0])[st.name],
            )
            for i, st in enumerate(spec.stations)
        ]
        buffers = [
            BufferState(
                after=st.name,
                level=int(snap.buffer_level[0, i]),
                capacity=int(st.buffer_after or 0),
            )
            for i, st in enumerate(spec.stations[:-1])
        ]
        return StateOut(
            line=spec.name,
            time_s=snap.time_s,
            stations=stations,
            buffers=buffers,
            power_kw=_finite(float(r.power_kw[0].sum())),
            good=int(snap.good_out[0]),
            scrap=int(snap.scrap_total[0]),
        )

    @app.get("/v1/mode", response_model=ModeOut, responses=AUTH_ERRORS, tags=["modes"])
    def get_mode(_: Principal = read) -> ModeOut:
        """The controller's mode."""
        return ModeOut(mode=runtime.mode.value)

    @app.put("/v1/mode", response_model=ModeChangeOut, responses=AUTH_ERRORS, tags=["modes"])
    def put_mode(body: ModeIn, who: Principal = change_mode) -> ModeChangeOut:
        """Switch the controller's mode (bumpless into closed); writes one audit record."""
        old, record = runtime.set_mode(body.mode, actor=who.actor, reason=body.reason)
        return ModeChangeOut(
            mode=body.mode,
            previous=old.value,
            audit_seq=record.seq,
        )

    @app.get("/v1/audit", response_model=AuditPage, responses=AUTH_ERRORS, tags=["history"])
    def get_audit(
        after: Annotated[int, Query(ge=0, description="Records after this seq.")] = 0,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        _: Principal = read,
    ) -> AuditPage:
        """A page of the audit log, oldest first."""
        records = runtime.audit.page(after, limit)
        return AuditPage(
            records=[AuditOut(**r.as_dict()) for r in records],
            next_after=records[-1].seq if len(records) == limit else None,
        )

    @app.get("/v1/decisions", response_model=DecisionPage, responses=AUTH_ERRORS, tags=["history"])
    def get_decisions(
        after: Annotated[int, Query(ge=0, description="Decisions after this version.")] = 0,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        _: Principal = read,
    ) -> DecisionPage:
        """A page of the decision history, oldest first."""
        records = runtime.storage.decisions(after, limit)
        return DecisionPage(
            decisions=[DecisionOut.model_validate(r.payload) for r in records],
            next_after=records[-1].version if len(records) == limit else None,
        )

    @app.get("/healthz", response_model=Health, tags=["operations"])
    def healthz() -> Health:
        """The process is alive."""
        return Health(status="ok")

    @app.get(
        "/readyz",
        response_model=Readiness,
        responses={503: {"model": Readiness, "description": "A check failed."}},
        tags=["operations"],
    )
    def readyz(response: Response) -> Readiness:
        """Model loaded, twin running, storage writable, last controller cycle recent."""
        checks = runtime.readiness()
        ready = all(ok for ok, _ in checks.values())
        if not ready:
            response.status_code = 503
        return Readiness(
            ready=ready, checks={k: Check(ok=ok, detail=d) for k, (ok, d) in checks.items()}
        )

    @app.get(
        "/metrics",
        response_class=Response,
        responses={200: {"content": {CONTENT_TYPE: {}}, "description": "Prometheus text."}},
        tags=["operations"],
    )
    def get_metrics() -> Response:
        """Prometheus metrics of this process."""
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    return app
