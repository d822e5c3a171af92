"""`linetwin serve` end to end: a subprocess on a free loopback port, polled over HTTP."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_serve_publishes_and_stops_on_sigterm(tmp_path: Path, model_dir: Path) -> None:
    port = free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "LINETWIN_PERIOD_S": "60"}
    cmd = [
        sys.executable, "-c", "from linetwin.cli.main import main; main()", "serve",
        "--line", "two-station", "--model", str(model_dir), "--data-dir", str(tmp_path / "data"),
        "--port", str(port), "--speed", "600", "--mode", "closed",
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert first.startswith("admin key"), first
        key = first.split()[-1]
        headers = {"Authorization": f"Bearer {key}"}
        deadline = time.monotonic() + 60
        version = 0
        while version <= 1:
            if time.monotonic() > deadline or proc.poll() is not None:
                pytest.fail(f"no version > 1 in time; exit {proc.poll()}")
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/v1/setpoints", headers=headers)
                if r.status_code == 200:
                    version = r.json()["version"]
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        ready = httpx.get(f"http://127.0.0.1:{port}/readyz")
        assert ready.status_code == 200, ready.text
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=30)
        # uvicorn re-raises the signal after its graceful shutdown and ours
        assert proc.returncode in (0, -signal.SIGTERM), err
        assert "linetwin serve: stopped" in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    from linetwin.api.audit import AuditLog
    from linetwin.api.storage import Storage, database_path

    with Storage(database_path(tmp_path / "data"), create=False) as storage:
        assert AuditLog(storage).verify().ok
        assert storage.latest_record() is not None
