"""A raw ASGI fast path for the hottest request: a control system polling `GET /v1/setpoints`.

Control systems poll the current decision many times a second and almost always get a 304.
Going through FastAPI's routing, dependency injection and `Response` objects cost about 80% of
the time of such a request (bench/api.py: 5.0k requests/s against 28k for a bare ASGI app).
`SetpointFastPath` answers the common case itself, before FastAPI sees the request (the app
class, `api.app.App`, asks it first; FastAPI's own per-request work, its telemetry check and
middleware stack included, is skipped): a `GET
/v1/setpoints` without a query string, from a known key whose role may read, within its rate
limit. Everything else, including every error and every long poll (`?wait=`), goes on to the
FastAPI route, which stays the documented definition of the endpoint (OpenAPI, 401/403/503).

The answers are the route's, byte for byte: the cached body and strong ETag of the current
version (`Published`), `Cache-Control: no-cache`, 304 when `If-None-Match` names the current
version, 429 with `Retry-After` past the key's rate limit (the same `RateLimiter` as the routes),
400 for two `Authorization` headers (as the routes and `api.guard` answer).
"""

from __future__ import annotations

import json
import math
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from linetwin.api.auth import AMBIGUOUS_AUTH, RateLimiter, rate_limit_detail
from linetwin.api.keys import PERMISSIONS, KeyStore, Permission
from linetwin.api.runtime import Published, Runtime

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Send = Callable[[Message], Awaitable[None]]

PATH = "/v1/setpoints"
_AMBIGUOUS = json.dumps({"detail": AMBIGUOUS_AUTH}).encode()
_READERS = frozenset(role for role, allowed in PERMISSIONS.items() if Permission.READ in allowed)


def etag_matches(if_none_match: str | None, current: Published) -> bool:
    """Whether an `If-None-Match` header names the current version (weak comparison)."""
    if if_none_match is None:
        return False
    for tag in if_none_match.split(","):
        tag = tag.strip()
        if tag == "*" or tag.removeprefix("W/") == current.etag:
            return True
    return False


class SetpointFastPath:
    """Answer plain setpoint polls from the runtime's cached bytes (see the module docstring).

    `answer(scope, send)` returns True when it answered the request, False when the request
    is for the app's routes (the caller then passes it on, untouched).
    """

    def __init__(self, *, runtime: Runtime, keys: KeyStore, limiter: RateLimiter) -> None:
        self.runtime = runtime
        self.keys = keys
        self.limiter = limiter
        self.metrics = runtime.metrics

    async def answer(self, scope: Scope, send: Send) -> bool:
        if (
            scope["type"] != "http"
            or scope["path"] != PATH
            or scope["method"] != "GET"
            or scope.get("query_string")
        ):
            return False
        current = self.runtime.current
        authorization = if_none_match = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                if authorization is not None:
                    await _send(send, 400, [], _AMBIGUOUS, json=True)
                    return True
                authorization = value
            elif name == b"if-none-match":
                if_none_match = value
        principal = None
        if current is not None and authorization is not None:
            scheme, _, key = authorization.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer":
                principal = self.keys.authenticate(key.strip())
        if current is None or principal is None or principal[1] not in _READERS:
            return False  # the route says why (401, 403, 503)
        wait = self.limiter.take(principal[0])
        if wait > 0:
            await _send(
                send,
                429,
                [(b"retry-after", str(max(1, math.ceil(wait))).encode())],
                b'{"detail":"' + rate_limit_detail(principal[0], wait).encode() + b'"}',
                json=True,
            )
            return True
        self.metrics.polls.inc()
        headers = [(b"etag", current.etag.encode()), (b"cache-control", b"no-cache")]
        if etag_matches(None if if_none_match is None else if_none_match.decode(), current):
            self.metrics.not_modified.inc()
            await _send(send, 304, headers, b"")
            return True
        await _send(send, 200, headers, current.body, json=True)
        return True


async def _send(
    send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes, json: bool = False
) -> None:
    if json:
        headers = [
            *headers,
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
