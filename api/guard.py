"""A raw ASGI guard in front of the routes: bounds every request before FastAPI parses it.

FastAPI reads and parses a request's whole body before its dependencies run, so without this
an unauthenticated client could make the process read, hold and decode any amount of JSON.
`RequestGuard.admit` runs first (after the setpoint fast path, which never reads a body):

- two or more `Authorization` headers: 400 (ambiguous; the routes say the same);
- a request that carries a body (`Content-Length` > 0 or `Transfer-Encoding`) to a `/v1/`
  route without an active key: 401, before a byte of the body is read;
- a body over its route's limit (`BodyLimits`): 413 naming the limit, at once when
  `Content-Length` says so, else as soon as the streamed bytes pass it.

An admitted body is read here (it is at most the limit) and handed on to the app unchanged.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import Any

from linetwin.api.auth import AMBIGUOUS_AUTH, REALM
from linetwin.api.keys import KeyStore

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

PROTECTED_PREFIX = "/v1/"


@dataclass(frozen=True)
class BodyLimits:
    """Largest request body per route, bytes: `routes[(method, path)]`, else `default`."""

    default: int
    routes: Mapping[tuple[str, str], int] = field(default_factory=dict)

    def of(self, method: str, path: str) -> int:
        return self.routes.get((method, path), self.default)


class RequestGuard:
    """The checks of the module docstring, over `keys` and `limits`."""

    def __init__(self, keys: KeyStore, limits: BodyLimits) -> None:
        self.keys = keys
        self.limits = limits

    async def admit(self, scope: Scope, receive: Receive, send: Send) -> Receive | None:
        """Answer a request that fails a check and return None; else return the `receive`
        the app should read the request from."""
        if scope["type"] != "http":
            return receive
        authorization: list[bytes] = []
        length: bytes | None = None
        chunked = False
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization.append(value)
            elif name == b"content-length":
                length = value
            elif name == b"transfer-encoding":
                chunked = True
        if len(authorization) > 1:
            await _answer(send, 400, AMBIGUOUS_AUTH)
            return None
        declared: int | None = None
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                await _answer(send, 400, f"Content-Length {length[:40]!r} is not a number")
                return None
        if not chunked and not declared:
            return receive  # no body: the route checks the rest
        path: str = scope["path"]
        if path.startswith(PROTECTED_PREFIX):
            problem = self._unauthenticated(authorization)
            if problem is not None:
                await _answer(send, 401, problem, [(b"www-authenticate", REALM.encode())])
                return None
        limit = self.limits.of(scope["method"], path)
        if declared is not None and declared > limit:
            await _too_large(send, scope, limit)
            return None
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return _replay([], message, receive)  # the client left: let the app see it
            body = message.get("body", b"")
            size += len(body)
            if size > limit:
                await _too_large(send, scope, limit)
                return None
            chunks.append(body)
            if not message.get("more_body", False):
                break
        return _replay(chunks, None, receive)

    def _unauthenticated(self, authorization: list[bytes]) -> str | None:
        """Why the request has no active key (the routes' 401 messages), or None."""
        if not authorization:
            return "missing Authorization: Bearer KEY header"
        scheme, _, key = authorization[0].decode("latin-1").partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            return "expected Authorization: Bearer KEY"
        if self.keys.authenticate(key.strip()) is None:
            return "unknown or revoked key"
        return None


def _replay(chunks: list[bytes], first: Message | None, receive: Receive) -> Receive:
    """A `receive` that gives the buffered body as one message, then defers to `receive`."""
    pending: list[Message] = (
        [first] if first is not None else [{"type": "http.request", "body": b"".join(chunks)}]
    )

    async def replay() -> Message:
        if pending:
            return pending.pop()
        return await receive()

    return replay


async def _too_large(send: Send, scope: Scope, limit: int) -> None:
    await _answer(
        send,
        413,
        f"request body larger than {limit} bytes, the limit of {scope['method']} {scope['path']}",
        [(b"connection", b"close")],
    )


async def _answer(
    send: Send, status: int, detail: str, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                *(headers or []),
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
