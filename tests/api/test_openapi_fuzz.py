"""schemathesis over the app's OpenAPI schema, in process: no 5xx, responses match their schemas.

A real `Runtime` (twin, controller, SQLite) on the two-station line with a tiny surrogate serves
`create_app(runtime)` through schemathesis' ASGI transport. Every operation is fuzzed with an
engineer key (it may do everything but acknowledge and manage keys, and the app has no key
routes); `POST /v1/setpoints/ack`, which only a controller may call, with a controller key.
The event stream is fuzzed too, with `max_events` clamped to a few events: without it the
stream never ends, and the in-process transport reads a whole body before it answers.

Each operation is a pytest case running a Hypothesis test over `operation.as_strategy()`:
`schemathesis.pytest.from_fixture` (the lazy loader a fixture-built app needs) reads
`request.node._nodeid`, which pytest 9 no longer has (schemathesis 4.32.5).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error, response_schema_conformance

from linetwin.api.app import create_app
from linetwin.api.keys import Role
from linetwin.api.runtime import Runtime
from linetwin.api.settings import Settings
from linetwin.models.checkpoint import load
from linetwin.twin import bundled_spec

STREAM = "/v1/state/stream"
ACK = "/v1/setpoints/ack"
MAX_STREAM_EVENTS = 3
CHECKS = [not_a_server_error, response_schema_conformance]
MAX_EXAMPLES = 25
PLANT = "/v1/plant/snapshots"  # twin mode here: 409 (tests/api/test_external_route.py)
OPERATIONS = [
    ("GET", "/v1/setpoints"),
    ("POST", ACK),
    ("GET", "/v1/state"),
    ("GET", "/v1/mode"),
    ("PUT", "/v1/mode"),
    ("GET", "/v1/audit"),
    ("GET", "/v1/decisions"),
    ("POST", "/v1/decisions/{decision_id}/approve"),
    ("POST", "/v1/decisions/{decision_id}/reject"),
    ("GET", "/v1/overrides"),
    ("POST", "/v1/overrides"),
    ("DELETE", "/v1/overrides/{station}"),
    ("POST", "/v1/rollback"),
    ("GET", "/v1/objective"),
    ("PUT", "/v1/objective"),
    ("POST", "/v1/whatif"),
    ("GET", "/v1/line"),
    ("GET", "/v1/kpis"),
    ("GET", STREAM),
    ("GET", "/v1/clients"),
    ("GET", "/v1/whoami"),
    ("GET", "/v1/kpis/history"),
    ("GET", "/v1/kpis/predictions"),
    ("GET", "/v1/decisions/pending"),
    ("GET", "/v1/audit/head"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("POST", PLANT),
]


class Fuzzed:
    """The runtime under test and one key per role."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.keys = {
            role: runtime.keys.create(role, f"fuzz {role}", actor="test").key for role in Role
        }

    def auth(self, role: Role) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[role]}"}


@pytest.fixture(scope="module")
def fuzzed(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fuzzed]:
    """A running runtime: 600x, a decision every 0.1 wall s, no rate limit (fuzzing is fast)."""
    spec = bundled_spec("two-station")
    cfg = Settings.load(
        {},
        data_dir=tmp_path_factory.mktemp("fuzz-data"),
        model_dir=model_dir,
        speed=600.0,
        mode="closed",
        rate_per_s=0.0,
    )
    runtime = Runtime(cfg, spec, load(model_dir, spec))
    runtime.start()
    try:
        deadline = time.monotonic() + 20
        while runtime.current is None:
            assert time.monotonic() < deadline, "no decision published in time"
            time.sleep(0.02)
        yield Fuzzed(runtime)
    finally:
        runtime.stop()


@pytest.fixture(scope="module")
def api_schema(fuzzed: Fuzzed) -> Any:
    return schemathesis.openapi.from_asgi("/openapi.json", create_app(fuzzed.runtime))


@pytest.fixture(scope="module")
def operations(api_schema: Any) -> dict[tuple[str, str], Any]:
    return {
        (op.method.upper(), op.path): op
        for op in (result.ok() for result in api_schema.get_all_operations())
    }


def test_schema_lists_exactly_the_fuzzed_operations(operations: dict[tuple[str, str], Any]) -> None:
    """OPERATIONS below is every operation of the schema (a new route must be added there)."""
    assert set(operations) == set(OPERATIONS)


@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_openapi_fuzz(
    operations: dict[tuple[str, str], Any], fuzzed: Fuzzed, method: str, path: str
) -> None:
    operation = operations[(method, path)]
    role = {ACK: Role.CONTROLLER, PLANT: Role.GATEWAY}.get(path, Role.ENGINEER)
    headers = fuzzed.auth(role)

    @given(case=operation.as_strategy())
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    def check(case: Any) -> None:
        if path == STREAM:
            query = dict(case.query or {})
            given_max = query.get("max_events")
            if not isinstance(given_max, int) or not 1 <= given_max <= MAX_STREAM_EVENTS:
                query["max_events"] = MAX_STREAM_EVENTS
            case.query = query
        case.call_and_validate(headers=headers, checks=CHECKS)

    check()
