"""The calling key: who it is and what it may do."""

from __future__ import annotations

from fastapi import APIRouter

from linetwin.api.auth import Principal
from linetwin.api.deps import READ
from linetwin.api.keys import PERMISSIONS
from linetwin.api.routes.common import AUTH_ERRORS
from linetwin.api.schemas import WhoAmIOut

router = APIRouter(tags=["keys"])


@router.get("/v1/whoami", response_model=WhoAmIOut, responses=AUTH_ERRORS)
def get_whoami(who: Principal = READ) -> WhoAmIOut:
    """The calling key's public id, role and permissions (a client may hide what the key
    may not do; every route still checks)."""
    return WhoAmIOut.model_validate(
        {
            "key_id": who.key_id,
            "role": str(who.role),
            "permissions": sorted(str(p) for p in PERMISSIONS[who.role]),
        }
    )
