"""Engineers' routes, line/KPI/stream reads, rate limits and silent clients of the service."""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from waiting import wait_until

import linetwin.optimizer.controller as controller_module
from linetwin.api.app import create_app
from linetwin.api.keys import Role
from linetwin.api.runtime import Runtime
from linetwin.api.settings import Settings
from linetwin.api.storage import StorageError
from linetwin.models.checkpoint import load
from linetwin.optimizer.problem import MOVE_MIN_GAIN_PER_HOUR, MOVE_SIGNIFICANCE
from linetwin.twin.spec import LineSpec

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from fastapi.testclient import TestClient


class Svc:
    """A runtime (started or driven by hand) behind a test client, with a key per role."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.client = TestClient(create_app(runtime))
        self.keys = {r: runtime.keys.create(r, f"test {r}", actor="test").key for r in Role}

    def auth(self, role: Role | None) -> dict[str, str]:
        return {} if role is None else {"Authorization": f"Bearer {self.keys[role]}"}

    @property
    def eng(self) -> dict[str, str]:
        return self.auth(Role.ENGINEER)

    def actor(self, role: Role) -> str:
        return "key:" + self.keys[role][:11]

    def cycle(self, ticks: int = 5) -> None:
        """Advance the (not started) twin by hand and run one controller cycle."""
        rt = self.runtime
        for _ in range(ticks):
            rt.history.append(rt.twin.tick())
        assert rt.twin.latest is not None
        rt.run_cycle(rt.twin.latest, 300.0)

    def audit_after(self, seq: int) -> list[dict[str, Any]]:
        r = self.client.get(f"/v1/audit?after={seq}", headers=self.eng)
        records: list[dict[str, Any]] = r.json()["records"]
        return records


class Clock:
    """A wall clock the test moves by hand (s since the epoch)."""

    def __init__(self, t: float = 1_700_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def make_runtime(
    two: LineSpec, model_dir: Path, data_dir: Path, clock: Clock | None = None, **kw: Any
) -> Runtime:
    settings = Settings.load({}, data_dir=data_dir, model_dir=model_dir, **kw)
    if clock is None:
        return Runtime(settings, two, load(model_dir, two))
    return Runtime(settings, two, load(model_dir, two), clock=clock)


@pytest.fixture
def svc(two: LineSpec, model_dir: Path, tmp_path: Path) -> Iterator[Svc]:
    """A runtime in advisory mode whose twin and cycles the test drives by hand."""
    runtime = make_runtime(two, model_dir, tmp_path)
    try:
        s = Svc(runtime)
        s.cycle()
        yield s
    finally:
        runtime.stop()


# -- role matrix -----------------------------------------------------------------------------
PERMITTED = {
    Role.VIEWER: {Role.VIEWER, Role.CONTROLLER, Role.GATEWAY, Role.ENGINEER, Role.ADMIN},
    Role.ENGINEER: {Role.ENGINEER, Role.ADMIN},
}
ROUTES: list[tuple[str, str, Role, Any, set[int]]] = [
    ("POST", "/v1/decisions/nope/approve", Role.ENGINEER, {"reason": "m"}, {409}),
    ("POST", "/v1/decisions/nope/reject", Role.ENGINEER, {"reason": "m"}, {409}),
    ("GET", "/v1/overrides", Role.VIEWER, None, {200}),
    (
        "POST",
        "/v1/overrides",
        Role.ENGINEER,
        {"values": {"a": {"speed": 1.0}}, "reason": "m"},
        {200},
    ),
    ("DELETE", "/v1/overrides/a?reason=m", Role.ENGINEER, None, {200, 404}),
    ("POST", "/v1/rollback", Role.ENGINEER, {"version": 1, "reason": "m"}, {200}),
    ("GET", "/v1/objective", Role.ENGINEER, None, {200}),
    (
        "PUT",
        "/v1/objective",
        Role.ENGINEER,
        {"good_weight": 1.0, "scrap_weight": 1.0, "energy_weight": 0.1, "reason": "m"},
        {200},
    ),
    ("POST", "/v1/whatif", Role.ENGINEER, {"candidates": [{"a": {"speed": 1.1}}]}, {200}),
    ("GET", "/v1/line", Role.VIEWER, None, {200}),
    ("GET", "/v1/kpis?window_s=60", Role.VIEWER, None, {200}),
    ("GET", "/v1/state/stream?max_events=1", Role.VIEWER, None, {200}),
    ("GET", "/v1/clients", Role.VIEWER, None, {200}),
]


def test_role_matrix(svc: Svc) -> None:
    c = svc.client
    for method, path, needs, body, ok in ROUTES:
        assert c.request(method, path, json=body).status_code == 401, path
        bad = {"Authorization": "Bearer lt_" + "x" * 43}
        assert c.request(method, path, json=body, headers=bad).status_code == 401, path
        for role in Role:
            r = c.request(method, path, json=body, headers=svc.auth(role))
            if role in PERMITTED[needs]:
                assert r.status_code in ok, (path, role, r.text)
            else:
                assert r.status_code == 403, (path, role, r.text)
    assert svc.runtime.audit.verify().ok


def test_openapi_declares_the_new_routes(svc: Svc) -> None:
    schema = svc.client.get("/openapi.json").json()
    paths = schema["paths"]
    for path in (
        "/v1/decisions/{decision_id}/approve",
        "/v1/decisions/{decision_id}/reject",
        "/v1/overrides",
        "/v1/overrides/{station}",
        "/v1/rollback",
        "/v1/objective",
        "/v1/whatif",
        "/v1/line",
        "/v1/kpis",
        "/v1/state/stream",
        "/v1/clients",
    ):
        assert path in paths, path
    ok = paths["/v1/whatif"]["post"]["responses"]["200"]["content"]["application/json"]
    assert ok["schema"]["$ref"].endswith("/WhatIfOut")
    assert "429" in paths["/v1/objective"]["put"]["responses"]


# -- approvals -------------------------------------------------------------------------------
def test_approve_flow(svc: Svc) -> None:
    c, rt = svc.client, svc.runtime
    assert str(rt.mode) == "advisory"
    pending = c.get("/v1/setpoints", headers=svc.eng).json()
    assert pending["applied"] is False
    assert rt.controller.pending is not None and rt.controller.pending.id == pending["id"]
    seq, _ = rt.audit.head()
    r = c.post(
        f"/v1/decisions/{pending['id']}/approve", json={"reason": "looks good"}, headers=svc.eng
    )
    assert r.status_code == 200, r.text
    out = r.json()
    d = out["decision"]
    assert d["version"] == pending["version"] + 1
    assert d["applied"] is True and "approved" in d["reasons"]
    assert c.get("/v1/setpoints", headers=svc.eng).json()["version"] == d["version"]
    running = rt.running()
    assert running[0, 0] == pytest.approx(d["setpoints"]["a"]["speed"])
    records = svc.audit_after(seq)
    assert len(records) == 1 and records[0]["seq"] == out["audit_seq"]
    rec = records[0]
    assert rec["action"] == "decision.approve" and rec["reason"] == "looks good"
    assert rec["actor"] == svc.actor(Role.ENGINEER)
    assert rec["old"]["pending"] == pending["id"] and rec["new"]["version"] == d["version"]
    # nothing pending any more: 409, no record
    again = c.post(f"/v1/decisions/{pending['id']}/approve", json={"reason": "x"}, headers=svc.eng)
    assert again.status_code == 409
    assert rt.audit.head()[0] == seq + 1
    assert rt.audit.verify().ok


def test_a_cycle_publishes_its_record_without_reading_it_back(
    svc: Svc, monkeypatch: pytest.MonkeyPatch
) -> None:
    rt = svc.runtime
    # an override far from what the plant runs ramps over several cycles: each one publishes
    start = float(rt.running()[0, 0])
    rt.override({"a": {"speed": 1.45 if start < 1.0 else 0.55}}, actor="t", reason="ramp")
    before = rt.current
    assert before is not None and rt.ramping

    def no_reads(*args: object) -> None:
        raise AssertionError("the stored record was read back")

    for name in ("latest_record", "latest", "decision", "decisions"):
        monkeypatch.setattr(rt.storage, name, no_reads)
    svc.cycle()
    monkeypatch.undo()
    assert rt.cycle_error is None and rt.current is not None
    assert rt.current.version == before.version + 1
    stored = rt.storage.decision(rt.current.version)
    assert stored is not None and stored.payload_json.encode() == rt.current.body
    assert json.loads(rt.current.body)["reasons"][0] == "override"


def test_approval_and_its_audit_record_commit_together(
    svc: Svc, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failure writing the audit record stores no approved decision and publishes none."""
    rt = svc.runtime
    svc.cycle()
    pending = rt.controller.pending
    assert pending is not None
    latest = rt.storage.latest_record()
    assert latest is not None
    published = rt.current

    def full_disk(*args: object, **kwargs: object) -> None:
        raise StorageError("audit: disk full (injected)")

    monkeypatch.setattr(rt.audit, "append", full_disk)
    with pytest.raises(StorageError, match="injected"):
        rt.approve(pending.id, actor="test", reason="x")
    monkeypatch.undo()
    after = rt.storage.latest_record()
    assert after is not None and after.version == latest.version
    assert rt.current == published
    assert rt.audit.verify().ok


def test_reject_and_wrong_ids(svc: Svc) -> None:
    c, rt = svc.client, svc.runtime
    pending = c.get("/v1/setpoints", headers=svc.eng).json()
    wrong = c.post("/v1/decisions/other/approve", json={"reason": "x"}, headers=svc.eng)
    assert wrong.status_code == 409 and "not the pending one" in wrong.json()["detail"]
    assert (
        c.post(f"/v1/decisions/{pending['id']}/reject", json={}, headers=svc.eng).status_code == 422
    )
    seq, _ = rt.audit.head()
    r = c.post(
        f"/v1/decisions/{pending['id']}/reject", json={"reason": "too aggressive"}, headers=svc.eng
    )
    assert r.status_code == 200, r.text
    assert rt.controller.pending is None
    [rec] = svc.audit_after(seq)
    assert rec["action"] == "decision.reject" and rec["reason"] == "too aggressive"
    assert rec["old"]["pending"] == pending["id"]
    assert (
        c.post(
            f"/v1/decisions/{pending['id']}/approve", json={"reason": "x"}, headers=svc.eng
        ).status_code
        == 409
    )
    # outside advisory mode: 409
    svc.cycle()
    pending = c.get("/v1/setpoints", headers=svc.eng).json()
    c.put("/v1/mode", json={"mode": "manual", "reason": "t"}, headers=svc.eng)
    r = c.post(f"/v1/decisions/{pending['id']}/approve", json={"reason": "x"}, headers=svc.eng)
    assert r.status_code == 409
    assert rt.audit.verify().ok


# -- overrides -------------------------------------------------------------------------------
def test_override_through_the_guard(svc: Svc) -> None:
    c, rt = svc.client, svc.runtime
    start = float(rt.running()[0, 0])
    target = 1.45 if start < 1.2 else 0.55
    seq, _ = rt.audit.head()
    r = c.post(
        "/v1/overrides",
        json={"values": {"a": {"speed": target}}, "reason": "operator trial"},
        headers=svc.eng,
    )
    assert r.status_code == 200, r.text
    d = r.json()["decision"]
    assert d["reasons"][0] == "override" and "ramped" in d["reasons"]
    assert d["applied"] is True
    moved = d["setpoints"]["a"]["speed"] - start
    assert 0 < abs(moved) <= 0.1 + 1e-9 and np.sign(moved) == np.sign(target - start)
    assert rt.running()[0, 0] == pytest.approx(d["setpoints"]["a"]["speed"])
    assert rt.controller.locked == ("a",)
    [rec] = svc.audit_after(seq)
    assert rec["action"] == "override.set" and rec["reason"] == "operator trial"
    assert rec["old"] == {"held": {}} and rec["new"]["held"] == {"a": {"speed": target}}
    assert "override" in rec["new"]["reasons"]
    held = c.get("/v1/overrides", headers=svc.auth(Role.VIEWER)).json()
    assert held == {"held": {"a": {"speed": target}}, "ramping": True}
    # the controller ramps on, one max_step per cycle, and holds the station there: one
    # published version per cycle (the override's step is the cycle's decision)
    for _ in range(12):
        version = rt.current.version if rt.current is not None else 0
        ramping = rt.ramping
        svc.cycle(ticks=2)
        # one version per cycle while the override ramps; after, only a change is published
        assert rt.current is not None and rt.current.version - version in (
            (1,) if ramping else (0, 1)
        )
    assert rt.running()[0, 0] == pytest.approx(target)
    assert not rt.ramping
    latest = c.get("/v1/setpoints", headers=svc.eng).json()
    assert latest["setpoints"]["a"]["speed"] == pytest.approx(target)
    # release: audited, unlocked
    seq, _ = rt.audit.head()
    assert c.delete("/v1/overrides/a", headers=svc.eng).status_code == 422  # reason required
    r = c.delete("/v1/overrides/a?reason=done", headers=svc.eng)
    assert r.status_code == 200, r.text
    assert rt.controller.locked == ()
    [rec] = svc.audit_after(seq)
    assert rec["action"] == "override.release" and rec["new"] == {"held": {}}
    assert c.delete("/v1/overrides/a?reason=again", headers=svc.eng).status_code == 404
    assert rt.audit.verify().ok


@pytest.mark.parametrize(
    ("values", "loc", "words"),
    [
        ({"a": {"speed": 9.0}}, ["body", "values", "a", "speed"], "limits [0.5, 1.5]"),
        ({"zz": {"speed": 1.0}}, ["body", "values", "zz"], "unknown station"),
        ({"a": {"temperature": 50.0}}, ["body", "values", "a", "temperature"], "no setpoint"),
        ({"a": {"speed": "fast"}}, ["body", "values", "a", "speed"], "number"),
    ],
)
def test_override_422_stores_nothing(
    svc: Svc, values: dict[str, Any], loc: list[str], words: str
) -> None:
    c, rt = svc.client, svc.runtime
    version = c.get("/v1/setpoints", headers=svc.eng).json()["version"]
    seq, _ = rt.audit.head()
    r = c.post("/v1/overrides", json={"values": values, "reason": "bad"}, headers=svc.eng)
    assert r.status_code == 422
    errors = r.json()["detail"]
    assert any(e["loc"] == loc and words in e["msg"] for e in errors), errors
    assert rt.audit.head()[0] == seq
    assert rt.storage.next_version() == version + 1
    assert rt.overrides == {} and rt.controller.locked == ()


def test_override_nan_is_422(svc: Svc) -> None:
    r = svc.client.post(
        "/v1/overrides",
        content='{"values": {"a": {"speed": NaN}}, "reason": "x"}',
        headers={**svc.eng, "Content-Type": "application/json"},
    )
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == ["body", "values", "a", "speed"]


# -- rollback --------------------------------------------------------------------------------
def test_rollback(svc: Svc) -> None:
    c, rt = svc.client, svc.runtime
    first = c.get("/v1/decisions?limit=1", headers=svc.eng).json()["decisions"][0]
    c.post("/v1/overrides", json={"values": {"a": {"speed": 0.8}}, "reason": "dn"}, headers=svc.eng)
    c.delete("/v1/overrides/a?reason=off", headers=svc.eng)
    moved = float(rt.running()[0, 0])
    goal = first["setpoints"]["a"]["speed"]
    assert moved != pytest.approx(goal)
    seq, _ = rt.audit.head()
    r = c.post("/v1/rollback", json={"version": 1, "reason": "back"}, headers=svc.eng)
    assert r.status_code == 200, r.text
    d = r.json()["decision"]
    assert d["reasons"][0] == "rollback" and d["applied"] is True
    assert d["target"]["a"]["speed"] == pytest.approx(goal)  # through the guard: ramped
    step = d["setpoints"]["a"]["speed"] - moved
    assert 0 < abs(step) <= 0.1 + 1e-9 and np.sign(step) == np.sign(goal - moved)
    assert rt.running()[0, 0] == pytest.approx(d["setpoints"]["a"]["speed"])
    [rec] = svc.audit_after(seq)
    assert rec["action"] == "decision.rollback" and rec["new"]["to_version"] == 1
    assert rec["new"]["version"] == d["version"] and rec["reason"] == "back"
    bad = c.post("/v1/rollback", json={"version": 999, "reason": "x"}, headers=svc.eng)
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "version"]
    assert rt.audit.head()[0] == seq + 1
    assert rt.audit.verify().ok


# -- objective -------------------------------------------------------------------------------
def test_objective_change_used_next_cycle(
    svc: Svc, two: LineSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    c, rt = svc.client, svc.runtime
    got = c.get("/v1/objective", headers=svc.eng).json()
    eco = two.economics
    assert got["good_weight"] == eco.price_per_good_part and got["scrap_rate_cap"] is None
    seen: list[Any] = []
    real = controller_module.make_problem

    def spy(*args: Any, **kw: Any) -> Any:
        problem = real(*args, **kw)
        seen.append(problem.objective)
        return problem

    monkeypatch.setattr(controller_module, "make_problem", spy)
    new = {"good_weight": 2.0, "scrap_weight": 3.0, "energy_weight": 0.5, "scrap_rate_cap": 0.2}
    seq, _ = rt.audit.head()
    r = c.put("/v1/objective", json={**new, "reason": "margin push"}, headers=svc.eng)
    assert r.status_code == 200, r.text
    assert r.json()["previous"] == got
    defaults = {
        "move_min_gain_per_hour": MOVE_MIN_GAIN_PER_HOUR,
        "move_significance": MOVE_SIGNIFICANCE,
    }
    assert r.json()["objective"] == {**new, "energy_cap_kwh_per_hour": None, **defaults}
    [rec] = svc.audit_after(seq)
    assert rec["action"] == "objective.change" and rec["old"] == got
    assert rec["new"]["scrap_rate_cap"] == 0.2 and rec["reason"] == "margin push"
    svc.cycle()
    assert seen and seen[-1].good_weight == 2.0 and seen[-1].scrap_rate_cap == 0.2


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"good_weight": -1.0}, "good_weight"),
        ({"scrap_rate_cap": 1.5}, "scrap_rate_cap"),
        ({"energy_cap_kwh_per_hour": 0.0}, "energy_cap_kwh_per_hour"),
        ({"energy_weight": "x"}, "energy_weight"),
        ({"bogus": 1.0}, "bogus"),
        ({"move_significance": 0.0}, "move_significance"),
        ({"move_min_gain_per_hour": -1.0}, "move_min_gain_per_hour"),
    ],
)
def test_objective_422(svc: Svc, patch: dict[str, Any], field: str) -> None:
    base = {"good_weight": 1.0, "scrap_weight": 1.0, "energy_weight": 0.1, "reason": "x"}
    before = svc.runtime.objective
    seq, _ = svc.runtime.audit.head()
    r = svc.client.put("/v1/objective", json={**base, **patch}, headers=svc.eng)
    assert r.status_code == 422
    assert any(e["loc"][:2] == ["body", field] for e in r.json()["detail"]), r.json()
    assert svc.runtime.objective == before and svc.runtime.audit.head()[0] == seq


# -- what-if ---------------------------------------------------------------------------------
def test_whatif_surrogate_and_twin(svc: Svc) -> None:
    c = svc.client
    body = {"candidates": [{"a": {"speed": 0.9}}, {"a": {"speed": 1.2}, "b": {"speed": 1.2}}]}
    r = c.post("/v1/whatif", json=body, headers=svc.eng)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["runs"] == 0 and len(out["results"]) == 2
    res = out["results"][1]
    assert res["setpoints"] == {"a": {"speed": 1.2}, "b": {"speed": 1.2}}
    assert out["results"][0]["setpoints"]["b"]["speed"] == pytest.approx(
        float(svc.runtime.running()[1, 0])
    )
    for k in ("throughput_per_hour", "scrap_rate", "energy_kwh_per_good_part", "profit_per_hour"):
        assert res["surrogate"][k]["mean"] is not None and res["surrogate"][k]["std"] >= 0
    assert res["twin"] is None
    r = c.post(
        "/v1/whatif", json={**body, "twin": {"seeds": 3, "hours": 0.1, "seed": 1}}, headers=svc.eng
    )
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["runs"] == 3 and out["hours"] == 0.1
    tw = out["results"][0]["twin"]["throughput_per_hour"]
    assert tw["mean"] > 0 and tw["ci_low"] <= tw["mean"] <= tw["ci_high"]
    bad = c.post("/v1/whatif", json={"candidates": [{"a": {"speed": 2.0}}]}, headers=svc.eng)
    assert bad.status_code == 422
    assert bad.json()["detail"][0]["loc"] == ["body", "candidates", 0, "a", "speed"]
    big = {"candidates": [{"a": {"speed": 1.0}}] * 9, "twin": {"seeds": 2, "hours": 0.1}}
    assert c.post("/v1/whatif", json=big, headers=svc.eng).status_code == 422
    huge = {"candidates": [{}], "twin": {"seeds": 100}}
    assert c.post("/v1/whatif", json=huge, headers=svc.eng).status_code == 422


# -- line, KPIs, stream ----------------------------------------------------------------------
def test_line_and_kpis(svc: Svc, two: LineSpec) -> None:
    c, h = svc.client, svc.auth(Role.VIEWER)
    line = c.get("/v1/line", headers=h).json()
    assert line["name"] == two.name and line["spec_hash"] == two.spec_hash()
    assert line["stations"][0]["setpoints"]["speed"]["max_step"] == 0.1
    for _ in range(100):
        svc.runtime.history.append(svc.runtime.twin.tick())
    k = c.get("/v1/kpis?window_s=60", headers=h).json()
    assert k["window_s"] == pytest.approx(60.0)
    assert set(k["availability"]) == {"a", "b"}
    assert k["throughput_per_hour"] is not None and k["throughput_per_hour"] >= 0
    assert c.get("/v1/kpis?window_s=0", headers=h).status_code == 422
    assert c.get("/v1/kpis?window_s=99999", headers=h).status_code == 422


@pytest.fixture(scope="module")
def live(two: LineSpec, model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Svc]:
    runtime = make_runtime(two, model_dir, tmp_path_factory.mktemp("live"), speed=600.0)
    runtime.start()
    try:
        wait_until(lambda: runtime.current is not None)
        yield Svc(runtime)
    finally:
        runtime.stop()


def test_state_stream_returns_n_events(live: Svc) -> None:
    subs_before = len(live.runtime.twin._subs)
    times = []
    with live.client.stream(
        "GET", "/v1/state/stream?max_events=5", headers=live.auth(Role.VIEWER)
    ) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("data: "):
                state = json.loads(line[6:])
                assert state["line"] == "two-station"
                times.append(state["time_s"])
    assert len(times) == 5
    assert times == sorted(times)
    assert len(live.runtime.twin._subs) == subs_before
    k = live.client.get("/v1/kpis?window_s=30", headers=live.auth(Role.VIEWER))
    assert k.status_code == 200, k.text


def test_state_stream_ends_on_shutdown(two: LineSpec, model_dir: Path, tmp_path: Path) -> None:
    runtime = make_runtime(two, model_dir, tmp_path, speed=600.0)
    runtime.start()
    try:
        s = Svc(runtime)
        got = 0
        with s.client.stream("GET", "/v1/state/stream", headers=s.auth(Role.VIEWER)) as r:
            for line in r.iter_lines():
                if line.startswith("data: "):
                    got += 1
                    if got == 2:
                        runtime.close_streams()
        assert got >= 2
    finally:
        runtime.stop()


# -- rate limit, silent clients, restarts ----------------------------------------------------
def test_rate_limit_429(two: LineSpec, model_dir: Path, tmp_path: Path) -> None:
    runtime = make_runtime(two, model_dir, tmp_path, rate_per_s=0.5, rate_burst=3)
    try:
        s = Svc(runtime)
        h = s.auth(Role.VIEWER)
        codes = [s.client.get("/v1/mode", headers=h).status_code for _ in range(3)]
        assert codes == [200, 200, 200]
        r = s.client.get("/v1/mode", headers=h)
        assert r.status_code == 429
        assert int(r.headers["retry-after"]) >= 1
        assert s.client.get("/v1/mode", headers=s.auth(Role.ENGINEER)).status_code == 200
        assert "linetwin_rate_limited_total 1.0" in s.client.get("/metrics").text
    finally:
        runtime.stop()


def test_silent_clients(two: LineSpec, model_dir: Path, tmp_path: Path) -> None:
    clock = Clock()
    runtime = make_runtime(two, model_dir, tmp_path, clock, silent_after_s=0.2)
    try:
        s = Svc(runtime)
        s.cycle()
        assert runtime.current is not None
        values = {st.name: {"speed": 1.0} for st in two.stations}
        ack = {"version": runtime.current.version, "values": values}
        h = s.auth(Role.CONTROLLER)
        assert s.client.post("/v1/setpoints/ack", json=ack, headers=h).status_code == 200
        client = s.keys[Role.CONTROLLER][:11]
        fresh = s.client.get("/v1/clients", headers=h).json()
        assert fresh["clients"][0]["client"] == client and not fresh["clients"][0]["silent"]
        clock.t += 0.3  # the runtime's clock: no sleeping
        stale = s.client.get("/v1/clients", headers=h).json()
        assert stale["clients"][0]["silent"] is True
        text = s.client.get("/metrics", headers=h).text
        assert f'linetwin_client_silent{{client="{client}"}} 1.0' in text
        assert "linetwin_silent_clients 1.0" in text
    finally:
        runtime.stop()


def test_readiness_follows_the_runtime_clock(
    two: LineSpec, model_dir: Path, tmp_path: Path
) -> None:
    """The last cycle goes stale after 3 controller periods (wall s) plus the grace, on the
    runtime's clock; a stale snapshot (received long ago) makes the controller fall back."""
    clock = Clock()
    runtime = make_runtime(two, model_dir, tmp_path, clock, speed=10.0, period_s=60.0)
    try:
        s = Svc(runtime)
        assert not runtime.readiness()["last_cycle_recent"][0]  # not started, no cycle
        s.cycle()
        assert runtime.last_cycle_at == clock.t
        ok, detail = runtime.readiness()["last_cycle_recent"]
        assert ok and "0.0 s ago (limit 23.0 s)" in detail
        clock.t += 23.5
        ok, detail = runtime.readiness()["last_cycle_recent"]
        assert not ok and "23.5 s ago" in detail
        snap = runtime.twin.tick()
        runtime.run_cycle(snap, 300.0, received=clock.t - 1000.0)
        current = runtime.current
        assert current is not None
        body = json.loads(current.body)
        assert body["fallback"] and body["reasons"] == ["stale_data"]
        assert body["created_at"] == clock.t and runtime.readiness()["last_cycle_recent"][0]
    finally:
        runtime.stop()


def test_mode_objective_overrides_survive_restart(
    two: LineSpec, model_dir: Path, tmp_path: Path
) -> None:
    runtime = make_runtime(two, model_dir, tmp_path)
    try:
        s = Svc(runtime)
        s.cycle()
        assert (
            s.client.put(
                "/v1/mode", json={"mode": "closed", "reason": "go"}, headers=s.eng
            ).status_code
            == 200
        )
        body = {"good_weight": 2.0, "scrap_weight": 1.0, "energy_weight": 0.2, "reason": "r"}
        assert s.client.put("/v1/objective", json=body, headers=s.eng).status_code == 200
        ov = {"values": {"b": {"speed": 1.2}}, "reason": "hold"}
        assert s.client.post("/v1/overrides", json=ov, headers=s.eng).status_code == 200
    finally:
        runtime.stop()
    again = make_runtime(two, model_dir, tmp_path)
    try:
        assert str(again.mode) == "closed" and again.mode_restored
        assert again.objective.good_weight == 2.0
        assert again.overrides == {"b": {"speed": 1.2}} and again.controller.locked == ("b",)
        assert again.audit.verify().ok
    finally:
        again.stop()
    explicit = make_runtime(two, model_dir, tmp_path, mode="manual")
    try:
        assert str(explicit.mode) == "manual" and not explicit.mode_restored
    finally:
        explicit.stop()


def test_predictions_against_realised_are_readable_by_any_key(svc: Svc) -> None:
    c = svc.client
    assert c.get("/v1/kpis/predictions").status_code == 401
    r = c.get("/v1/kpis/predictions", headers=svc.auth(Role.VIEWER))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["horizon_s"] == svc.runtime.model.schema.horizon_s
    assert set(body["kpis"]) == {
        "throughput_per_hour", "scrap_rate", "energy_kwh_per_good_part", "profit_per_hour"
    }  # fmt: skip
    assert body["open_pairs"] >= 1  # the cycles so far opened pairs; none has closed yet
