"""Bearer-key authentication and role checks for the HTTP API.

`Authorization: Bearer KEY` is looked up with `KeyStore.authenticate`: no key, a malformed
header, an unknown or revoked key answer 401; a key whose role lacks the permission the route
needs answers 403 (`api.keys.allows`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from fastapi import HTTPException, Request

from api.keys import KeyStore, Permission, Role, allows


@dataclass(frozen=True)
class Principal:
    """Who made the request: the key's public id and its role."""

    key_id: str
    role: Role

    @property
    def actor(self) -> str:
        """How the audit log names this caller."""
        return f"key:{self.key_id}"


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(401, detail, headers={"WWW-Authenticate": 'Bearer realm="linetwin"'})


def require(keys: KeyStore, permission: Permission) -> Callable[[Request], Awaitable[Principal]]:
    """A FastAPI dependency that authenticates the request and checks `permission`.

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
        if not allows(principal.role, permission):
            raise HTTPException(403, f"role {principal.role} may not {permission}")
        return principal

    return dependency
