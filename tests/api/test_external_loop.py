"""The loop closed on an external plant: the service (`--plant external`, closed mode) on a
real loopback port, driven by the emulator (`api.emulator`: a mismatched twin posting rows
and applying polled setpoints); staleness when it stops; running by hand; and the closed
loop's gain on a mismatched plant (`bench/closed_loop.py`, shorter)."""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import uvicorn
from waiting import wait_until

from linetwin.api.app import create_app
from linetwin.api.emulator import Emulator, Mismatch
from linetwin.api.keys import Role
from linetwin.api.plant import ExternalPlant
from linetwin.api.runtime import Runtime
from linetwin.api.settings import Settings
from linetwin.models.checkpoint import load
from linetwin.replay.csv_export import rows_from_snapshot
from linetwin.twin import bundled_spec
from linetwin.twin.spec import LineSpec

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.closed_loop import compare  # noqa: E402  (bench/ is importable from ROOT)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Live:
    """A started runtime behind uvicorn on a free loopback port."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.keys = {r: runtime.keys.create(r, f"test {r}", actor="test").key for r in Role}
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            create_app(runtime),
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            lifespan="off",
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def auth(self, role: Role) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[role]}"}

    def get(self, path: str) -> httpx.Response:
        return httpx.get(self.url + path, headers=self.auth(Role.VIEWER), timeout=10.0)

    def decisions(self) -> list[dict[str, Any]]:
        with self.runtime.storage.read("test") as con:
            rows = con.execute("SELECT payload FROM decisions ORDER BY version").fetchall()
        return [json.loads(r[0]) for r in rows]


@pytest.fixture
def live(two: LineSpec, model_dir: Path, tmp_path: Path) -> Iterator[Live]:
    settings = Settings.load(
        {},
        data_dir=tmp_path,
        model_dir=model_dir,
        plant="external",
        mode="closed",
        stale_after_s=3.0,
        rate_per_s=0,
    )
    runtime = Runtime(settings, two, load(model_dir, two))
    svc = Live(runtime)
    runtime.start()
    svc.thread.start()
    wait_until(lambda: svc.server.started)
    try:
        yield svc
    finally:
        svc.server.should_exit = True
        svc.thread.join(10.0)
        runtime.stop()


def test_the_emulator_closes_the_loop_then_stops_then_runs_by_hand(
    live: Live, two: LineSpec
) -> None:
    emu = Emulator(
        two,
        live.url,
        live.keys[Role.GATEWAY],
        mismatch=Mismatch(cycle=1.15, scrap=1.2),
        seed=3,
        speed=300.0,
        batch_rows=20,
    )
    stop = threading.Event()
    try:
        stats = emu.run(stop, hours=0.5)  # 30 plant minutes, ~6 wall s
    finally:
        emu.close()
    # Decisions were published on plant time as the rows came, and the emulator applied them.
    decisions = live.decisions()
    seq0 = live.runtime.audit.page(0, 1000)[-1].seq  # (a loaded machine may pause the rows)
    times = [d["line_time_s"] for d in decisions]
    # 30 plant minutes at a 60 s period: about 30 cycles; a cycle publishes only what changes
    # (the steady hold), so there are fewer decisions than cycles, at least the first
    assert live.runtime.cycles_run >= 10
    assert 1 <= len(decisions) <= live.runtime.cycles_run and times == sorted(times)
    gaps = np.diff(times)
    assert (gaps >= 60.0 - 1e-6).all()  # at most one decision per period of plant time
    assert all(d["mode"] == "closed" and d["applied"] for d in decisions)
    assert stats.setpoints_applied >= 1 and stats.post_errors == 0
    guard = live.runtime.controller.guard
    for d in decisions:
        for i, st in enumerate(two.stations):
            for k, name in enumerate(("speed", "temperature")):
                if guard.present[i, k]:
                    v = d["setpoints"][st.name][name]
                    assert guard.lower[i, k] - 1e-9 <= v <= guard.upper[i, k] + 1e-9
    plant = live.runtime.plant
    assert isinstance(plant, ExternalPlant)
    assert plant.rows == stats.rows_posted >= 0.5 * 3600
    end = plant.latest
    assert end is not None and times[-1] <= end.time_s
    # The last applied decision runs on the emulated line.
    last = emu.stats.versions[-1]
    applied = next(d for d in decisions if d["version"] == last)
    emu_sp = emu.realtime.twin.setpoints[0]
    for i, st in enumerate(two.stations):
        assert emu_sp[i, 0] == pytest.approx(applied["setpoints"][st.name]["speed"])
    # GET /v1/state is the measured state.
    state = live.get("/v1/state").json()
    assert state["time_s"] == end.time_s
    assert live.get("/readyz").status_code == 200

    # The emulator stopped: after --stale-after, readyz says why and one fallback holds.
    wait_until(lambda: live.get("/readyz").status_code == 503, timeout=10.0)
    ready = live.get("/readyz").json()["checks"]["plant_data"]
    assert not ready["ok"] and "no new plant data" in ready["detail"]
    wait_until(lambda: live.decisions()[-1]["fallback"], timeout=10.0)
    time.sleep(1.0)  # many loop ticks: still one fallback
    everything = live.decisions()
    held = [
        k for k, d in enumerate(everything) if k >= len(decisions) and "stale_data" in d["reasons"]
    ]
    assert len(held) == 1 and held[0] == len(everything) - 1
    stale, before = everything[held[0]], everything[held[0] - 1]
    assert stale["fallback"] and stale["line_time_s"] == end.time_s
    if not before["fallback"]:
        assert stale["setpoints"] == before["setpoints"]  # last-known-good held
    audit = [r for r in live.runtime.audit.page(seq0, 1000) if r.action == "plant.data"]
    assert len(audit) == 1, [(a.new, a.reason) for a in audit]
    assert "no new plant data" in audit[0].reason

    # The line comes back, run by hand: other speeds than published; recorded and followed.
    twin = emu.realtime.twin
    hand = twin.setpoints.copy()
    hand[0, 0, 0] = guard.lower[0, 0]
    twin.set_setpoints(hand)
    rows = [rows_from_snapshot(twin.step(1.0), two)[0] for _ in range(300)]
    gw = live.auth(Role.GATEWAY)
    for k in range(0, 300, 50):
        r = httpx.post(
            live.url + "/v1/plant/snapshots", json={"rows": rows[k : k + 50]}, headers=gw
        )
        assert r.status_code == 200, r.text
    wait_until(
        lambda: any(r.action == "plant.hand" for r in live.runtime.audit.page(seq0, 1000)),
        timeout=10.0,
    )
    notes = [r for r in live.runtime.audit.page(seq0, 1000) if r.action == "plant.hand"]
    assert len(notes) == 1, [(n.new, n.reason) for n in notes]
    note = notes[0]
    assert "running by hand" in note.reason and f"{two.stations[0].name}.speed" in note.reason
    assert live.get("/readyz").status_code == 200
    after = live.decisions()[len(everything) :]
    assert after and all("stale_data" not in d["reasons"] for d in after)
    # bumpless: each decision moves at most one step from what the plant runs by hand
    step = guard.max_step[0, 0]
    first_speed = after[0]["setpoints"][two.stations[0].name]["speed"]
    assert abs(first_speed - guard.lower[0, 0]) <= step + 1e-9


def test_the_closed_loop_beats_nominal_on_a_mismatched_plant() -> None:
    """bench/closed_loop.py, shorter: 3 plant hours, 3 seeds (the bench runs 24 hours)."""
    from linetwin.models.checkpoint import load as load_model
    from linetwin.models.resolve import bundled_checkpoint

    spec = bundled_spec("example")
    shipped = bundled_checkpoint(spec)
    assert shipped is not None
    out = compare(spec, load_model(shipped, spec), Mismatch(cycle=1.15, scrap=1.2), [0, 1, 2], 3.0)
    assert out["limit_violations"] == 0 and out["rate_violations"] == 0
    assert out["profit_diff_per_hour"] > 0
    assert out["ci95"][0] > 0, out
    assert all(1 <= r["controlled"]["decisions"] <= 180 for r in out["runs"])
