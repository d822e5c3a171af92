"""The FastAPI app: `create_app(runtime)` serves one `Runtime` under `/v1`.

The routes live in `api.routes` (one module per concern), their dependencies in `api.deps`,
the mapping from domain errors to HTTP answers in `api.problems`. In front of FastAPI, `App`
asks two raw ASGI layers first: `api.fastpath` answers plain setpoint polls from cached bytes,
and `api.guard` bounds every other request (ambiguous auth, a body without a key, a body over
its route's limit) before FastAPI reads a byte of it.
"""

from __future__ import annotations

from fastapi import FastAPI
from starlette.types import Receive, Scope, Send

from linetwin.api.auth import RateLimiter, StreamSlots
from linetwin.api.deps import Services
from linetwin.api.fastpath import SetpointFastPath
from linetwin.api.guard import BodyLimits, RequestGuard
from linetwin.api.problems import install_handlers
from linetwin.api.routes import ROUTERS
from linetwin.api.runtime import Runtime
from linetwin.api.settings import Settings
from linetwin.api.webpage import mount_docs, mount_web


class App(FastAPI):
    """The FastAPI app with `api.fastpath` and `api.guard` in front."""

    fast_path: SetpointFastPath | None = None
    guard: RequestGuard | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.fast_path is not None and await self.fast_path.answer(scope, send):
            return
        if self.guard is not None:
            admitted = await self.guard.admit(scope, receive, send)
            if admitted is None:
                return
            receive = admitted
        await super().__call__(scope, receive, send)


def body_limits(settings: Settings) -> BodyLimits:
    """The largest body each route takes: what-if candidates and batches of plant rows are
    bigger than the rest."""
    return BodyLimits(
        default=settings.max_body_bytes,
        routes={
            ("POST", "/v1/whatif"): settings.max_whatif_body_bytes,
            ("POST", "/v1/plant/snapshots"): settings.max_plant_body_bytes,
        },
    )


def create_app(runtime: Runtime) -> App:
    """Return the HTTP API of `runtime` (which the caller starts and stops)."""
    app = App(
        title="linetwin",
        version="1",
        description="Setpoints, state, modes and audit of one production line.",
        docs_url=None,
        redoc_url=None,
    )
    settings = runtime.settings
    limiter = RateLimiter(
        settings.rate_per_s, settings.rate_burst, on_limited=runtime.metrics.rate_limited.inc
    )
    app.state.services = Services(
        runtime=runtime, limiter=limiter, streams=StreamSlots(settings.max_streams_per_key)
    )
    install_handlers(app, settings.max_errors)
    # Plain setpoint polls are answered before routing; every other request is guarded.
    app.fast_path = SetpointFastPath(runtime=runtime, keys=runtime.keys, limiter=limiter)
    app.guard = RequestGuard(runtime.keys, body_limits(settings))
    for router in ROUTERS:
        app.include_router(router)
    mount_docs(app)
    mount_web(app)
    return app
