"""Checks of the emulated plant: its mismatch, its rows (they validate and restore to its
state), and its gateway against a small real service on a loopback port that feeds an
`ExternalPlant` and publishes that plant's setpoints."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import pytest
import uvicorn
from click.testing import CliRunner
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from linetwin.api.client import PolledDecision
from linetwin.api.emulator import (
    Emulator,
    Mismatch,
    PostError,
    parse_mismatch,
    perturb,
    rows_from_snapshot,
)
from linetwin.api.errors import ApiError, UsageError
from linetwin.api.plant import ExternalPlant
from linetwin.cli.main import cli
from linetwin.optimizer.decision import Decision, Mode, encode
from linetwin.replay.errors import PlantDataError
from linetwin.twin import Twin, bundled_spec

KEY = "k-emulator"
MEASURED = ("status", "completed", "scrapped", "failures", "buffer_level", "released")
MEASURED += ("good_out", "scrap_total", "energy_kwh", "wear", "setpoints")


# ---------------------------------------------------------------------- mismatch


def test_parse_mismatch_reads_factors_and_names_bad_entries():
    assert parse_mismatch("cycle=1.15, scrap=1.2,mtbf=0.9") == Mismatch(1.15, 1.2, 0.9)
    assert parse_mismatch("") == Mismatch()
    for text, words in [
        ("cycle", "is not NAME=FACTOR"),
        ("speed=2", "'speed=2' is not NAME=FACTOR with NAME one of cycle, scrap"),
        ("cycle=0", "cycle must be a positive number, got '0'"),
        ("mttr=nan", "positive number, got 'nan'"),
        ("scrap=1.1,scrap=1.2", "scrap is given twice"),
    ]:
        with pytest.raises(UsageError, match="--mismatch: ") as info:
            parse_mismatch(text)
        assert words in str(info.value)


def test_perturb_changes_the_hidden_parameters_only():
    spec = bundled_spec("example")
    out = perturb(spec, Mismatch(cycle=1.15, scrap=1.2, mtbf=0.9, mttr=1.1, energy=0.8))
    for a, b in zip(spec.stations, out.stations, strict=True):
        assert b.name == a.name and b.setpoints == a.setpoints
        assert b.cycle_time_s == pytest.approx(1.15 * a.cycle_time_s)
        assert b.scrap.base == pytest.approx(min(1.0, 1.2 * a.scrap.base))
        assert b.energy.run_kw == pytest.approx(0.8 * a.energy.run_kw)
        if a.mtbf_s is not None:
            assert b.mtbf_s == pytest.approx(0.9 * a.mtbf_s)
            assert b.mttr_s == pytest.approx(1.1 * a.mttr_s)
    assert perturb(spec, Mismatch()) == spec


# ---------------------------------------------------------------------- rows


def test_rows_validate_and_restore_to_the_emulated_lines_state():
    spec = bundled_spec("example")
    twin = Twin(perturb(spec, Mismatch(cycle=1.2, scrap=1.5)), 1, seed=6)
    snaps = [twin.step(2.0) for _ in range(400)]
    rows = [r for s in snaps for r in rows_from_snapshot(s, spec)]
    assert list(rows[0])[:5] == ["time_s", "released", "good_out", "scrap_total", "feed.status"]
    json.dumps(rows, allow_nan=False)  # plain JSON: no NaN
    plant = ExternalPlant(spec, seed=0)
    sub = plant.subscribe(maxsize=500)
    assert plant.ingest(json.loads(json.dumps(rows)), "emulator").accepted == 400
    for want, got in zip(snaps, sub.drain(), strict=True):
        assert got.time_s == want.time_s
        for name in MEASURED:
            np.testing.assert_array_equal(getattr(got, name), getattr(want, name), err_msg=name)
        np.testing.assert_array_equal(got.readings.valid, want.readings.valid)
        np.testing.assert_array_equal(
            got.readings.power_kw, want.readings.power_kw, err_msg="power"
        )
    many = Twin(spec, 3, seed=1).step(5.0)
    assert [r["time_s"] for r in rows_from_snapshot(many, spec)] == [5.0] * 3


# ---------------------------------------------------------------------- the gateway


@dataclass
class Service:
    """What the small service saw and does: the plant it feeds, answers to fail with."""

    plant: ExternalPlant
    fail_next: list[int] = field(default_factory=list)
    acks: list[dict] = field(default_factory=list)
    version: int = 0
    poll_status: int | None = None  # answer every poll with this error status


def make_app(service: Service) -> FastAPI:
    app = FastAPI()

    def authorised(request: Request) -> bool:
        return request.headers.get("authorization") == f"Bearer {KEY}"

    @app.post("/v1/plant/snapshots")
    async def snapshots(request: Request) -> Response:
        if not authorised(request):
            return JSONResponse({"detail": "bad key"}, status_code=401)
        if service.fail_next:
            return JSONResponse({"detail": "busy"}, status_code=service.fail_next.pop())
        body = await request.json()
        try:
            result = service.plant.ingest(body["rows"], "emulator")
        except PlantDataError as exc:
            detail = {"detail": str(exc), "row": exc.row, "column": exc.column}
            return JSONResponse(detail, status_code=422)
        return JSONResponse(
            {"accepted": result.accepted, "duplicates": result.duplicates},
        )

    @app.get("/v1/setpoints")
    async def setpoints(request: Request) -> Response:
        if service.poll_status is not None:
            return JSONResponse({"detail": "not for you"}, status_code=service.poll_status)
        published = service.plant.published
        if published is None:
            await asyncio.sleep(0.05)
            return JSONResponse({"detail": "no decision yet"}, status_code=503)
        etag = f'"{service.version}"'
        if request.headers.get("if-none-match") == etag:
            await asyncio.sleep(0.05)
            return Response(status_code=304, headers={"ETag": etag})
        decision = Decision(
            id="d", version=service.version, line_time_s=0.0, created_at=0.0,
            mode=Mode.CLOSED, setpoints=np.array(published, dtype=float), target=None,
            predicted={}, status="ok", gap=None, solve_seconds=0.0, reasons=(),
            fallback=False, applied=True,
        )  # fmt: skip
        body = encode(decision, service.plant.spec)  # the service's own codec
        return JSONResponse(body, headers={"ETag": etag})

    @app.post("/v1/setpoints/ack")
    async def ack(request: Request) -> Response:
        service.acks.append(await request.json())
        return JSONResponse({})

    return app


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def service() -> Iterator[tuple[Service, str]]:
    """The small service on a free loopback port, in a thread."""
    svc = Service(ExternalPlant(bundled_spec("example"), seed=0))
    port = free_port()
    config = uvicorn.Config(
        make_app(svc), host="127.0.0.1", port=port, log_level="warning", lifespan="off"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20.0
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started
    yield svc, f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10.0)


def tick(emu: Emulator, n: int) -> None:
    for _ in range(n):
        emu.realtime.tick()


def test_rows_are_posted_in_batches_and_failed_posts_are_sent_again(service):
    svc, url = service
    emu = Emulator(bundled_spec("example"), url, KEY, poll=False, batch_rows=7, seed=2)
    try:
        tick(emu, 30)
        assert emu.pump() == 28 and emu.pending == 2  # whole batches only
        assert emu.pump(force=True) == 2 and emu.pending == 0
        assert svc.plant.rows == 30 and emu.stats.batches_posted == 5
        svc.fail_next.append(503)
        tick(emu, 10)
        assert emu.pump() == 0 and emu.stats.post_errors == 1 and emu.pending == 10
        assert emu.pump(force=True) == 10 and svc.plant.rows == 40
        latest, want = svc.plant.latest, emu.realtime.latest
        assert latest is not None and want is not None and latest.time_s == want.time_s == 40.0
        for name in MEASURED:
            np.testing.assert_array_equal(getattr(latest, name), getattr(want, name))
        # A gateway resending after a timeout: the service counts duplicates, keeps nothing new.
        again = emu.post(rows_from_snapshot(want, emu.spec))
        assert again == {"accepted": 0, "duplicates": 1} and svc.plant.rows == 40
        # Rows the service refuses are fatal, not resent forever.
        bad = rows_from_snapshot(emu.realtime.tick(), emu.spec)
        bad[0]["feed.speed"] = 9.0
        emu._sub.drain()
        emu._pending = bad
        with pytest.raises(PostError) as info:
            emu.pump(force=True)
        assert info.value.status == 422 and "feed.speed" in str(info.value)
    finally:
        emu.close()


def test_a_wrong_key_is_fatal(service):
    _, url = service
    emu = Emulator(bundled_spec("example"), url, "wrong", poll=False, batch_rows=1)
    try:
        tick(emu, 1)
        with pytest.raises(PostError) as info:
            emu.pump()
        assert info.value.status == 401
    finally:
        emu.close()


def test_polled_setpoints_are_applied_to_the_emulated_line(service):
    svc, url = service
    spec = bundled_spec("example")
    emu = Emulator(spec, url, KEY, mismatch=Mismatch(cycle=1.1), speed=600.0, batch_rows=5)
    wanted = svc.plant.setpoints[0].copy()
    wanted[:, 0] = 1.1
    svc.plant.set_setpoints(wanted, "controller")
    svc.version = 1
    stop = threading.Event()
    try:
        stats = emu.run(stop, hours=60 / 3600)
    finally:
        emu.close()
    assert stats.setpoints_applied >= 1 and stats.versions[0] == 1
    assert svc.acks and svc.acks[0]["version"] == 1
    assert stats.rows_posted >= 60 and svc.plant.rows == stats.rows_posted
    np.testing.assert_allclose(emu.realtime.twin.setpoints[0, :, 0], 1.1)
    np.testing.assert_allclose(svc.plant.setpoints[0, :, 0], 1.1)  # reported back in force
    assert svc.plant.hand_reason() is None


def test_apply_sets_the_twins_setpoints():
    emu = Emulator(bundled_spec("example"), "http://127.0.0.1:9", KEY, poll=False)
    try:
        decision = PolledDecision(4, '"4"', {"press": {"speed": 1.2}}, {}, 0.0)
        emu.apply(decision)
        assert emu.realtime.twin.setpoints[0, 1, 0] == 1.2
        assert emu.stats.setpoints_applied == 1 and emu.stats.versions == [4]
    finally:
        emu.close()


def test_the_command_line_names_bad_options():
    runner = CliRunner()
    result = runner.invoke(
        cli, ["plant", "emulate", "http://127.0.0.1:9", "--key", KEY, "--mismatch", "cycle=-1"]
    )
    assert result.exit_code != 0
    assert "cycle must be a positive number, got '-1'" in str(result.exception or result.output)
    result = runner.invoke(cli, ["plant", "emulate", "--help"])
    assert result.exit_code == 0 and "--mismatch" in result.output


def test_a_fatal_answer_to_polling_stops_the_emulator(service):
    svc, url = service
    svc.poll_status = 403
    emu = Emulator(bundled_spec("example"), url, KEY, speed=60.0, batch_rows=1)
    try:
        with pytest.raises(ApiError, match="polling setpoints failed: GET /v1/setpoints: HTTP 403"):
            emu.run(threading.Event(), hours=1.0)
    finally:
        emu.close()
