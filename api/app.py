"""The FastAPI app: `create_app(runtime)` serves one `Runtime` under `/v1`.

`GET /v1/setpoints` answers from the runtime's cached bytes of the current version (strong ETag
= the quoted version): a 304 or a 200 costs no serialisation.
"""

from __future__ import annotations

import asyncio
import json
import math
from bisect import bisect_left, bisect_right
from collections.abc import AsyncIterator
from dataclasses import asdict
from typing import Annotated, Any

import numpy as np
from fastapi import Depends, FastAPI, Header, HTTPException, Path, Query, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.types import Receive, Scope, Send

from linetwin.api.auth import Principal, RateLimiter, require
from linetwin.api.fastpath import SetpointFastPath, etag_matches
from linetwin.api.keys import PERMISSIONS, Permission
from linetwin.api.metrics import CONTENT_TYPE
from linetwin.api.runtime import (
    InvalidInputError,
    NotHeldError,
    Published,
    Runtime,
    StateConflictError,
)
from linetwin.api.schemas import (
    AckIn,
    AckOut,
    AuditHeadOut,
    AuditOut,
    AuditPage,
    BufferState,
    ChangeOut,
    Check,
    ClientOut,
    ClientsOut,
    DecisionChangeOut,
    DecisionOut,
    DecisionPage,
    ErrorOut,
    Estimate,
    Health,
    Interval,
    KpiHistoryOut,
    KpiPoint,
    KpisOut,
    LineOut,
    ModeChangeOut,
    ModeIn,
    ModeOut,
    ObjectiveChangeOut,
    ObjectiveIn,
    ObjectiveOut,
    OverrideIn,
    OverridesOut,
    PendingOut,
    Readiness,
    ReasonIn,
    RollbackIn,
    StateOut,
    StationSpecOut,
    StationState,
    WhatIfIn,
    WhatIfOut,
    WhatIfResult,
    WhoAmIOut,
)
from linetwin.api.storage import NotFoundError
from linetwin.api.webpage import mount_web
from linetwin.optimizer.errors import ProblemError
from linetwin.twin.jsonable import finite_json
from linetwin.twin.kpi import Kpis, window_kpis
from linetwin.twin.layout import STATUS_NAMES
from linetwin.twin.params import setpoints_to_mapping
from linetwin.twin.snapshot import Snapshot
from linetwin.twin.stats import t975

MAX_WAIT_S = 60.0
AUTH_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut, "description": "No key, or an unknown or revoked one."},
    403: {"model": ErrorOut, "description": "The key's role may not do this."},
    429: {"model": ErrorOut, "description": "The key's rate limit; see `Retry-After`."},
}
CONFLICT: dict[int | str, dict[str, Any]] = {
    409: {
        "model": ErrorOut,
        "description": "Nothing pending, another decision pending, or not in advisory mode.",
    },
}
MAX_TWIN_CANDIDATES = 8
MAX_INT64 = 2**63 - 1  # SQLite INTEGER
SSE_EVENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "One server-sent event (Open API 3.2 reads an event stream's schema per event).",
    "required": ["event", "id", "data"],
    "properties": {
        "event": {"const": "snapshot"},
        "id": {"type": "string", "description": "The snapshot's line time, s."},
        "data": {
            "type": "string",
            "contentMediaType": "application/json",
            "contentSchema": {"$ref": "#/components/schemas/StateOut"},
        },
    },
}
MAX_STREAM_EVENTS = 100_000
TWIN_KPIS = (
    "throughput_per_hour",
    "scrap_rate",
    "energy_kwh_per_good_part",
    "energy_kwh_per_hour",
    "profit_per_hour",
)


def _finite(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def _interval(values: np.ndarray) -> Interval:
    """Mean, std and 95% Student-t interval of the mean over runs (finite runs only)."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return Interval(mean=None, std=None, ci_low=None, ci_high=None)
    mean = float(v.mean())
    if v.size < 2:
        return Interval(mean=mean, std=None, ci_low=None, ci_high=None)
    std = float(v.std(ddof=1))
    half = t975(v.size - 1) * std / math.sqrt(v.size)
    return Interval(mean=mean, std=std, ci_low=mean - half, ci_high=mean + half)


def _scalar(k: Kpis, name: str) -> float | None:
    return _finite(float(np.asarray(getattr(k, name))[0]))


class App(FastAPI):
    """The FastAPI app with `api.fastpath` in front: plain setpoint polls skip FastAPI."""

    fast_path: SetpointFastPath | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.fast_path is not None and await self.fast_path.answer(scope, send):
            return
        await super().__call__(scope, receive, send)


def create_app(runtime: Runtime) -> App:
    """Return the HTTP API of `runtime` (which the caller starts and stops)."""
    app = App(
        title="linetwin",
        version="1",
        description="Setpoints, state, modes and audit of one production line.",
    )

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        """422 naming each bad field; the offending input is not echoed (it may be a NaN)."""
        errors = [{k: v for k, v in e.items() if k != "input"} for e in exc.errors()]
        return JSONResponse({"detail": finite_json(jsonable_encoder(errors))}, status_code=422)

    metrics = runtime.metrics
    spec = runtime.spec
    settings = runtime.settings
    limiter = RateLimiter(
        settings.rate_per_s, settings.rate_burst, on_limited=metrics.rate_limited.inc
    )

    # Plain setpoint polls are answered before routing; every other request reaches the routes.
    app.fast_path = SetpointFastPath(runtime=runtime, keys=runtime.keys, limiter=limiter)

    def needs(permission: Permission) -> Any:
        return Depends(require(runtime.keys, permission, limiter))

    read = needs(Permission.READ)
    acknowledge = needs(Permission.ACKNOWLEDGE)
    change_mode = needs(Permission.MODE)
    approve = needs(Permission.APPROVE)
    override = needs(Permission.OVERRIDE)
    rollback = needs(Permission.ROLLBACK)
    objective = needs(Permission.OBJECTIVE)
    what_if = needs(Permission.WHAT_IF)

    @app.exception_handler(InvalidInputError)
    async def invalid_input(request: Request, exc: InvalidInputError) -> JSONResponse:
        return await invalid_request(request, RequestValidationError(exc.errors))

    @app.exception_handler(StateConflictError)
    async def conflict(request: Request, exc: StateConflictError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=409)

    @app.exception_handler(NotHeldError)
    async def not_held(request: Request, exc: NotHeldError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=404)

    def decision_change(published: Published, seq: int) -> DecisionChangeOut:
        return DecisionChangeOut(
            decision=DecisionOut.model_validate_json(published.body), audit_seq=seq
        )

    def state_out(snap: Snapshot) -> StateOut:
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
        if wait > 0 and (current is None or etag_matches(if_none_match, current)):
            current = await runtime.wait_newer_async(
                -1 if current is None else current.version, wait
            )
        if current is None:
            raise HTTPException(503, "no decision published yet", headers={"Retry-After": "1"})
        headers = {"ETag": current.etag, "Cache-Control": "no-cache"}
        if etag_matches(if_none_match, current):
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
        return state_out(runtime.latest_snapshot())

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
        after: Annotated[int, Query(ge=0, le=MAX_INT64, description="Records after this seq.")] = 0,
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
        after: Annotated[
            int, Query(ge=0, le=MAX_INT64, description="Decisions after this version.")
        ] = 0,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        _: Principal = read,
    ) -> DecisionPage:
        """A page of the decision history, oldest first."""
        records = runtime.storage.decisions(after, limit)
        return DecisionPage(
            decisions=[DecisionOut.model_validate(r.payload) for r in records],
            next_after=records[-1].version if len(records) == limit else None,
        )

    # -- engineers --------------------------------------------------------------------------
    @app.post(
        "/v1/decisions/{decision_id}/approve",
        response_model=DecisionChangeOut,
        responses={**AUTH_ERRORS, **CONFLICT},
        tags=["engineering"],
    )
    def post_approve(
        body: ReasonIn,
        decision_id: Annotated[str, Path(min_length=1, max_length=64)],
        who: Principal = approve,
    ) -> DecisionChangeOut:
        """Apply the pending advisory decision `decision_id` (re-checked by the guard, published
        as a new version); 409 unless it is the pending one in advisory mode. Audited."""
        published, record = runtime.approve(decision_id, actor=who.actor, reason=body.reason)
        return decision_change(published, record.seq)

    @app.post(
        "/v1/decisions/{decision_id}/reject",
        response_model=ChangeOut,
        responses={**AUTH_ERRORS, **CONFLICT},
        tags=["engineering"],
    )
    def post_reject(
        body: ReasonIn,
        decision_id: Annotated[str, Path(min_length=1, max_length=64)],
        who: Principal = approve,
    ) -> ChangeOut:
        """Reject the pending advisory decision (the plant keeps what it runs); audited with
        the reason."""
        record = runtime.reject(decision_id, actor=who.actor, reason=body.reason)
        return ChangeOut(version=None, audit_seq=record.seq)

    @app.get(
        "/v1/overrides", response_model=OverridesOut, responses=AUTH_ERRORS, tags=["engineering"]
    )
    def get_overrides(_: Principal = read) -> OverridesOut:
        """The setpoints engineers hold (their stations are locked for the optimizer)."""
        return OverridesOut(held=runtime.overrides, ramping=runtime.ramping)

    @app.post(
        "/v1/overrides",
        response_model=DecisionChangeOut,
        responses=AUTH_ERRORS,
        tags=["engineering"],
    )
    def post_override(body: OverrideIn, who: Principal = override) -> DecisionChangeOut:
        """Hold setpoints on chosen stations: checked against the line's limits (422, nothing
        stored), published at once through the guard (reasons include `override`, one
        `max_step` per publish), then held and ramped each cycle until released. Audited."""
        published, record = runtime.override(body.values, actor=who.actor, reason=body.reason)
        return decision_change(published, record.seq)

    @app.delete(
        "/v1/overrides/{station}",
        response_model=ChangeOut,
        responses={**AUTH_ERRORS, 404: {"model": ErrorOut, "description": "Not held."}},
        tags=["engineering"],
    )
    def delete_override(
        station: Annotated[str, Path(min_length=1, max_length=64)],
        reason: Annotated[str, Query(min_length=1, max_length=1000, description="Why.")],
        who: Principal = override,
    ) -> ChangeOut:
        """Release the override of `station`: the controller decides it again. Audited."""
        record = runtime.release(station, actor=who.actor, reason=reason)
        return ChangeOut(version=None, audit_seq=record.seq)

    @app.post(
        "/v1/rollback",
        response_model=DecisionChangeOut,
        responses=AUTH_ERRORS,
        tags=["engineering"],
    )
    def post_rollback(body: RollbackIn, who: Principal = rollback) -> DecisionChangeOut:
        """Publish an earlier decision's setpoints again, through the guard (reasons include
        `rollback`; held overrides stay). Closed mode optimizes again from the next cycle.
        Audited."""
        published, record = runtime.rollback(body.version, actor=who.actor, reason=body.reason)
        return decision_change(published, record.seq)

    def objective_out() -> ObjectiveOut:
        return ObjectiveOut(**asdict(runtime.objective))

    @app.get(
        "/v1/objective", response_model=ObjectiveOut, responses=AUTH_ERRORS, tags=["engineering"]
    )
    def get_objective(_: Principal = objective) -> ObjectiveOut:
        """The controller's objective weights and caps."""
        return objective_out()

    @app.put(
        "/v1/objective",
        response_model=ObjectiveChangeOut,
        responses=AUTH_ERRORS,
        tags=["engineering"],
    )
    def put_objective(body: ObjectiveIn, who: Principal = objective) -> ObjectiveChangeOut:
        """Replace the objective weights and caps (422 on bad values); the controller uses it
        from the next cycle. Audited."""
        values = body.model_dump(exclude={"reason"})
        try:
            old, record = runtime.set_objective(values, actor=who.actor, reason=body.reason)
        except ProblemError as exc:
            field = str(exc).split(" ", 1)[0].removeprefix("objective.")
            raise RequestValidationError(
                [{"loc": ("body", field), "msg": str(exc), "type": "value_error"}]
            ) from None
        return ObjectiveChangeOut(
            objective=objective_out(), previous=ObjectiveOut(**asdict(old)), audit_seq=record.seq
        )

    @app.post("/v1/whatif", response_model=WhatIfOut, responses=AUTH_ERRORS, tags=["engineering"])
    def post_whatif(body: WhatIfIn, _: Principal = what_if) -> WhatIfOut:
        """Evaluate candidate setpoints from the latest snapshot with the surrogate (mean and
        calibrated std) and, with `twin`, with forked twin runs (mean, std, 95% CI over runs;
        every candidate sees the same random streams). Changes nothing."""
        if body.twin is not None and len(body.candidates) > MAX_TWIN_CANDIDATES:
            raise RequestValidationError(
                [
                    {
                        "loc": ("body", "candidates"),
                        "msg": f"at most {MAX_TWIN_CANDIDATES} candidates with twin runs",
                        "type": "value_error",
                    }
                ]
            )
        snap, arrays = runtime.candidate_arrays(body.candidates)
        sur = runtime.surrogate_whatif(snap, arrays)
        twins: list[Kpis | None] = [None] * len(sur)
        if body.twin is not None:
            t = body.twin
            twins = list(runtime.twin_whatif(snap, arrays, t.seeds, t.hours, t.seed))
        results = []
        for j, s in enumerate(sur):
            k = twins[j]
            results.append(
                WhatIfResult(
                    setpoints=setpoints_to_mapping(spec, arrays[j]),
                    surrogate={
                        n: Estimate(mean=_finite(m), std=_finite(sd))
                        for n, (m, sd) in s.kpis.items()
                    },
                    ood_score=_finite(s.ood_score),
                    in_envelope=s.in_envelope,
                    twin=None if k is None else {n: _interval(getattr(k, n)) for n in TWIN_KPIS},
                )
            )
        return WhatIfOut(
            line_time_s=snap.time_s,
            results=results,
            runs=0 if body.twin is None else body.twin.seeds,
            hours=0.0 if body.twin is None else body.twin.hours,
        )

    # -- line, KPIs, stream, clients --------------------------------------------------------
    @app.get("/v1/line", response_model=LineOut, responses=AUTH_ERRORS, tags=["line"])
    def get_line(_: Principal = read) -> LineOut:
        """The validated line spec served."""
        stations = []
        for st in spec.stations:
            sps = {
                name: sp.model_dump(mode="json")
                for name, sp in (
                    ("speed", st.setpoints.speed),
                    ("temperature", st.setpoints.temperature),
                )
                if sp is not None
            }
            stations.append(
                StationSpecOut(
                    name=st.name,
                    cycle_time_s=st.cycle_time_s,
                    setpoints=sps,
                    buffer_after=st.buffer_after,
                )
            )
        return LineOut(
            name=spec.name,
            spec_hash=spec.spec_hash(),
            stations=stations,
            spec=spec.model_dump(mode="json"),
        )

    @app.get(
        "/v1/kpis",
        response_model=KpisOut,
        responses={
            **AUTH_ERRORS,
            503: {"model": ErrorOut, "description": "Fewer than two snapshots yet."},
        },
        tags=["line"],
    )
    def get_kpis(
        window_s: Annotated[
            float, Query(gt=0, description="Window, line s (at most `kpi_window_max_s`).")
        ] = 600.0,
        _: Principal = read,
    ) -> KpisOut:
        """KPIs of the line over the last `window_s` line seconds of its snapshots."""
        if window_s > settings.kpi_window_max_s:
            raise RequestValidationError(
                [
                    {
                        "loc": ("query", "window_s"),
                        "msg": f"must be at most {settings.kpi_window_max_s:g} s",
                        "type": "less_than_equal",
                    }
                ]
            )
        k = runtime.kpis(window_s)
        if k is None:
            raise HTTPException(503, "not enough snapshots yet", headers={"Retry-After": "1"})
        names = [st.name for st in spec.stations]
        end = runtime.history[-1].time_s
        return KpisOut(
            window_s=k.hours * 3600.0,
            from_time_s=end - k.hours * 3600.0,
            to_time_s=end,
            throughput_per_hour=_scalar(k, "throughput_per_hour"),
            scrap_per_hour=_scalar(k, "scrap_per_hour"),
            scrap_rate=_scalar(k, "scrap_rate"),
            energy_kwh_per_hour=_scalar(k, "energy_kwh_per_hour"),
            energy_kwh_per_good_part=_scalar(k, "energy_kwh_per_good_part"),
            profit_per_hour=_scalar(k, "profit_per_hour"),
            oee=_scalar(k, "oee"),
            availability={n: _finite(float(k.availability[0, i])) for i, n in enumerate(names)},
            utilisation={n: _finite(float(k.utilisation[0, i])) for i, n in enumerate(names)},
        )

    @app.get(
        "/v1/state/stream",
        response_class=StreamingResponse,
        responses={
            **AUTH_ERRORS,
            200: {
                "content": {"text/event-stream": {"schema": SSE_EVENT_SCHEMA}},
                "description": "Server-sent events `snapshot`, each a `StateOut` JSON.",
            },
        },
        tags=["line"],
    )
    async def get_state_stream(
        request: Request,
        max_events: Annotated[
            int | None, Query(ge=1, le=MAX_STREAM_EVENTS, description="End after this many.")
        ] = None,
        _: Principal = read,
    ) -> StreamingResponse:
        """Server-sent events of the line's snapshots. A slow client only loses snapshots (a
        bounded queue per stream; the twin never waits); the stream ends on shutdown."""
        sub = runtime.twin.subscribe(maxsize=16)

        async def events() -> AsyncIterator[bytes]:
            sent = 0
            metrics.sse_clients.inc()
            try:
                first = runtime.twin.latest
                if first is not None:
                    sent += 1
                    yield _event(first)
                while max_events is None or sent < max_events:
                    if runtime.streams_closing.is_set() or sub.closed:
                        break
                    snap = sub.latest()
                    if snap is None:
                        if await request.is_disconnected():
                            break
                        await asyncio.sleep(0.02)
                        continue
                    sent += 1
                    yield _event(snap)
            finally:
                metrics.sse_clients.dec()
                runtime.twin.unsubscribe(sub)

        def _event(snap: Snapshot) -> bytes:
            data = json.dumps(jsonable_encoder(state_out(snap)), allow_nan=False)
            return f"event: snapshot\nid: {snap.time_s:g}\ndata: {data}\n\n".encode()

        return StreamingResponse(
            events(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    @app.get("/v1/clients", response_model=ClientsOut, responses=AUTH_ERRORS, tags=["setpoints"])
    def get_clients(_: Principal = read) -> ClientsOut:
        """Each acknowledging client's last acknowledgement; `silent` past the threshold."""
        limit = settings.silent_after_s
        return ClientsOut(
            silent_after_s=limit,
            clients=[
                ClientOut(
                    client=a.client,
                    last_version=a.version,
                    last_ack_at=a.received_at,
                    age_s=a.age_s,
                    silent=a.age_s > limit,
                )
                for a in runtime.storage.acks()
            ],
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

    # -- reads the web page needs (any key may read them) -----------------------------------
    @app.get("/v1/whoami", response_model=WhoAmIOut, responses=AUTH_ERRORS, tags=["keys"])
    def get_whoami(who: Principal = read) -> WhoAmIOut:
        """The calling key's public id, role and permissions (a client may hide what the key
        may not do; every route still checks)."""
        return WhoAmIOut.model_validate(
            {
                "key_id": who.key_id,
                "role": str(who.role),
                "permissions": sorted(str(p) for p in PERMISSIONS[who.role]),
            }
        )

    @app.get("/v1/kpis/history", response_model=KpiHistoryOut, responses=AUTH_ERRORS, tags=["line"])
    def get_kpi_history(
        step_s: Annotated[
            float,
            Query(ge=1, le=86_400, allow_inf_nan=False, description="Line s between points."),
        ] = 60.0,
        average_s: Annotated[
            float,
            Query(gt=0, le=86_400, allow_inf_nan=False, description="Line s each point averages."),
        ] = 600.0,
        limit: Annotated[int, Query(ge=1, le=1000, description="At most this many, newest.")] = 360,
        _: Principal = read,
    ) -> KpiHistoryOut:
        """The measured KPI trend over the last line day: one point at each multiple of
        `step_s` line s, averaged over the `average_s` before it (the service keeps every
        snapshot of the last `kpi_window_max_s`, one a minute before that)."""
        snaps = runtime.trend_snapshots()
        points: list[KpiPoint] = []
        if len(snaps) >= 2:
            times = [s.time_s for s in snaps]
            top = math.floor(times[-1] / step_s + 1e-9)
            ends = [(top - n) * step_s for n in range(limit)]
            last_j = -1
            for t in reversed([t for t in ends if t > times[0] + 1e-9]):
                j = bisect_right(times, t + 1e-9) - 1
                i = bisect_left(times, t - average_s - 1e-9)
                if i >= j or j == last_j:  # no window, or a gap: the same snapshot again
                    continue
                last_j = j
                k = window_kpis(snaps[i], snaps[j])
                points.append(
                    KpiPoint(
                        time_s=times[j],
                        window_s=times[j] - times[i],
                        **{n: _scalar(k, n) for n in TWIN_KPIS},
                    )
                )
        return KpiHistoryOut(step_s=step_s, average_s=average_s, points=points)

    @app.get(
        "/v1/decisions/pending", response_model=PendingOut, responses=AUTH_ERRORS, tags=["history"]
    )
    def get_pending(_: Principal = read) -> PendingOut:
        """The advisory recommendation awaiting approval or rejection; null in other modes, and
        once it is approved, rejected or superseded by an engineer's change."""
        mode = str(runtime.mode)
        pending = runtime.controller.pending
        decision = None
        if pending is not None and mode == "advisory":
            stored = runtime.storage.decision(pending.version)
            if stored is not None and stored.id == pending.id:
                decision = DecisionOut.model_validate(stored.payload)
            else:
                decision = DecisionOut.model_validate(finite_json(pending.to_json(spec)))
        return PendingOut.model_validate({"mode": mode, "decision": decision})

    @app.get("/v1/audit/head", response_model=AuditHeadOut, responses=AUTH_ERRORS, tags=["history"])
    def get_audit_head(_: Principal = read) -> AuditHeadOut:
        """The newest audit record's seq and hash (page back from it with `after`)."""
        seq, digest = runtime.audit.head()
        return AuditHeadOut(seq=seq, hash=digest)

    mount_web(app)
    return app
