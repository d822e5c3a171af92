"""The service under abuse (issue 11, "Hardening"): bounded bodies, maps and error lists; auth
before bodies; revoked keys lose their streams; capped streams per key; nothing private without
a key; docs without a CDN; ambiguous auth refused; reasons without control characters."""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
import unicodedata
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from hypothesis import given, settings
from hypothesis import strategies as st
from pollserver import free_port

from linetwin.api.app import App, create_app
from linetwin.api.keys import KeyStore, Role
from linetwin.api.runtime import Runtime
from linetwin.api.settings import Settings
from linetwin.api.storage import Storage, StorageValueError
from linetwin.api.webpage import CSP
from linetwin.models.checkpoint import load
from linetwin.optimizer.errors import ProblemError
from linetwin.optimizer.problem import Objective
from linetwin.twin.spec import LineSpec

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from fastapi.testclient import TestClient

LIMIT = 4096
RECHECK_S = 0.1


class Svc:
    """A runtime the test drives by hand (one cycle run, nothing started) behind an app."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.app = create_app(runtime)
        self.client = TestClient(self.app)
        self.keys = {r: runtime.keys.create(r, f"test {r}", actor="test").key for r in Role}
        for _ in range(5):
            runtime.history.append(runtime.twin.tick())
        assert runtime.twin.latest is not None
        runtime.run_cycle(runtime.twin.latest, 300.0)
        assert runtime.current is not None

    def auth(self, role: Role) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[role]}"}

    def key_id(self, role: Role) -> str:
        return self.keys[role][:11]


def make_svc(two: LineSpec, model_dir: Path, data_dir: Path, **kw: Any) -> Svc:
    cfg = Settings.load(
        {},
        data_dir=data_dir,
        model_dir=model_dir,
        max_body_bytes=LIMIT,
        key_recheck_s=RECHECK_S,
        rate_per_s=0.0,
        **kw,
    )
    return Svc(Runtime(cfg, two, load(model_dir, two)))


@pytest.fixture
def svc(two: LineSpec, model_dir: Path, tmp_path: Path) -> Iterator[Svc]:
    s = make_svc(two, model_dir, tmp_path, max_streams_per_key=2)
    try:
        yield s
    finally:
        s.runtime.stop()


def call_asgi(app: App, scope: dict[str, Any], receive: Any) -> tuple[int, dict[str, Any]]:
    """Run one request through the app's raw ASGI entry: (status, JSON body)."""
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    base = {"type": "http", "http_version": "1.1", "scheme": "http", "query_string": b""}
    base |= {"server": ("testserver", 80), "client": ("127.0.0.1", 1), "root_path": ""}
    asyncio.run(app(base | scope, receive, send))
    status = sent[0]["status"]
    body = b"".join(m.get("body", b"") for m in sent[1:])
    return status, json.loads(body)


# -- 1. bodies: auth first, then a size limit per route -------------------------------------
def test_unauthenticated_body_is_never_read(svc: Svc) -> None:
    async def receive() -> dict[str, Any]:
        raise AssertionError("the body of an unauthenticated request was read")

    for auth in ([], [(b"authorization", b"Bearer lt_" + b"x" * 43)]):
        scope = {
            "method": "POST",
            "path": "/v1/whatif",
            "raw_path": b"/v1/whatif",
            "headers": [(b"content-length", b"42000000"), *auth],
        }
        status, body = call_asgi(svc.app, scope, receive)
        assert status == 401, body
        assert "key" in body["detail"].lower()


def test_body_over_the_route_limit_is_413_before_parsing(svc: Svc) -> None:
    h = svc.auth(Role.CONTROLLER)
    big = json.dumps({"version": 1, "values": {f"s{i}": {"speed": 1.0} for i in range(400)}})
    assert len(big) > LIMIT
    r = svc.client.post("/v1/setpoints/ack", content=big, headers=h)
    assert r.status_code == 413, r.text
    assert str(LIMIT) in r.json()["detail"] and "/v1/setpoints/ack" in r.json()["detail"]
    # what-if takes bigger bodies (its own limit), so the same size is parsed there
    w = svc.client.post("/v1/whatif", content=big, headers=svc.auth(Role.ENGINEER))
    assert w.status_code == 422


def test_streamed_body_is_counted_and_cut_at_the_limit(svc: Svc) -> None:
    chunk = b"x" * 1000
    reads = 0

    async def receive() -> dict[str, Any]:
        nonlocal reads
        reads += 1
        return {"type": "http.request", "body": chunk, "more_body": reads < 50}  # 50 kB

    key = svc.keys[Role.ENGINEER].encode()
    scope = {
        "method": "PUT",
        "path": "/v1/mode",
        "raw_path": b"/v1/mode",
        "headers": [(b"transfer-encoding", b"chunked"), (b"authorization", b"Bearer " + key)],
    }
    status, body = call_asgi(svc.app, scope, receive)
    assert status == 413 and str(LIMIT) in body["detail"]
    assert reads == LIMIT // len(chunk) + 1


# -- 2. value maps and error lists are capped ----------------------------------------------
def test_validation_errors_are_capped(svc: Svc) -> None:
    assert svc.runtime.current is not None
    values = {f"nope{i}": {"speed": 1.0} for i in range(150)}
    body = {"version": svc.runtime.current.version, "values": values}
    r = svc.client.post("/v1/setpoints/ack", json=body, headers=svc.auth(Role.CONTROLLER))
    assert r.status_code == 422
    detail = r.json()["detail"]
    assert len(detail) == 21
    assert detail[-1]["type"] == "too_many_errors" and "130 more" in detail[-1]["msg"]
    assert all("input" not in e for e in detail)


def test_value_maps_are_capped(two: LineSpec, model_dir: Path, tmp_path: Path) -> None:
    """Stations per map (acknowledgement, override, what-if candidate): one error, under the
    default body limits."""
    from linetwin.api.schemas import MAX_STATIONS  # (here: the test must fail before it exists)

    s = Svc(
        Runtime(
            Settings.load({}, data_dir=tmp_path, model_dir=model_dir), two, load(model_dir, two)
        )
    )
    try:
        values = {f"s{i}": {"speed": 1.0} for i in range(MAX_STATIONS + 1)}
        for path, body, role in [
            ("/v1/setpoints/ack", {"version": 1, "values": values}, Role.CONTROLLER),
            ("/v1/overrides", {"values": values, "reason": "r"}, Role.ENGINEER),
            ("/v1/whatif", {"candidates": [{"a": {"speed": 1.0}}, values]}, Role.ENGINEER),
        ]:
            r = s.client.post(path, json=body, headers=s.auth(role))
            assert r.status_code == 422, r.text
            detail = r.json()["detail"]
            assert len(detail) == 1 and str(MAX_STATIONS) in detail[0]["msg"], detail
    finally:
        s.runtime.stop()


# -- 3. a revoked key loses its stream and its long poll -----------------------------------
def test_revoked_key_ends_its_event_stream(svc: Svc) -> None:
    lines: list[str] = []
    with svc.client.stream("GET", "/v1/state/stream", headers=svc.auth(Role.VIEWER)) as r:
        assert r.status_code == 200
        svc.runtime.keys.revoke(svc.key_id(Role.VIEWER), actor="test", reason="gone")
        t0 = time.monotonic()
        done = threading.Event()

        def read() -> None:
            lines.extend(r.iter_lines())
            done.set()

        threading.Thread(target=read, daemon=True).start()
        ended = done.wait(10)
        if not ended:
            svc.runtime.close_streams()  # end it, so that the test fails instead of hanging
            done.wait(10)
        assert ended, "the stream of a revoked key did not end"
    assert time.monotonic() - t0 < 5
    events = [line for line in lines if line.startswith("event: ")]
    assert events[-1] == "event: end"
    data = [line for line in lines if line.startswith("data: ")][-1]
    assert "revoked" in json.loads(data[6:])["reason"]


def test_revoked_key_ends_its_long_poll(svc: Svc) -> None:
    current = svc.runtime.current
    assert current is not None
    h = {**svc.auth(Role.CONTROLLER), "If-None-Match": current.etag}
    timer = threading.Timer(
        0.3, lambda: svc.runtime.keys.revoke(svc.key_id(Role.CONTROLLER), actor="test")
    )
    timer.start()
    t0 = time.monotonic()
    r = svc.client.get("/v1/setpoints?wait=8", headers=h)
    assert r.status_code == 401, r.text
    assert "revoked" in r.json()["detail"]
    assert time.monotonic() - t0 < 4


# -- 4. nothing private without a key; docs without a CDN ----------------------------------
def test_metrics_and_readiness_details_need_a_key(svc: Svc, two: LineSpec) -> None:
    current = svc.runtime.current
    assert current is not None
    values = {s.name: {"speed": s.setpoints.speed.nominal} for s in two.stations}
    ack = {"version": current.version, "values": values}
    h = svc.auth(Role.CONTROLLER)
    assert svc.client.post("/v1/setpoints/ack", json=ack, headers=h).status_code == 200
    label = f'client="{svc.key_id(Role.CONTROLLER)}"'
    anonymous = svc.client.get("/metrics")
    assert anonymous.status_code == 200
    assert "client=" not in anonymous.text and "linetwin_silent_clients" in anonymous.text
    assert label in svc.client.get("/metrics", headers=svc.auth(Role.VIEWER)).text
    path = str(svc.runtime.storage.path)
    ready = svc.client.get("/readyz")
    assert path not in ready.text and set(ready.json()["checks"]) >= {"storage_writable"}
    assert path in svc.client.get("/readyz", headers=svc.auth(Role.VIEWER)).text
    bad = {"Authorization": "Bearer lt_" + "x" * 43}
    assert svc.client.get("/metrics", headers=bad).status_code == 401


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_load_nothing_from_elsewhere(svc: Svc, page: str) -> None:
    r = svc.client.get(page)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    policy = r.headers["content-security-policy"]
    if page == "/redoc":  # ReDoc cannot start without inline styles; scripts stay 'self'
        assert policy == CSP.replace("style-src 'self'", "style-src 'self' 'unsafe-inline'")
    else:
        assert policy == CSP
    assert "script-src 'self';" in policy and "unsafe-eval" not in policy
    assert not re.search(r"https?://|//[\w-]+\.[\w.-]+/", r.text), r.text
    assert "<script>" not in r.text  # no inline script: the policy would refuse it
    refs = re.findall(r'(?:src|href)="([^"]+)"', r.text)
    assert refs
    for ref in refs:
        assert ref.startswith("/docs/assets/"), ref
        asset = svc.client.get(ref)
        assert asset.status_code == 200 and asset.content, ref
        assert asset.headers["content-security-policy"] == CSP
    assert svc.client.get("/docs/assets/nothing.js").status_code == 404


# -- 5. streams and long polls per key are capped; health stays fast ----------------------
def test_streams_per_key_are_capped(svc: Svc) -> None:
    current = svc.runtime.current
    assert current is not None
    h = {**svc.auth(Role.VIEWER), "If-None-Match": current.etag}
    streams = svc.app.state.services.streams
    codes: list[int] = []

    def poll() -> None:
        codes.append(svc.client.get("/v1/setpoints?wait=3", headers=h).status_code)

    threads = [threading.Thread(target=poll) for _ in range(2)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 10
    while streams.held(svc.key_id(Role.VIEWER)) < 2:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    r = svc.client.get("/v1/setpoints?wait=3", headers=h)
    assert r.status_code == 429 and r.headers["retry-after"] == "1"
    s = svc.client.get("/v1/state/stream", headers=svc.auth(Role.VIEWER))
    assert s.status_code == 429
    other = svc.client.get("/v1/setpoints?wait=0.1", headers=svc.auth(Role.ENGINEER))
    assert other.status_code == 200  # another key has its own slots
    for t in threads:
        t.join(10)
    assert codes == [304, 304]
    assert streams.held(svc.key_id(Role.VIEWER)) == 0


class Live:
    """`create_app(runtime)` on uvicorn at 127.0.0.1:`port`, in a thread."""

    def __init__(self, app: App) -> None:
        self.port = free_port()
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        )
        self.server.config.lifespan = "off"
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.01)
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(20)


N_POLLS = 300


def test_health_stays_fast_under_hundreds_of_long_polls(
    two: LineSpec, model_dir: Path, tmp_path: Path
) -> None:
    s = make_svc(two, model_dir, tmp_path, max_streams_per_key=N_POLLS)
    current = s.runtime.current
    assert current is not None
    h = {**s.auth(Role.VIEWER), "If-None-Match": current.etag}
    streams = s.app.state.services.streams

    async def main(url: str) -> list[float]:
        limits = httpx.Limits(max_connections=N_POLLS + 10)
        async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as http:
            polls = [
                asyncio.create_task(http.get("/v1/setpoints?wait=30", headers=h))
                for _ in range(N_POLLS)
            ]
            deadline = time.monotonic() + 30
            while streams.held(s.key_id(Role.VIEWER)) < N_POLLS:
                assert time.monotonic() < deadline, streams.held(s.key_id(Role.VIEWER))
                await asyncio.sleep(0.05)
            latencies = []
            for _ in range(20):
                t0 = time.perf_counter()
                r = await http.get("/healthz")
                latencies.append(time.perf_counter() - t0)
                assert r.status_code == 200
            for p in polls:
                p.cancel()
            await asyncio.gather(*polls, return_exceptions=True)
            return latencies

    try:
        with Live(s.app) as url:
            latencies = asyncio.run(main(url))
    finally:
        s.runtime.stop()
    latencies.sort()
    assert latencies[len(latencies) // 2] < 0.25, latencies
    assert latencies[-1] < 1.0, latencies


# -- 6. ambiguous auth ---------------------------------------------------------------------
def test_two_authorization_headers_are_refused(svc: Svc) -> None:
    viewer, engineer = svc.keys[Role.VIEWER], svc.keys[Role.ENGINEER]
    both = [("Authorization", f"Bearer {viewer}"), ("Authorization", f"Bearer {engineer}")]
    for method, path, body in [
        ("GET", "/v1/setpoints", None),  # the fast path
        ("GET", "/v1/setpoints?wait=0", None),  # the route
        ("GET", "/v1/mode", None),
        ("PUT", "/v1/mode", {"mode": "manual", "reason": "two keys"}),
        ("GET", "/metrics", None),
    ]:
        r = svc.client.request(method, path, json=body, headers=both)
        assert r.status_code == 400, (path, r.text)
        assert "Authorization" in r.json()["detail"]
    assert str(svc.runtime.mode) != "manual"


def test_route_dependency_refuses_two_headers_on_its_own(svc: Svc) -> None:
    svc.app.guard = None  # the routes decide alone (as behind another front)
    viewer = svc.keys[Role.VIEWER]
    both = [("Authorization", f"Bearer {viewer}"), ("Authorization", "Bearer x")]
    assert svc.client.get("/v1/mode", headers=both).status_code == 400


# -- 7. reasons refuse control characters, as key labels do --------------------------------
BAD = ["\x00", "\x1b", "\r", "\n", "\t", "\x7f", "\x85", "\u202a", "\u202e", "\u2066", "\u2069"]
BAD += ["\u200e", "\u200f", "\u2028"]


@pytest.mark.parametrize("char", BAD, ids=[f"U+{ord(c):04X}" for c in BAD])
def test_reasons_refuse_control_characters(svc: Svc, char: str) -> None:
    reason = f"fine{char}then"
    pending = svc.runtime.controller.pending
    decision = pending.id if pending is not None else "x"
    objective = {"good_weight": 1.0, "scrap_weight": 1.0, "energy_weight": 0.1}
    h = svc.auth(Role.ENGINEER)
    seq, _ = svc.runtime.audit.head()
    for method, path, body in [
        ("PUT", "/v1/mode", {"mode": "manual", "reason": reason}),
        ("POST", f"/v1/decisions/{decision}/approve", {"reason": reason}),
        ("POST", f"/v1/decisions/{decision}/reject", {"reason": reason}),
        ("POST", "/v1/overrides", {"values": {"a": {"speed": 1.0}}, "reason": reason}),
        ("POST", "/v1/rollback", {"version": 1, "reason": reason}),
        ("PUT", "/v1/objective", {**objective, "reason": reason}),
    ]:
        r = svc.client.request(method, path, json=body, headers=h)
        assert r.status_code == 422, (path, r.text)
        assert r.json()["detail"][0]["loc"][-1] == "reason", r.text
        assert f"U+{ord(char):04X}" in r.text
    r = svc.client.delete("/v1/overrides/a", params={"reason": reason}, headers=h)
    assert r.status_code == 422, r.text
    assert svc.runtime.audit.head()[0] == seq


REFUSED = st.sampled_from([*BAD, "\x01", "\x9b", "\u202b", "\u202c", "\u202d", "\u2067"])


@settings(max_examples=60, deadline=None)
@given(before=st.text(max_size=20), bad=REFUSED, after=st.text(max_size=20))
def test_text_with_a_control_is_refused(before: str, bad: str, after: str) -> None:
    from linetwin.api.text import check_text

    with pytest.raises(ValueError, match=f"U\\+{ord(bad):04X}|U\\+"):
        check_text(before + bad + after, "reason")


PRINTABLE = st.text(
    st.characters(codec="utf-8", exclude_categories=("Cc", "Cf", "Cs", "Zl", "Zp")), max_size=60
)


@settings(max_examples=60, deadline=None)
@given(text=PRINTABLE)
def test_printable_text_is_accepted(text: str) -> None:
    from linetwin.api.text import check_text

    assert check_text(text, "reason") == text


def test_key_labels_and_reasons_share_the_check(tmp_path: Path) -> None:
    keys = KeyStore(Storage(tmp_path / "db.sqlite"))
    for char in BAD:
        with pytest.raises(StorageValueError, match=f"U\\+{ord(char):04X}"):
            keys.create(Role.VIEWER, f"label{char}", actor="t")
    assert keys.create(Role.VIEWER, "plc line 1 · Halle 2", actor="t").info.active
    assert all(unicodedata.category(c) in ("Cc", "Cf", "Zl") for c in BAD)


# -- structure: errors carry their field ----------------------------------------------------
def test_problem_error_names_its_field() -> None:
    with pytest.raises(ProblemError) as info:
        Objective(1.0, 1.0, 1.0, scrap_rate_cap=2.0)
    assert info.value.field == "scrap_rate_cap"


def test_one_table_maps_domain_errors_to_http() -> None:
    from linetwin.api.problems import problem_response, status_of
    from linetwin.api.runtime import NotHeldError, StateConflictError

    r = problem_response(ProblemError("objective.scrap_rate_cap: too big", field="scrap_rate_cap"))
    assert r.status_code == 422
    assert json.loads(bytes(r.body))["detail"][0]["loc"] == ["body", "scrap_rate_cap"]
    assert status_of(StateConflictError("x")) == 409 and status_of(NotHeldError("x")) == 404
    assert status_of(RuntimeError("x")) == 500


def test_no_decision_answer_carries_a_code(two: LineSpec, model_dir: Path, tmp_path: Path) -> None:
    cfg = Settings.load({}, data_dir=tmp_path, model_dir=model_dir)
    runtime = Runtime(cfg, two, load(model_dir, two))
    try:
        client = TestClient(create_app(runtime))
        key = runtime.keys.create(Role.VIEWER, "v", actor="t").key
        r = client.get("/v1/setpoints", headers={"Authorization": f"Bearer {key}"})
        assert r.status_code == 503 and r.json()["code"] == "no_decision"
        assert r.headers["retry-after"] == "1"
    finally:
        runtime.stop()
