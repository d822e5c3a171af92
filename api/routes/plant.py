"""`POST /v1/plant/snapshots`: the plant's measured rows, in external mode (`docs/plant.md`).

A batch is JSON `{"rows": [{column: value, ...}, ...]}` or `text/csv` with a header, in the
plant-log layout; `ExternalPlant.ingest` checks it whole (`replay.plantrows`: a bad batch is a
422 naming row and column, and nothing of it is kept), ignores resent rows and publishes a
snapshot per new row to the controller. The body's size is bounded by the request guard
(`Settings.max_plant_body_bytes`, 413 past it) before a byte is read; parsing and checking run
in the threadpool, never on the event loop. In twin mode there is no external plant: 409.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from linetwin.api.auth import Principal
from linetwin.api.deps import PLANT_DATA, RuntimeDep
from linetwin.api.plant import ExternalPlant, IngestResult
from linetwin.api.problems import validation_error
from linetwin.api.routes.common import AUTH_ERRORS
from linetwin.api.runtime import StateConflictError
from linetwin.api.schemas import ErrorOut
from linetwin.replay.plantrows import PlantRowsInput

router = APIRouter(tags=["plant"])


class IngestOut(BaseModel):
    """What a batch did: rows taken, resent rows ignored, plant time of the newest row taken
    so far (s; None before the first)."""

    accepted: int
    duplicates: int
    last_time_s: float | None


CSV_TYPES = ("text/csv", "application/csv", "text/plain")
JSON_TYPES = ("application/json",)

_BODY = {
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["rows"],
                "properties": {"rows": {"type": "array", "items": {"type": "object"}}},
            }
        },
        "text/csv": {"schema": {"type": "string"}},
    },
    "required": True,
}


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def parse_rows(body: bytes, media_type: str) -> PlantRowsInput:
    """The rows of a request body: CSV bytes as they are, or the `rows` list of a JSON
    object; RequestValidationError (422) naming what is wrong."""
    if media_type in CSV_TYPES:
        return body
    if media_type not in JSON_TYPES and media_type:
        raise validation_error(
            ("header", "content-type"),
            f"expected application/json or text/csv, got {media_type!r}",
        )
    try:
        data: Any = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise validation_error(("body",), f"not JSON: {exc}", "json_invalid") from None
    if not isinstance(data, dict) or "rows" not in data:
        raise validation_error(("body",), 'expected an object {"rows": [...]}')
    extra = sorted(set(data) - {"rows"})
    if extra:
        raise validation_error(("body", extra[0]), "unknown field (the body has only 'rows')")
    rows = data["rows"]
    if not isinstance(rows, list):
        raise validation_error(("body", "rows"), "expected a list of row objects")
    return rows


def _ingest(plant: ExternalPlant, body: bytes, media_type: str, source: str) -> IngestResult:
    return plant.ingest(parse_rows(body, media_type), source)


@router.post(
    "/v1/plant/snapshots",
    response_model=IngestOut,
    openapi_extra={"requestBody": _BODY},
    responses={
        **AUTH_ERRORS,
        409: {"model": ErrorOut, "description": "The service runs its twin as the plant."},
        413: {"model": ErrorOut, "description": "The body is over the route's limit."},
    },
)
async def post_plant_snapshots(
    request: Request, runtime: RuntimeDep, _: Principal = PLANT_DATA
) -> IngestOut:
    """Take a batch of the plant's measured rows (JSON or CSV, `docs/plant.md`): all or
    nothing (422 naming row and column), resent rows ignored, time never going back."""
    plant = runtime.plant
    if not isinstance(plant, ExternalPlant):
        raise StateConflictError(
            "the service runs its twin as the plant (serve --plant twin): no plant data taken"
        )
    body = await request.body()  # at most the guard's limit, already read by the guard
    result = await run_in_threadpool(_ingest, plant, body, _media_type(request), "gateway")
    return IngestOut(
        accepted=result.accepted, duplicates=result.duplicates, last_time_s=result.last_time_s
    )
