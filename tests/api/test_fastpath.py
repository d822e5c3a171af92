"""The raw ASGI fast path of `GET /v1/setpoints`: same answers as the route, taken when it
should be, and never where the route must decide (errors, long polls)."""

from __future__ import annotations

import asyncio
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from waiting import wait_until

from linetwin.api.app import create_app
from linetwin.api.auth import RateLimiter
from linetwin.api.fastpath import SetpointFastPath
from linetwin.api.keys import KEY_ID_LENGTH, KeyStore, Role
from linetwin.api.runtime import Runtime
from linetwin.api.settings import Settings
from linetwin.api.storage import Storage
from linetwin.models.checkpoint import load
from linetwin.twin.spec import LineSpec

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from fastapi.testclient import TestClient

ROUTE = "/v1/setpoints?wait=0"  # a query string: always the FastAPI route
FAST = "/v1/setpoints"


@pytest.fixture(scope="module")
def steady(
    two: LineSpec, model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Runtime, dict[Role, str]]]:
    """A running service whose published decision stays current for the whole module: a
    first runtime publishes one, a second on the same database restores it and never cycles."""
    data_dir = tmp_path_factory.mktemp("data")
    first = Runtime(
        Settings.load({}, data_dir=data_dir, model_dir=model_dir, speed=600.0),
        two,
        load(model_dir, two),
    )
    first.start()
    try:
        wait_until(lambda: first.current is not None)
    finally:
        first.stop()
    settings = Settings.load(
        {},
        data_dir=data_dir,
        model_dir=model_dir,
        period_s=1e9,
        rate_per_s=0.001,
        rate_burst=40,
    )
    runtime = Runtime(settings, two, load(model_dir, two))
    runtime.start()
    try:
        assert runtime.current is not None
        keys = {r: runtime.keys.create(r, f"test {r}", actor="test").key for r in Role}
        yield runtime, keys
    finally:
        runtime.stop()


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_fast_answers_equal_the_route(steady: tuple[Runtime, dict[Role, str]]) -> None:
    runtime, keys = steady
    c = TestClient(create_app(runtime))
    h = bearer(keys[Role.CONTROLLER])
    fast, route = c.get(FAST, headers=h), c.get(ROUTE, headers=h)
    assert fast.status_code == route.status_code == 200
    assert fast.content == route.content
    for name in ("etag", "cache-control", "content-type", "content-length"):
        assert fast.headers[name] == route.headers[name], name
    tag = {"If-None-Match": fast.headers["etag"]}
    fast, route = c.get(FAST, headers={**h, **tag}), c.get(ROUTE, headers={**h, **tag})
    assert fast.status_code == route.status_code == 304
    assert fast.content == route.content == b""
    assert fast.headers["etag"] == route.headers["etag"]
    weak = c.get(FAST, headers={**h, "If-None-Match": f'"0", W/{tag["If-None-Match"]}'})
    assert weak.status_code == 304
    assert c.get(FAST, headers={**h, "If-None-Match": '"0"'}).status_code == 200


class Inner:
    """The app behind the fast path: records what reached it and answers 599."""

    def __init__(self) -> None:
        self.paths: list[str] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.paths.append(scope["path"] + ("?" + scope["query_string"].decode()))
        await send({"type": "http.response.start", "status": 599, "headers": []})
        await send({"type": "http.response.body", "body": b""})


def through(
    runtime: Runtime, requests: list[tuple[str, dict[str, str]]]
) -> tuple[list[int], list[str]]:
    inner = Inner()
    fast = SetpointFastPath(runtime=runtime, keys=runtime.keys, limiter=RateLimiter(0.0, 1))

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if not await fast.answer(scope, send):
            await inner(scope, receive, send)

    async def go() -> list[int]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return [(await client.get(path, headers=h)).status_code for path, h in requests]

    return asyncio.run(go()), inner.paths


def test_only_plain_authorised_polls_take_the_fast_path(
    steady: tuple[Runtime, dict[Role, str]],
) -> None:
    runtime, keys = steady
    ok = bearer(keys[Role.VIEWER])
    statuses, reached = through(
        runtime,
        [
            (FAST, ok),  # fast
            (FAST, {}),  # no key: the route answers 401
            (FAST, bearer("lt_" + "x" * 43)),  # unknown key
            (FAST, {"Authorization": "Basic abc"}),
            (FAST + "?wait=5", ok),  # long poll: the route
            ("/v1/state", ok),
            (FAST + "/ack", ok),
        ],
    )
    assert statuses == [200, 599, 599, 599, 599, 599, 599]
    assert reached == [
        "/v1/setpoints?",
        "/v1/setpoints?",
        "/v1/setpoints?",
        "/v1/setpoints?wait=5",
        "/v1/state?",
        "/v1/setpoints/ack?",
    ]


def test_revoked_key_is_refused_at_once(
    steady: tuple[Runtime, dict[Role, str]], two: LineSpec
) -> None:
    runtime, _ = steady
    new = runtime.keys.create(Role.VIEWER, "to revoke", actor="test")
    c = TestClient(create_app(runtime))
    assert c.get(FAST, headers=bearer(new.key)).status_code == 200  # now cached
    assert c.get(FAST, headers=bearer(new.key)).status_code == 200
    # Revoke through another connection, as `linetwin keys revoke` does from its process.
    with Storage(runtime.storage.path, spec=two) as other:
        KeyStore(other).revoke(new.info.key_id, actor="test", reason="left the company")
    r = c.get(FAST, headers=bearer(new.key))
    assert r.status_code == 401
    assert "revoked" in r.json()["detail"]


def test_rate_limit_answers_429_like_the_route(
    steady: tuple[Runtime, dict[Role, str]],
) -> None:
    runtime, _ = steady
    key = runtime.keys.create(Role.CONTROLLER, "greedy", actor="test").key
    c = TestClient(create_app(runtime))
    statuses = [c.get(FAST, headers=bearer(key)).status_code for _ in range(45)]
    assert statuses[:40] == [200] * 40  # the burst
    assert set(statuses[40:]) == {429}
    fast = c.get(FAST, headers=bearer(key))
    route = c.get(ROUTE, headers=bearer(key))
    assert fast.status_code == route.status_code == 429
    assert int(fast.headers["retry-after"]) >= 1
    assert fast.json()["detail"].startswith(f"rate limit of key {key[:KEY_ID_LENGTH]}")
    assert route.json()["detail"].startswith(f"rate limit of key {key[:KEY_ID_LENGTH]}")


def test_fast_polls_are_counted(steady: tuple[Runtime, dict[Role, str]]) -> None:
    runtime, keys = steady

    def counts() -> tuple[float, float]:
        text = runtime.metrics.render().decode()
        values = dict(
            line.split() for line in text.splitlines() if line.startswith("linetwin_setpoint_")
        )
        return (
            float(values["linetwin_setpoint_polls_total"]),
            float(values["linetwin_setpoint_not_modified_total"]),
        )

    before = counts()
    c = TestClient(create_app(runtime))
    h = bearer(keys[Role.ENGINEER])
    etag = c.get(FAST, headers=h).headers["etag"]
    for _ in range(3):
        assert c.get(FAST, headers={**h, "If-None-Match": etag}).status_code == 304
    after = counts()
    assert after[0] - before[0] == 4
    assert after[1] - before[1] == 3
