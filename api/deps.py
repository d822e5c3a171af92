"""The routes' dependencies: the runtime they serve and who may call them.

`create_app` puts one `Services` on `app.state.services`; a route asks for it with
`ServicesDep` (or for the runtime with `RuntimeDep`) and for the caller with one of the
permission dependencies (`READ`, `ACKNOWLEDGE`, ...), each a `Principal` once the key is
authenticated, within its rate limit and allowed (401, 400, 429, 403 otherwise).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request

from linetwin.api.auth import Principal, RateLimiter, StreamSlots, authenticate, authorize
from linetwin.api.keys import KeyStore, Permission
from linetwin.api.runtime import Runtime
from linetwin.api.settings import Settings


@dataclass(frozen=True)
class Services:
    """What the routes of one app share: the runtime, its keys, the rate limiter and the
    per-key count of open streams and long polls."""

    runtime: Runtime
    limiter: RateLimiter
    streams: StreamSlots

    @property
    def keys(self) -> KeyStore:
        return self.runtime.keys

    @property
    def settings(self) -> Settings:
        return self.runtime.settings


def get_services(request: Request) -> Services:
    """The app's `Services`."""
    services: Services = request.app.state.services
    return services


def get_runtime(request: Request) -> Runtime:
    """The runtime the app serves."""
    return get_services(request).runtime


ServicesDep = Annotated[Services, Depends(get_services)]
RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


def needs(permission: Permission) -> Any:
    """A dependency: the caller, when its key may do `permission` (see `auth.authorize`)."""

    async def principal(request: Request) -> Principal:
        services = get_services(request)
        return authorize(request, services.keys, permission, services.limiter)

    principal.__name__ = f"needs_{permission}"
    return Depends(principal)


READ = needs(Permission.READ)
ACKNOWLEDGE = needs(Permission.ACKNOWLEDGE)
MODE = needs(Permission.MODE)
APPROVE = needs(Permission.APPROVE)
OVERRIDE = needs(Permission.OVERRIDE)
ROLLBACK = needs(Permission.ROLLBACK)
OBJECTIVE = needs(Permission.OBJECTIVE)
WHAT_IF = needs(Permission.WHAT_IF)
PLANT_DATA = needs(Permission.PLANT_DATA)


async def optional_principal(request: Request) -> Principal | None:
    """The caller when it sends an active key, else None (routes open to everyone that show
    more to a key: `/metrics`, `/readyz`); 401 for a key that is not active. Not rate
    limited: probes poll them."""
    headers = request.headers.getlist("authorization")
    if not headers:
        return None
    return authenticate(headers, get_services(request).keys)


OPTIONAL_KEY = Depends(optional_principal)
