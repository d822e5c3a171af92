"""End to end: `linetwin serve` on the bundled example line, followed by a `SetpointPoller`.

The example line ships a pretrained checkpoint, so `serve` trains nothing. In closed mode at 60x
(a decision every 60 line s: one a wall second), a controller key made with `linetwin keys
create` follows the setpoints; each new decision is applied by the callback and acknowledged,
and the acknowledgements show in `GET /v1/clients` and in the database after SIGTERM.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from linetwin.api.client import PolledDecision, SetpointPoller
from linetwin.api.keys import KEY_ID_LENGTH
from linetwin.api.storage import database_path

LINETWIN = [sys.executable, "-c", "from linetwin.cli.main import main; main()"]
DEADLINE_S = 50.0  # the whole test, start to SIGTERM, stays under a minute


def loopback_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def clean_env() -> dict[str, str]:
    """This environment without `LINETWIN_*` settings (flags decide), unbuffered output."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LINETWIN_")}
    return {**env, "PYTHONUNBUFFERED": "1"}


def test_serve_example_line_poller_applies_and_acknowledges(tmp_path: Path) -> None:
    start = time.monotonic()
    deadline = start + DEADLINE_S
    data_dir = tmp_path / "data"
    env = clean_env()
    made = subprocess.run(
        [*LINETWIN, "keys", "create", "--role", "controller", "--json", "--data-dir", data_dir],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert made.returncode == 0, made.stderr
    created = json.loads(made.stdout)
    assert created["role"] == "controller"
    key = created["key"]
    client_id = key[:KEY_ID_LENGTH]

    port = loopback_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [
        *LINETWIN, "serve", "--data-dir", data_dir, "--host", "127.0.0.1",
        "--port", str(port), "--mode", "closed", "--speed", "60",
    ]  # fmt: skip
    proc = subprocess.Popen(
        [str(c) for c in cmd],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    applied: list[PolledDecision] = []
    stop = threading.Event()
    failure: list[BaseException] = []

    def apply(decision: PolledDecision) -> None:
        applied.append(decision)  # a plant would write decision.setpoints here

    poller = SetpointPoller(
        url, key, apply=apply, wait_s=5.0, backoff_initial_s=0.1, backoff_max_s=0.5
    )

    def follow() -> None:
        try:
            poller.run(stop)
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=follow, name="e2e-poller", daemon=True)
    try:
        thread.start()
        # the first decision the poller applies, then at least two newer versions, and the
        # setpoints themselves move (the controller ramps from nominal toward its target)
        while (
            len(applied) < 3 or len({json.dumps(d.setpoints, sort_keys=True) for d in applied}) < 2
        ):
            if time.monotonic() > deadline or proc.poll() is not None or failure:
                pytest.fail(
                    f"{len(applied)} decisions applied; exit {proc.poll()}; poller {failure}; "
                    f"stats {poller.stats}"
                )
            time.sleep(0.05)
        versions = [d.version for d in applied]
        assert versions == sorted(set(versions)), versions
        assert all(d.applied and d.payload["mode"] == "closed" for d in applied)
        assert all(d.setpoints for d in applied)

        # the last applied version is acknowledged, visible to the API
        headers = {"Authorization": f"Bearer {key}"}
        with httpx.Client(base_url=url, headers=headers, timeout=10) as http:
            ready = http.get("/readyz")
            assert ready.status_code == 200, ready.text
            while True:
                clients = http.get("/v1/clients").json()["clients"]
                mine = [c for c in clients if c["client"] == client_id]
                if mine and mine[0]["last_version"] >= versions[-1]:
                    break
                if time.monotonic() > deadline:
                    pytest.fail(f"acknowledgement of v{versions[-1]} not visible: {clients}")
                time.sleep(0.05)
            assert not mine[0]["silent"]
        stop.set()
        thread.join(15)
        assert not thread.is_alive(), "poller did not stop"
        assert not failure, failure
        assert poller.stats.acks >= len(applied)
        assert poller.stats.ack_rejected == 0

        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=max(5.0, deadline + 8 - time.monotonic()))
        # uvicorn re-raises the signal after its graceful shutdown and ours
        assert proc.returncode in (0, -signal.SIGTERM), err
        assert "linetwin serve: stopped" in err
    finally:
        stop.set()
        poller.close()
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert time.monotonic() - start < 60.0

    # every applied version was acknowledged once, durably, by this client
    con = sqlite3.connect(f"file:{database_path(data_dir)}?mode=ro", uri=True)
    try:
        rows = con.execute(
            "SELECT version FROM acknowledgements WHERE client = ? ORDER BY id", (client_id,)
        ).fetchall()
    finally:
        con.close()
    acked = [v for (v,) in rows]
    assert set(versions) <= set(acked), (versions, acked)
    assert len(acked) == len(set(acked)), acked
