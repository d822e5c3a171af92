"""One table from domain errors to HTTP answers, and the one handler that applies it.

`ERROR_STATUS` maps each exception class a route may let through to its status; the handler
installed by `install_handlers(app)` answers `{"detail": ...}` with it. Validation errors (422)
list at most `max_errors` entries, the last then saying how many more there were; they never
echo the offending input (it may be a NaN or megabytes long). Bodies of machine-readable
conditions carry a `code` (`api.client.NO_DECISION`, ...): clients never match message text.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from starlette.responses import JSONResponse, Response

from linetwin.api.runtime import InvalidInputError, NotHeldError, StateConflictError
from linetwin.api.storage import NotFoundError
from linetwin.optimizer.errors import ProblemError
from linetwin.replay.errors import PlantDataError
from linetwin.twin.jsonable import finite_json

ERROR_STATUS: dict[type[Exception], int] = {
    RequestValidationError: 422,
    InvalidInputError: 422,
    ProblemError: 422,
    PlantDataError: 422,
    StateConflictError: 409,
    NotHeldError: 404,
    NotFoundError: 404,
}
"""Domain error -> HTTP status. The first class in this order that an error is an instance of
decides (subclasses first where both are listed)."""

DEFAULT_MAX_ERRORS = 20


def status_of(exc: Exception) -> int:
    """The HTTP status of `exc` by `ERROR_STATUS` (500 for anything not in it)."""
    for cls, status in ERROR_STATUS.items():
        if isinstance(exc, cls):
            return status
    return 500


def capped_errors(errors: Iterable[Mapping[str, Any]], limit: int) -> list[dict[str, Any]]:
    """The first `limit` errors without their `input` (and pydantic's `url`/`ctx` noise kept
    to what JSON can carry), then one entry `and N more errors` when there were more."""
    out: list[dict[str, Any]] = []
    extra = 0
    for e in errors:
        if len(out) < limit:
            out.append({k: v for k, v in e.items() if k not in ("input", "url")})
        else:
            extra += 1
    if extra:
        out.append(
            {
                "loc": [],
                "msg": f"and {extra} more errors (the first {limit} are listed)",
                "type": "too_many_errors",
            }
        )
    return out


def validation_error(
    loc: Sequence[str | int], msg: str, kind: str = "value_error"
) -> RequestValidationError:
    """A 422 naming one bad field: where (`loc`), what is wrong, and its error `kind`."""
    return RequestValidationError([{"loc": tuple(loc), "msg": msg, "type": kind}])


def _errors_of(exc: Exception) -> list[dict[str, Any]]:
    if isinstance(exc, RequestValidationError):
        return list(exc.errors())
    if isinstance(exc, InvalidInputError):
        return list(exc.errors)
    if isinstance(exc, PlantDataError):
        loc: tuple[str | int, ...] = ("body", "rows")
        if exc.row is not None:
            loc += (exc.row,)
        if exc.column is not None:
            loc += (exc.column,)
        return [{"loc": loc, "msg": str(exc), "type": "plant_data"}]
    if isinstance(exc, ProblemError):
        loc = ("body",) if exc.field is None else ("body", exc.field)
        return [{"loc": loc, "msg": str(exc), "type": "value_error"}]
    return [{"loc": (), "msg": str(exc), "type": "value_error"}]


def problem_response(exc: Exception, max_errors: int = DEFAULT_MAX_ERRORS) -> Response:
    """The answer to `exc` by `ERROR_STATUS`: a capped error list for 422, `detail` else."""
    status = status_of(exc)
    if status == 422:
        errors = capped_errors(_errors_of(exc), max_errors)
        body: Any = {"detail": finite_json(jsonable_encoder(errors))}
    else:
        body = {"detail": str(exc)}
    content = json.dumps(body, allow_nan=False, separators=(",", ":")).encode()
    return Response(content, status_code=status, media_type="application/json")


def json_error(status: int, detail: str, code: str | None = None, **headers: str) -> JSONResponse:
    """A `{"detail": ..., "code": ...}` answer (no `code` key when None)."""
    body: dict[str, str] = {"detail": detail}
    if code is not None:
        body["code"] = code
    return JSONResponse(body, status_code=status, headers=headers or None)


def install_handlers(app: FastAPI, max_errors: int = DEFAULT_MAX_ERRORS) -> None:
    """Answer every class of `ERROR_STATUS` through `problem_response` (one handler)."""

    async def handle(request: Request, exc: Exception) -> Response:
        return problem_response(exc, max_errors)

    for cls in ERROR_STATUS:
        app.add_exception_handler(cls, handle)
