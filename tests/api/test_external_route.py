"""`POST /v1/plant/snapshots` on a service in external mode (the app in-process)."""

from __future__ import annotations

import csv
import io
import sqlite3
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from linetwin.api.app import create_app
from linetwin.api.keys import KeyStore, Role
from linetwin.api.plant import ExternalPlant
from linetwin.api.runtime import Runtime
from linetwin.api.settings import Settings
from linetwin.api.storage import MIGRATIONS, Storage, database_path
from linetwin.models.checkpoint import load
from linetwin.replay.csv_export import rows_from_snapshot
from linetwin.twin import Twin
from linetwin.twin.spec import LineSpec

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from fastapi.testclient import TestClient

PATH = "/v1/plant/snapshots"


def plant_rows(spec: LineSpec, n: int, seed: int = 0) -> list[dict[str, Any]]:
    """`n` rows of a twin of `spec`, one per plant second from 1 s."""
    twin = Twin(spec, 1, seed=seed)
    return [rows_from_snapshot(twin.step(1.0), spec)[0] for _ in range(n)]


def as_csv(rows: list[dict[str, Any]]) -> bytes:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if v is None else v for k, v in row.items()})
    return out.getvalue().encode()


class Service:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.client = TestClient(create_app(runtime))
        self.keys = {r: runtime.keys.create(r, f"test {r}", actor="test").key for r in Role}

    def auth(self, role: Role) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[role]}"}

    @property
    def plant(self) -> ExternalPlant:
        plant = self.runtime.plant
        assert isinstance(plant, ExternalPlant)
        return plant


def make_service(two: LineSpec, model_dir: Path, data_dir: Path, **kw: Any) -> Service:
    settings = Settings.load({}, data_dir=data_dir, model_dir=model_dir, **kw)
    return Service(Runtime(settings, two, load(model_dir, two)))


@pytest.fixture
def service(two: LineSpec, model_dir: Path, tmp_path: Path) -> Iterator[Service]:
    svc = make_service(two, model_dir, tmp_path, plant="external", max_plant_body_bytes=200_000)
    svc.runtime.start()
    try:
        yield svc
    finally:
        svc.runtime.stop()


def test_json_batch_is_taken_and_a_resend_is_ignored(service: Service, two: LineSpec) -> None:
    rows = plant_rows(two, 30)
    gw = service.auth(Role.GATEWAY)
    r = service.client.post(PATH, json={"rows": rows[:20]}, headers=gw)
    assert r.status_code == 200, r.text
    assert r.json() == {"accepted": 20, "duplicates": 0, "last_time_s": 20.0}
    r = service.client.post(PATH, json={"rows": rows[10:30]}, headers=gw)
    assert r.json() == {"accepted": 10, "duplicates": 10, "last_time_s": 30.0}
    r = service.client.post(PATH, json={"rows": rows[10:30]}, headers=gw)
    assert r.json() == {"accepted": 0, "duplicates": 20, "last_time_s": 30.0}
    assert service.plant.rows == 30
    latest = service.runtime.plant.latest
    assert latest is not None and latest.time_s == 30.0
    state = service.client.get("/v1/state", headers=service.auth(Role.VIEWER)).json()
    assert state["time_s"] == 30.0


def test_csv_batch_is_taken(service: Service, two: LineSpec) -> None:
    rows = plant_rows(two, 12)
    headers = {**service.auth(Role.GATEWAY), "Content-Type": "text/csv"}
    r = service.client.post(PATH, content=as_csv(rows), headers=headers)
    assert r.status_code == 200, r.text
    assert r.json() == {"accepted": 12, "duplicates": 0, "last_time_s": 12.0}


def test_a_bad_batch_is_422_naming_row_and_column_and_nothing_is_stored(
    service: Service, two: LineSpec
) -> None:
    rows = plant_rows(two, 20)
    gw = service.auth(Role.GATEWAY)
    assert service.client.post(PATH, json={"rows": rows[:10]}, headers=gw).status_code == 200
    station = two.stations[0].name
    bad = [dict(r) for r in rows[10:20]]
    bad[6][f"{station}.completed"] = -1
    r = service.client.post(PATH, json={"rows": bad}, headers=gw)
    assert r.status_code == 422, r.text
    [error] = r.json()["detail"]
    assert error["loc"] == ["body", "rows", 7, f"{station}.completed"]
    assert "row 7" in error["msg"] and f"{station}.completed" in error["msg"]
    assert service.plant.rows == 10  # nothing of the batch
    ready = service.client.get("/readyz", headers=service.auth(Role.VIEWER)).json()
    assert not ready["checks"]["plant_data"]["ok"]
    assert "rejected" in ready["checks"]["plant_data"]["detail"]
    # the same CSV batch: the same answer
    headers = {**gw, "Content-Type": "text/csv"}
    r = service.client.post(PATH, content=as_csv(bad), headers=headers)
    assert r.status_code == 422 and r.json()["detail"][0]["loc"][2:] == [7, f"{station}.completed"]
    good = service.client.post(PATH, json={"rows": rows[10:20]}, headers=gw)
    assert good.json()["accepted"] == 10


def test_time_going_back_is_refused(service: Service, two: LineSpec) -> None:
    rows = plant_rows(two, 10)
    gw = service.auth(Role.GATEWAY)
    service.client.post(PATH, json={"rows": rows[5:10]}, headers=gw)
    back = dict(rows[2])
    back["time_s"] = 7.5  # not a resend: a time between two received ones
    r = service.client.post(PATH, json={"rows": [back]}, headers=gw)
    assert r.status_code == 422
    assert "back" in r.json()["detail"][0]["msg"]
    assert service.plant.rows == 5


@pytest.mark.parametrize(
    ("body", "content_type", "words"),
    [
        (b"{not json", "application/json", "not JSON"),
        (b'{"rows": 3}', "application/json", "list of row objects"),
        (b'{"rows": [], "more": 1}', "application/json", "unknown field"),
        (b"[1, 2]", "application/json", '{"rows"'),
        (b"a,b", "application/x-yaml", "text/csv"),
    ],
)
def test_malformed_bodies_are_422(
    service: Service, body: bytes, content_type: str, words: str
) -> None:
    headers = {**service.auth(Role.GATEWAY), "Content-Type": content_type}
    r = service.client.post(PATH, content=body, headers=headers)
    assert r.status_code == 422 and words in r.json()["detail"][0]["msg"], r.text


def test_role_matrix(service: Service, two: LineSpec) -> None:
    rows = plant_rows(two, len(Role) + 1)
    c = service.client
    assert c.post(PATH, json={"rows": rows[:1]}).status_code == 401
    for k, role in enumerate(Role, start=1):
        r = c.post(PATH, json={"rows": rows[k : k + 1]}, headers=service.auth(role))
        allowed = role in (Role.GATEWAY, Role.ADMIN)
        assert r.status_code == (200 if allowed else 403), (role, r.text)
    assert service.plant.rows == 2
    who = c.get("/v1/whoami", headers=service.auth(Role.GATEWAY)).json()
    assert who["role"] == "gateway"
    assert who["permissions"] == ["acknowledge", "plant_data", "read"]


def test_body_over_the_route_limit_is_413(service: Service, two: LineSpec) -> None:
    rows = plant_rows(two, 400)  # ~300 bytes a row: over the 200,000 bytes of the fixture
    r = service.client.post(PATH, json={"rows": rows}, headers=service.auth(Role.GATEWAY))
    assert r.status_code == 413 and "200000 bytes" in r.json()["detail"]
    assert service.plant.rows == 0


def test_twin_mode_has_no_external_plant(two: LineSpec, model_dir: Path, tmp_path: Path) -> None:
    svc = make_service(two, model_dir, tmp_path)  # not started: the route answers at once
    try:
        r = svc.client.post(PATH, json={"rows": plant_rows(two, 1)}, headers=svc.auth(Role.GATEWAY))
        assert r.status_code == 409 and "--plant twin" in r.json()["detail"]
        assert "plant_data" not in svc.runtime.readiness()
    finally:
        svc.runtime.storage.close()


def test_opcua_needs_an_external_plant(two: LineSpec, model_dir: Path, tmp_path: Path) -> None:
    from linetwin.api.errors import UsageError

    with pytest.raises(UsageError, match="--plant external"):
        make_service(two, model_dir, tmp_path, opcua=tmp_path / "m.toml")


def test_a_database_of_schema_1_takes_gateway_keys(tmp_path: Path, two: LineSpec) -> None:
    path = database_path(tmp_path)
    con = sqlite3.connect(path)
    con.execute(
        "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, "
        "applied_at REAL NOT NULL, description TEXT NOT NULL)"
    )
    version, description, statements = MIGRATIONS[0]
    for statement in statements:
        con.execute(statement)
    con.execute("INSERT INTO schema_migrations VALUES (?, 0, ?)", (version, description))
    con.execute(
        "INSERT INTO api_keys (key_id, hash, role, label, created_at) VALUES "
        "('lt_old00000', 'h', 'viewer', 'old', 0)"
    )
    con.commit()
    con.close()
    with Storage(path, two) as storage:
        keys = KeyStore(storage)
        assert [k.key_id for k in keys.list()] == ["lt_old00000"]
        new = keys.create(Role.GATEWAY, "gw", actor="test")
        assert keys.authenticate(new.key) == (new.info.key_id, Role.GATEWAY)
        with (
            pytest.raises(Exception, match="revoked, never deleted"),
            storage.write("delete") as con2,
        ):
            con2.execute("DELETE FROM api_keys")


def test_record_keeps_every_row_ingested(two: LineSpec, model_dir: Path, tmp_path: Path) -> None:
    from linetwin.twin.recorder import read_recording

    path = tmp_path / "plant.parquet"
    svc = make_service(two, model_dir, tmp_path / "data", plant="external", record=path)
    svc.runtime.start()
    try:
        gw = svc.auth(Role.GATEWAY)
        rows = plant_rows(two, 150)
        for k in range(0, 150, 50):
            assert svc.client.post(PATH, json={"rows": rows[k : k + 50]}, headers=gw).is_success
        assert svc.client.post(PATH, json={"rows": rows[:50]}, headers=gw).is_success  # resent
    finally:
        svc.runtime.stop()
    rec = read_recording(path)
    assert rec.n_ticks == 150
    np.testing.assert_allclose(rec.time_s, np.arange(1.0, 151.0))
