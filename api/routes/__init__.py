"""The HTTP routes, one module per concern; `ROUTERS` in the order the app includes them.

- `setpoints`: the setpoint feed (long polls), acknowledgements, clients;
- `line`, `stream`: the line's spec, state, KPIs and trend, and its event stream;
- `engineering`: mode, approvals, overrides, rollback, objective; `whatif`: candidates;
- `history`: audit log, decision history, the pending recommendation;
- `plant`: the plant's measured rows (`POST /v1/plant/snapshots`, external mode);
- `operations`: `/healthz`, `/readyz`, `/metrics`; `keys`: `/v1/whoami`.
"""

from __future__ import annotations

from fastapi import APIRouter

from linetwin.api.routes import (
    engineering,
    history,
    keys,
    line,
    operations,
    plant,
    setpoints,
    stream,
    whatif,
)

ROUTERS: tuple[APIRouter, ...] = (
    setpoints.router,
    line.router,
    engineering.modes,
    history.router,
    engineering.router,
    whatif.router,
    stream.router,
    operations.router,
    keys.router,
    plant.router,
)

__all__ = ["ROUTERS"]
