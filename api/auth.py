"""Bearer-key authentication and role checks for the HTTP API.

`Authorization: Bearer KEY` is looked up with `KeyStore.authenticate`: no key, a malformed
header, an unknown or revoked key answer 401; two `Authorization` headers answer 400
(ambiguous); a key whose role lacks the permission the route needs answers 403
(`api.keys.allows`). Each authenticated key draws from its own token bucket (`RateLimiter`):
past the burst it answers 429 with `Retry-After`. `StreamSlots` caps the event streams and
long polls each key holds open.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from fastapi import HTTPException, Request

from linetwin.api.keys import KeyStore, Permission, Role, allows


@dataclass(frozen=True)
class Principal:
    """Who made the request: the key's public id and its role."""

    key_id: str
    role: Role

    @property
    def actor(self) -> str:
        """How the audit log names this caller."""
        return f"key:{self.key_id}"


class RateLimiter:
    """A token bucket per key: `rate_per_s` tokens a second, at most `burst` (0 rate: no limit).

    `take(key)` spends one token and returns 0.0, or returns the seconds until one is due.
    """

    def __init__(
        self,
        rate_per_s: float,
        burst: int,
        clock: Callable[[], float] = time.monotonic,
        on_limited: Callable[[], object] | None = None,
    ) -> None:
        self.on_limited = on_limited
        self.rate = float(rate_per_s)
        self.burst = float(burst)
        self.clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)

    def take(self, key: str) -> float:
        if self.rate <= 0:
            return 0.0
        with self._lock:
            now = self.clock()
            tokens, at = self._buckets.get(key, (self.burst, now))
            tokens = min(self.burst, tokens + (now - at) * self.rate)
            if tokens >= 1.0:
                self._buckets[key] = (tokens - 1.0, now)
                return 0.0
            self._buckets[key] = (tokens, now)
        if self.on_limited is not None:
            self.on_limited()
        return (1.0 - tokens) / self.rate


def rate_limit_detail(key_id: str, wait_s: float) -> str:
    """The message of a 429: which key, and when to retry."""
    return f"rate limit of key {key_id}: retry in {wait_s:.2f} s"


AMBIGUOUS_AUTH = "more than one Authorization header: send exactly one"
REALM = 'Bearer realm="linetwin"'


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(401, detail, headers={"WWW-Authenticate": REALM})


def bearer_key(headers: list[str]) -> str:
    """The key of the request's `Authorization` header values `headers`.

    Raises `HTTPException`: 400 when there is more than one header (the fast path and the
    routes would otherwise each pick one), 401 when there is none or it is not `Bearer KEY`.
    """
    if len(headers) > 1:
        raise HTTPException(400, AMBIGUOUS_AUTH)
    if not headers:
        raise _unauthorized("missing Authorization: Bearer KEY header")
    scheme, _, key = headers[0].partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise _unauthorized("expected Authorization: Bearer KEY")
    return key.strip()


def authenticate(headers: list[str], keys: KeyStore) -> Principal:
    """The principal of an active key in `headers` (see `bearer_key`); 401 when it is unknown
    or revoked."""
    found = keys.authenticate(bearer_key(headers))
    if found is None:
        raise _unauthorized("unknown or revoked key")
    return Principal(*found)


def authorize(
    request: Request,
    keys: KeyStore,
    permission: Permission,
    limiter: RateLimiter | None = None,
) -> Principal:
    """Authenticate `request`, spend a token of the key's bucket in `limiter` (429 with
    `Retry-After` when empty) and check `permission` (403).

    It runs on the event loop: the lookup is one indexed read of the local SQLite file, and
    usually not even that (`KeyStore.authenticate` caches accepted keys).
    """
    principal = authenticate(request.headers.getlist("authorization"), keys)
    if limiter is not None:
        wait = limiter.take(principal.key_id)
        if wait > 0:
            raise HTTPException(
                429,
                rate_limit_detail(principal.key_id, wait),
                headers={"Retry-After": str(max(1, math.ceil(wait)))},
            )
    if not allows(principal.role, permission):
        raise HTTPException(403, f"role {principal.role} may not {permission}")
    return principal


def require(
    keys: KeyStore, permission: Permission, limiter: RateLimiter | None = None
) -> Callable[[Request], Awaitable[Principal]]:
    """A FastAPI dependency running `authorize` with `keys`, `permission` and `limiter`."""

    async def dependency(request: Request) -> Principal:
        return authorize(request, keys, permission, limiter)

    return dependency


class StreamSlots:
    """How many event streams and long polls each key holds open, at most `per_key` each.

    `take(key_id)` returns True and counts one more, or False when the key is at its cap;
    `give(key_id)` counts one fewer.
    """

    def __init__(self, per_key: int) -> None:
        self.per_key = per_key
        self._lock = threading.Lock()
        self._open: dict[str, int] = {}

    def take(self, key_id: str) -> bool:
        with self._lock:
            n = self._open.get(key_id, 0)
            if n >= self.per_key:
                return False
            self._open[key_id] = n + 1
            return True

    def give(self, key_id: str) -> None:
        with self._lock:
            n = self._open.get(key_id, 0) - 1
            if n > 0:
                self._open[key_id] = n
            else:
                self._open.pop(key_id, None)

    def held(self, key_id: str) -> int:
        """How many `key_id` holds now."""
        with self._lock:
            return self._open.get(key_id, 0)
