"""The setpoint feed: the current decision (with long polls), acknowledgements, clients.

`GET /v1/setpoints` answers from the runtime's cached bytes of the current version (strong ETag
= the quoted version): a 304 or a 200 costs no serialisation. Plain polls (no query string) are
usually answered before routing by `api.fastpath`, byte for byte as here.
"""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Header, HTTPException, Query, Response
from fastapi.exceptions import RequestValidationError

from linetwin.api.auth import Principal
from linetwin.api.client import NO_DECISION
from linetwin.api.deps import ACKNOWLEDGE, READ, ServicesDep
from linetwin.api.fastpath import etag_matches
from linetwin.api.problems import json_error, validation_error
from linetwin.api.routes.common import AUTH_ERRORS
from linetwin.api.runtime import Published, Runtime
from linetwin.api.schemas import AckIn, AckOut, ClientOut, ClientsOut, DecisionOut, ErrorOut
from linetwin.api.storage import NotFoundError

MAX_WAIT_S = 60.0

router = APIRouter(tags=["setpoints"])


async def wait_newer(
    services: ServicesDep, who: Principal, version: int, wait_s: float
) -> Published | None:
    """Wait up to `wait_s` for a version above `version`, asking every `key_recheck_s`
    whether `who`'s key is still active (401 once it is revoked); the current decision."""
    runtime: Runtime = services.runtime
    recheck = services.settings.key_recheck_s
    deadline = time.monotonic() + wait_s
    while True:
        left = deadline - time.monotonic()
        current = await runtime.wait_newer_async(version, max(0.0, min(left, recheck)))
        if (
            (current is not None and current.version > version)
            or left <= recheck
            or runtime.stopped
            or runtime.streams_closing.is_set()
        ):
            return current
        if not services.keys.is_active(who.key_id):
            raise HTTPException(
                401,
                f"key {who.key_id} was revoked while it waited",
                headers={"WWW-Authenticate": 'Bearer realm="linetwin"'},
            )


@router.get(
    "/v1/setpoints",
    response_model=DecisionOut,
    responses={
        **AUTH_ERRORS,
        304: {"description": "The `If-None-Match` version is still current."},
        503: {
            "model": ErrorOut,
            "description": "No decision published yet (`code`: `no_decision`).",
        },
    },
)
async def get_setpoints(
    services: ServicesDep,
    wait: Annotated[
        float, Query(ge=0, le=MAX_WAIT_S, description="Long-poll up to this many s.")
    ] = 0.0,
    if_none_match: Annotated[str | None, Header()] = None,
    who: Principal = READ,
) -> Response:
    """The current published decision; `If-None-Match` answers 304 while it is current,
    and with `wait` the request waits for a newer version first (up to `wait` s; at most
    `max_streams_per_key` long polls per key at once, 429 past that)."""
    runtime = services.runtime
    metrics = runtime.metrics
    metrics.polls.inc()
    current = runtime.current
    if wait > 0 and (current is None or etag_matches(if_none_match, current)):
        streams = services.streams
        if not streams.take(who.key_id):
            raise HTTPException(
                429,
                f"key {who.key_id} already holds {streams.per_key} streams and long polls",
                headers={"Retry-After": "1"},
            )
        try:
            current = await wait_newer(
                services, who, -1 if current is None else current.version, wait
            )
        finally:
            streams.give(who.key_id)
    if current is None:
        return json_error(503, "no decision published yet", NO_DECISION, **{"Retry-After": "1"})
    headers = {"ETag": current.etag, "Cache-Control": "no-cache"}
    if etag_matches(if_none_match, current):
        metrics.not_modified.inc()
        return Response(status_code=304, headers=headers)
    return Response(current.body, media_type="application/json", headers=headers)


@router.post("/v1/setpoints/ack", response_model=AckOut, responses=AUTH_ERRORS)
def post_ack(body: AckIn, services: ServicesDep, who: Principal = ACKNOWLEDGE) -> AckOut:
    """Record what the calling control system applied (version and actual values)."""
    runtime = services.runtime
    errors = runtime.check_values(body.values)
    if errors:
        raise RequestValidationError(errors)
    try:
        ack = runtime.storage.record_ack(who.key_id, body.version, body.values)
    except NotFoundError:
        raise validation_error(
            ("body", "version"), f"no published decision version {body.version}"
        ) from None
    runtime.metrics.acks.inc()
    return AckOut(
        client=ack.client, version=ack.version, values=ack.values, received_at=ack.received_at
    )


@router.get("/v1/clients", response_model=ClientsOut, responses=AUTH_ERRORS)
def get_clients(services: ServicesDep, _: Principal = READ) -> ClientsOut:
    """Each acknowledging client's last acknowledgement; `silent` past the threshold."""
    limit = services.settings.silent_after_s
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
            for a in services.runtime.storage.acks()
        ],
    )
