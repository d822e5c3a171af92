"""Bearer-key authentication and role checks for the HTTP API.

`Authorization: Bearer KEY` is looked up with `KeyStore.authenticate`: no key, a malformed
header, an unknown or revoked key answer 401; a key whose role lacks the permission the route
needs answers 403 (`api.keys.allows`). Each authenticated key draws from its own token bucket
(`RateLimiter`): past the burst it answers 429 with `Retry-After`.
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


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(401, detail, headers={"WWW-Authenticate": 'Bearer realm="linetwin"'})


def require(
    keys: KeyStore, permission: Permission, limiter: RateLimiter | None = None
) -> Callable[[Request], Awaitable[Principal]]:
    """A FastAPI dependency that authenticates the request, spends a token of the key's
    bucket in `limiter` (429 with `Retry-After` when empty) and checks `permission`.

    It runs on the event loop: the lookup is one indexed read of the local SQLite file.
    """

    async def dependency(request: Request) -> Principal:
        header = request.headers.get("authorization")
        if header is None:
            raise _unauthorized("missing Authorization: Bearer KEY header")
        scheme, _, key = header.partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise _unauthorized("expected Authorization: Bearer KEY")
        found = keys.authenticate(key.strip())
        if found is None:
            raise _unauthorized("unknown or revoked key")
        principal = Principal(*found)
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

    return dependency
