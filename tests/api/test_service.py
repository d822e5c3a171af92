"""The setpoint service: a real Runtime (twin, controller, SQLite) behind the FastAPI app."""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from waiting import wait_until

from linetwin.api.app import create_app
from linetwin.api.keys import PERMISSIONS, Role
from linetwin.api.runtime import Runtime
from linetwin.api.settings import Settings
from linetwin.models.checkpoint import load
from linetwin.twin.spec import LineSpec

with warnings.catch_warnings():
    # Starlette 1.x asks for `httpx2` under its test client; plain httpx works the same.
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from fastapi.testclient import TestClient


def make_runtime(two: LineSpec, model_dir: Path, data_dir: Path, **kw: object) -> Runtime:
    settings = Settings.load({}, data_dir=data_dir, model_dir=model_dir, **kw)
    return Runtime(settings, two, load(model_dir, two))


class Service:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.client = TestClient(create_app(runtime))
        self.keys = {
            role: runtime.keys.create(role, f"test {role}", actor="test").key for role in Role
        }

    def auth(self, role: Role | None) -> dict[str, str]:
        return {} if role is None else {"Authorization": f"Bearer {self.keys[role]}"}


@pytest.fixture(scope="module")
def service(
    two: LineSpec, model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    """A running service: 600x, a decision every 60 line s (0.1 wall s)."""
    runtime = make_runtime(two, model_dir, tmp_path_factory.mktemp("data"), speed=600.0)
    runtime.start()
    try:
        wait_until(lambda: runtime.current is not None)
        yield Service(runtime)
    finally:
        runtime.stop()


def nominal_values(two: LineSpec) -> dict[str, dict[str, float]]:
    return {s.name: {"speed": s.setpoints.speed.nominal} for s in two.stations}


ROUTES = [
    ("GET", "/v1/setpoints", Role.VIEWER),
    ("POST", "/v1/setpoints/ack", Role.CONTROLLER),
    ("GET", "/v1/state", Role.VIEWER),
    ("GET", "/v1/mode", Role.VIEWER),
    ("PUT", "/v1/mode", Role.ENGINEER),
    ("GET", "/v1/audit", Role.VIEWER),
    ("GET", "/v1/decisions", Role.VIEWER),
    ("GET", "/v1/whoami", Role.VIEWER),
    ("GET", "/v1/kpis/history", Role.VIEWER),
    ("GET", "/v1/decisions/pending", Role.VIEWER),
    ("GET", "/v1/audit/head", Role.VIEWER),
]
PERMITTED = {
    Role.VIEWER: {Role.VIEWER, Role.CONTROLLER, Role.GATEWAY, Role.ENGINEER, Role.ADMIN},
    Role.CONTROLLER: {Role.CONTROLLER, Role.GATEWAY},
    Role.ENGINEER: {Role.ENGINEER, Role.ADMIN},
}


@pytest.mark.parametrize(("method", "path", "needs"), ROUTES)
def test_route_role_matrix(
    service: Service, two: LineSpec, method: str, path: str, needs: Role
) -> None:
    body: dict[str, object] | None = None
    if path == "/v1/setpoints/ack":
        assert service.runtime.current is not None
        body = {"version": service.runtime.current.version, "values": nominal_values(two)}
    elif method == "PUT":
        body = {"mode": str(service.runtime.mode), "reason": "matrix test"}
    c = service.client
    assert c.request(method, path, json=body).status_code == 401
    bad = {"Authorization": "Bearer lt_" + "x" * 43}
    assert c.request(method, path, json=body, headers=bad).status_code == 401
    assert (
        c.request(method, path, json=body, headers={"Authorization": "Basic x"}).status_code == 401
    )
    for role in Role:
        r = c.request(method, path, json=body, headers=service.auth(role))
        expected = 200 if role in PERMITTED[needs] else 403
        assert r.status_code == expected, (role, r.text)


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics"])
def test_operations_routes_are_open(service: Service, path: str) -> None:
    assert service.client.get(path).status_code == 200


def test_etag_and_304(service: Service) -> None:
    c, h = service.client, service.auth(Role.VIEWER)
    r = c.get("/v1/setpoints", headers=h)
    assert r.status_code == 200
    etag = r.headers["etag"]
    assert etag == f'"{r.json()["version"]}"'
    seen_304 = False
    for _ in range(10):  # a decision may land between the two requests: retry
        r = c.get("/v1/setpoints", headers=h)
        again = c.get("/v1/setpoints", headers={**h, "If-None-Match": r.headers["etag"]})
        if again.status_code == 304:
            assert again.headers["etag"] == r.headers["etag"]
            assert again.content == b""
            seen_304 = True
            break
        assert int(again.json()["version"]) > int(r.json()["version"])
    assert seen_304
    old = c.get("/v1/setpoints", headers={**h, "If-None-Match": '"0"'})
    assert old.status_code == 200


def test_long_poll_returns_newer_version(service: Service) -> None:
    c, h = service.client, service.auth(Role.CONTROLLER)
    r = c.get("/v1/setpoints", headers=h)
    version = r.json()["version"]
    t0 = time.monotonic()
    r = c.get("/v1/setpoints?wait=20", headers={**h, "If-None-Match": r.headers["etag"]})
    assert r.status_code == 200
    assert r.json()["version"] > version
    assert time.monotonic() - t0 < 10


def test_wait_is_bounded(service: Service) -> None:
    r = service.client.get("/v1/setpoints?wait=61", headers=service.auth(Role.VIEWER))
    assert r.status_code == 422


def test_long_poll_times_out(two: LineSpec, model_dir: Path, tmp_path: Path) -> None:
    runtime = make_runtime(two, model_dir, tmp_path)  # not started: no new decisions
    try:
        runtime.run_cycle(runtime.twin.twin.snapshot(), 0.0)
        assert runtime.current is not None
        svc = Service(runtime)
        h = {**svc.auth(Role.VIEWER), "If-None-Match": runtime.current.etag}
        t0 = time.monotonic()
        r = svc.client.get("/v1/setpoints?wait=0.3", headers=h)
        assert r.status_code == 304
        assert time.monotonic() - t0 >= 0.3
    finally:
        runtime.stop()


def ack_rows(runtime: Runtime) -> int:
    with runtime.storage.read() as con:
        return int(con.execute("SELECT COUNT(*) FROM acknowledgements").fetchone()[0])


def _ack(service: Service, content: str) -> tuple[int, object]:
    r = service.client.post(
        "/v1/setpoints/ack",
        content=content,
        headers={**service.auth(Role.CONTROLLER), "Content-Type": "application/json"},
    )
    return r.status_code, r.json()


@pytest.mark.parametrize(
    ("values", "loc", "words"),
    [
        ('{"nope": {"speed": 1.0}}', ["body", "values", "nope"], "unknown station"),
        ('{"a": {"speed": 99.0}}', ["body", "values", "a", "speed"], "limits"),
        ('{"a": {"speed": -1.0}}', ["body", "values", "a", "speed"], "limits"),
        ('{"a": {"temperature": 20.0}}', ["body", "values", "a", "temperature"], "no setpoint"),
        ('{"a": {"speed": NaN}}', ["body", "values", "a", "speed"], "finite"),
        ('{"a": {"speed": "1.0"}}', ["body", "values", "a", "speed"], "number"),
        ("{}", ["body", "values"], "stations"),
    ],
)
def test_ack_validation(service: Service, values: str, loc: list[str], words: str) -> None:
    runtime = service.runtime
    assert runtime.current is not None
    before = ack_rows(runtime)
    code, body = _ack(service, f'{{"version": {runtime.current.version}, "values": {values}}}')
    assert code == 422
    errors = body["detail"]  # type: ignore[index]
    assert any(e["loc"] == loc and words in e["msg"].lower() for e in errors), errors
    assert ack_rows(runtime) == before


def test_ack_unknown_version_stores_nothing(service: Service, two: LineSpec) -> None:
    runtime = service.runtime
    before = ack_rows(runtime)
    code, body = _ack(service, json.dumps({"version": 10**9, "values": nominal_values(two)}))
    assert code == 422
    assert body["detail"][0]["loc"] == ["body", "version"]  # type: ignore[index]
    assert ack_rows(runtime) == before


def test_ack_is_stored_and_gauged(service: Service, two: LineSpec) -> None:
    runtime = service.runtime
    assert runtime.current is not None
    version = runtime.current.version
    code, body = _ack(service, json.dumps({"version": version, "values": nominal_values(two)}))
    assert code == 200, body
    key_id = service.keys[Role.CONTROLLER][:11]
    assert body["client"] == key_id  # type: ignore[index]
    acks = {a.client: a for a in runtime.storage.acks()}
    assert acks[key_id].version == version
    text = service.client.get("/metrics", headers=service.auth(Role.VIEWER)).text
    assert f'linetwin_ack_age_seconds{{client="{key_id}"}}' in text


def test_mode_change_audited(service: Service) -> None:
    c, runtime = service.client, service.runtime
    h = service.auth(Role.ENGINEER)
    seq_before, _ = runtime.audit.head()
    old = c.get("/v1/mode", headers=h).json()["mode"]
    new = "closed" if old != "closed" else "manual"
    r = c.put("/v1/mode", json={"mode": new, "reason": "test switch"}, headers=h)
    assert r.status_code == 200, r.text
    assert r.json()["previous"] == old and r.json()["mode"] == new
    assert c.get("/v1/mode", headers=h).json()["mode"] == new
    records = c.get(f"/v1/audit?after={seq_before}", headers=h).json()["records"]
    assert len(records) == 1
    rec = records[0]
    assert rec["action"] == "mode.change"
    assert rec["actor"] == "key:" + service.keys[Role.ENGINEER][:11]
    assert rec["old"] == {"mode": old} and rec["new"] == {"mode": new}
    assert rec["reason"] == "test switch"
    assert runtime.audit.verify().ok
    bad = c.put("/v1/mode", json={"mode": "auto", "reason": "x"}, headers=h)
    assert bad.status_code == 422
    missing = c.put("/v1/mode", json={"mode": "manual"}, headers=h)
    assert missing.status_code == 422
    assert runtime.audit.head()[0] == seq_before + 1
    c.put("/v1/mode", json={"mode": old, "reason": "restore"}, headers=h)


def test_state_and_history(service: Service, two: LineSpec) -> None:
    c, h = service.client, service.auth(Role.VIEWER)
    state = c.get("/v1/state", headers=h).json()
    assert state["line"] == two.name
    assert [s["name"] for s in state["stations"]] == ["a", "b"]
    assert state["stations"][0]["status"] in {"starved", "busy", "blocked", "down"}
    assert state["buffers"][0]["capacity"] == 5
    assert state["time_s"] > 0
    page = c.get("/v1/decisions?limit=2", headers=h).json()
    assert [d["version"] for d in page["decisions"]] == [1, 2]
    assert page["next_after"] == 2
    nxt = c.get("/v1/decisions?after=2&limit=1", headers=h).json()
    assert nxt["decisions"][0]["version"] == 3
    audit = c.get("/v1/audit?limit=1", headers=h).json()
    assert audit["records"][0]["seq"] == 1 and audit["next_after"] == 1
    assert c.get("/v1/audit?limit=0", headers=h).status_code == 422


def test_metrics_counters(service: Service) -> None:
    c = service.client
    c.get("/v1/setpoints", headers=service.auth(Role.VIEWER))
    text = c.get("/metrics").text
    for name in (
        "linetwin_cycles_total",
        "linetwin_setpoint_polls_total",
        "linetwin_setpoint_not_modified_total",
        "linetwin_fallbacks_total",
        "linetwin_cycle_seconds_bucket",
    ):
        assert name in text, name
    cycles = [line for line in text.splitlines() if line.startswith("linetwin_cycles_total ")]
    assert float(cycles[0].split()[1]) >= 1


def test_readyz_after_stop(two: LineSpec, model_dir: Path, tmp_path: Path) -> None:
    runtime = make_runtime(two, model_dir, tmp_path, speed=600.0)
    client = TestClient(create_app(runtime))
    runtime.start()
    try:
        wait_until(lambda: runtime.last_cycle_at is not None)
        r = client.get("/readyz")
        assert r.status_code == 200, r.text
        assert r.json()["ready"] is True
    finally:
        runtime.stop()
    r = client.get("/readyz")
    assert r.status_code == 503
    checks = r.json()["checks"]
    assert not checks["twin_running"]["ok"]
    assert not checks["storage_writable"]["ok"]
    assert client.get("/healthz").status_code == 200


def test_settings_from_env(tmp_path: Path) -> None:
    env = {"LINETWIN_PORT": "9123", "LINETWIN_SPEED": "5", "LINETWIN_DATA_DIR": str(tmp_path)}
    s = Settings.load(env, speed=7.0)
    assert (s.port, s.speed, s.data_dir) == (9123, 7.0, tmp_path)
    from linetwin.api.errors import UsageError

    with pytest.raises(UsageError, match="LINETWIN_PORT"):
        Settings.load({"LINETWIN_PORT": "http"})
    with pytest.raises(UsageError, match="--speed"):
        Settings.load({}, speed=-1.0)


# -- the reads the web page needs ----------------------------------------------------------------
def test_whoami_names_the_key_role_and_permissions(service: Service) -> None:
    for role in Role:
        body = service.client.get("/v1/whoami", headers=service.auth(role)).json()
        assert body["key_id"] == service.keys[role][:11]
        assert body["role"] == role
        assert body["permissions"] == sorted(str(p) for p in PERMISSIONS[role])


def test_kpi_history(service: Service) -> None:
    c, runtime, h = service.client, service.runtime, service.auth(Role.VIEWER)
    wait_until(lambda: runtime.history[-1].time_s - runtime.history[0].time_s >= 400)
    points = c.get("/v1/kpis/history?step_s=60&average_s=120", headers=h).json()["points"]
    assert len(points) >= 5
    times = [p["time_s"] for p in points]
    assert times == sorted(set(times))
    assert all(0 < p["window_s"] <= 120 for p in points)
    assert all(p["throughput_per_hour"] >= 0 for p in points)
    assert all(0 <= p["scrap_rate"] <= 1 for p in points)
    two = c.get("/v1/kpis/history?step_s=60&average_s=120&limit=2", headers=h).json()
    assert len(two["points"]) == 2 and two["step_s"] == 60 and two["average_s"] == 120
    assert two["points"][-1]["time_s"] >= points[-1]["time_s"]
    for bad in ("step_s=0", "step_s=inf", "average_s=nan", "average_s=0", "limit=0"):
        assert c.get(f"/v1/kpis/history?{bad}", headers=h).status_code == 422, bad


def test_pending_recommendation(service: Service) -> None:
    c, runtime, h = service.client, service.runtime, service.auth(Role.VIEWER)
    assert runtime.mode == "advisory"
    wait_until(lambda: runtime.controller.pending is not None)
    body = c.get("/v1/decisions/pending", headers=h).json()
    assert body["mode"] == "advisory"
    pending = body["decision"]
    assert pending["mode"] == "advisory" and pending["applied"] is False
    v = pending["version"]
    stored = c.get(f"/v1/decisions?after={v - 1}&limit=1", headers=h).json()["decisions"][0]
    assert stored == pending
    engineer = service.auth(Role.ENGINEER)
    c.put("/v1/mode", json={"mode": "manual", "reason": "pending test"}, headers=engineer)
    try:
        assert c.get("/v1/decisions/pending", headers=h).json() == {
            "mode": "manual",
            "decision": None,
        }
    finally:
        c.put("/v1/mode", json={"mode": "advisory", "reason": "restore"}, headers=engineer)


def test_audit_head(service: Service) -> None:
    c, runtime, h = service.client, service.runtime, service.auth(Role.VIEWER)
    head = c.get("/v1/audit/head", headers=h).json()
    seq, digest = runtime.audit.head()
    assert head == {"seq": seq, "hash": digest}
    last = c.get(f"/v1/audit?after={seq - 1}", headers=h).json()["records"]
    assert [r["seq"] for r in last] == [seq] and last[0]["hash"] == digest


def test_kpi_history_reaches_back_past_the_dense_window(
    two: LineSpec, model_dir: Path, tmp_path: Path
) -> None:
    """With a KPI window of 5 line minutes, the trend still covers the run: one snapshot a
    line minute is kept for a day, so the page shows the last hours when it opens."""
    # 600x, not faster: at 1200x a slow first cycle let the 256-snapshot queue drop a third of
    # the line minutes on a loaded machine (the trend keeps what arrives)
    runtime = make_runtime(two, model_dir, tmp_path, speed=600.0, kpi_window_max_s=300.0)
    runtime.start()
    try:
        wait_until(lambda: runtime.history[-1].time_s >= 1500.0)
        h = {"Authorization": f"Bearer {runtime.keys.create('viewer', 't', actor='t').key}"}
        body = TestClient(create_app(runtime)).get(
            "/v1/kpis/history?step_s=60&average_s=60", headers=h
        )
    finally:
        runtime.stop()
    points = body.json()["points"]
    # from the start of the run to its end: far beyond the 300 s window of dense snapshots
    assert points[0]["time_s"] <= 120.0 and points[-1]["time_s"] >= 1440.0
    assert len(points) >= 20
    assert all(p["window_s"] == pytest.approx(60.0, abs=1.5) for p in points)
    assert all(p["throughput_per_hour"] >= 0 for p in points)
