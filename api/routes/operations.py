"""Probes and metrics: `/healthz`, `/readyz`, `/metrics` (no key needed).

What could help an attacker stays behind a key: without one, `/readyz` says which checks pass
but not their details (the database path, error texts), and `/metrics` leaves out the series
labelled with client key ids. With a key that may read (any role), both show everything.
"""

from __future__ import annotations

from fastapi import APIRouter, Response

from linetwin.api.auth import Principal
from linetwin.api.deps import OPTIONAL_KEY, RuntimeDep
from linetwin.api.keys import Permission, allows
from linetwin.api.metrics import CONTENT_TYPE
from linetwin.api.schemas import Check, Health, Readiness

router = APIRouter(tags=["operations"])
HIDDEN = "details need a key"


def _may_read(who: Principal | None) -> bool:
    return who is not None and allows(who.role, Permission.READ)


@router.get("/healthz", response_model=Health)
async def healthz() -> Health:
    """The process is alive (answered on the event loop, without a worker thread)."""
    return Health(status="ok")


@router.get(
    "/readyz",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "A check failed."}},
)
def readyz(
    runtime: RuntimeDep,
    response: Response,
    who: Principal | None = OPTIONAL_KEY,
) -> Readiness:
    """Model loaded, twin running, storage writable, last controller cycle recent. Each
    check's detail only to a key that may read."""
    checks = runtime.readiness()
    ready = all(ok for ok, _ in checks.values())
    if not ready:
        response.status_code = 503
    full = _may_read(who)
    return Readiness(
        ready=ready,
        checks={k: Check(ok=ok, detail=d if full else HIDDEN) for k, (ok, d) in checks.items()},
    )


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE: {}}, "description": "Prometheus text."}},
)
def get_metrics(runtime: RuntimeDep, who: Principal | None = OPTIONAL_KEY) -> Response:
    """Prometheus metrics of this process; the series per client (labelled with key ids)
    only to a key that may read."""
    return Response(runtime.metrics.render(clients=_may_read(who)), media_type=CONTENT_TYPE)
