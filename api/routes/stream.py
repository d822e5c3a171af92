"""`GET /v1/state/stream`: server-sent events of the line's snapshots.

Each stream holds one of its key's `max_streams_per_key` slots (429 past them) until it ends,
and asks every `key_recheck_s` whether its key is still active: once the key is revoked the
stream ends with a last event, `event: end`, whose data names the reason.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from linetwin.api.auth import Principal
from linetwin.api.deps import READ, ServicesDep
from linetwin.api.routes.common import AUTH_ERRORS, state_out
from linetwin.twin.snapshot import Snapshot

MAX_STREAM_EVENTS = 100_000
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

router = APIRouter(tags=["line"])


class HeldStream(StreamingResponse):
    """A streaming response that calls `release` once it is over, however it ends (also when
    the client left before the first byte, when its iterator never starts)."""

    def __init__(self, content: AsyncIterator[bytes], release: Callable[[], None], **kw: Any):
        super().__init__(content, **kw)
        self._release = release

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._release()


def end_event(reason: str) -> bytes:
    """The last event of a stream that the server ends: `event: end`, data `{"reason"}`."""
    return f"event: end\ndata: {json.dumps({'reason': reason})}\n\n".encode()


@router.get(
    "/v1/state/stream",
    response_class=StreamingResponse,
    responses={
        **AUTH_ERRORS,
        200: {
            "content": {"text/event-stream": {"schema": SSE_EVENT_SCHEMA}},
            "description": "Server-sent events `snapshot`, each a `StateOut` JSON; `end` "
            "(data: the reason) when the key is revoked.",
        },
    },
)
async def get_state_stream(
    request: Request,
    services: ServicesDep,
    max_events: Annotated[
        int | None, Query(ge=1, le=MAX_STREAM_EVENTS, description="End after this many.")
    ] = None,
    who: Principal = READ,
) -> StreamingResponse:
    """Server-sent events of the line's snapshots. A slow client only loses snapshots (a
    bounded queue per stream; the twin never waits); the stream ends on shutdown, and with
    an `end` event when its key is revoked."""
    runtime, streams = services.runtime, services.streams
    keys, recheck_s = services.keys, services.settings.key_recheck_s
    spec, metrics = runtime.spec, runtime.metrics
    if not streams.take(who.key_id):
        raise HTTPException(
            429,
            f"key {who.key_id} already holds {streams.per_key} streams and long polls",
            headers={"Retry-After": "1"},
        )
    sub = runtime.plant.subscribe(maxsize=16)
    released = False

    def release() -> None:
        nonlocal released
        if not released:
            released = True
            runtime.plant.unsubscribe(sub)
            streams.give(who.key_id)

    def event(snap: Snapshot) -> bytes:
        data = json.dumps(jsonable_encoder(state_out(spec, snap)), allow_nan=False)
        return f"event: snapshot\nid: {snap.time_s:g}\ndata: {data}\n\n".encode()

    async def events() -> AsyncIterator[bytes]:
        sent = 0
        metrics.sse_clients.inc()
        next_check = time.monotonic() + recheck_s
        try:
            first = runtime.plant.latest
            if first is not None:
                sent += 1
                yield event(first)
            while max_events is None or sent < max_events:
                if runtime.streams_closing.is_set() or sub.closed:
                    break
                if time.monotonic() >= next_check:
                    if not keys.is_active(who.key_id):
                        yield end_event(f"key {who.key_id} was revoked")
                        break
                    next_check = time.monotonic() + recheck_s
                snap = sub.latest()
                if snap is None:
                    if await request.is_disconnected():
                        break
                    await asyncio.sleep(0.02)
                    continue
                sent += 1
                yield event(snap)
        finally:
            metrics.sse_clients.dec()
            release()

    return HeldStream(
        events(),
        release,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
