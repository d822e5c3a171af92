"""Fixtures of the web page's end-to-end tests: a real `linetwin serve` and headless Chromium.

Chromium is Debian's `chromium` package driven by Playwright for Python (Playwright's own
browser download needs a CDN; this needs only the Debian mirror). `scripts/setup.sh dev` installs
it; the tests never install anything themselves.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from linetwin.api.keys import KeyStore
from linetwin.api.storage import Storage, database_path

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "tests" / "artifacts"
CHROMIUM_NAMES = ("chromium", "chromium-browser")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",  # without these, Chromium's own connections are
    "--disable-component-update",  # refused by a closed network and slow the page down
    "--disable-sync",
]
LINETWIN = [sys.executable, "-c", "from linetwin.cli.main import main; main()"]
SPEED = 120.0
"""Line seconds per wall second: the displayed line time moves by 12 s every 0.1 s."""
PERIOD_S = 600.0
"""Line seconds per controller cycle: a new advisory recommendation every 5 wall s, time
enough to read and approve it before the next one replaces it."""


def find_chromium() -> str | None:
    """The path of a Chromium executable, or None."""
    if os.access("/usr/bin/chromium", os.X_OK):
        return "/usr/bin/chromium"
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


@pytest.fixture(scope="session")
def chromium() -> str:
    """The Chromium executable Playwright drives (`scripts/setup.sh dev` installs Debian's).

    Without one the browser tests skip, saying why; under CI (`CI` set), where the set-up ran
    as root and must have installed it, they fail instead."""
    path = find_chromium()
    if path is None:
        why = (
            "no Chromium for the web page's browser tests: install Debian's `chromium` package "
            "(`apt-get install chromium`) or run `scripts/setup.sh dev` as root"
        )
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)
    return path


@pytest.fixture(scope="module")
def browser(chromium: str) -> Iterator[Any]:
    """A headless Chromium, driven by Playwright's sync API."""
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        launched = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


@dataclass(frozen=True)
class Served:
    """A running `linetwin serve`: its base URL and one key per role the tests use."""

    url: str
    keys: dict[str, str]
    data_dir: Path

    def get(self, path: str, role: str = "engineer") -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.keys[role]}"}
        return httpx.get(self.url + path, headers=headers, timeout=10)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """`linetwin serve` on the bundled example line (its shipped checkpoint: nothing to
    train) in advisory mode at 120x, with an engineer key and a viewer key."""
    tmp = tmp_path_factory.mktemp("web")
    data_dir = tmp / "data"
    data_dir.mkdir()
    with Storage(database_path(data_dir), create=True) as storage:
        store = KeyStore(storage)
        keys = {
            role: store.create(role, f"web test {role}", actor="test").key
            for role in ("engineer", "viewer")
        }
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("LINETWIN_")}
    env.update(PYTHONUNBUFFERED="1", LINETWIN_PERIOD_S=str(PERIOD_S))
    cmd = [
        *LINETWIN, "serve", "--data-dir", str(data_dir), "--host", "127.0.0.1",
        "--port", str(port), "--mode", "advisory", "--speed", str(SPEED),
    ]  # fmt: skip
    log_path = tmp / "serve.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"serve did not start (exit {proc.poll()}): {log_path.read_text()}")
            try:
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        yield Served(url, keys, data_dir)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """The folder for test artifacts (screenshots, timings): `tests/artifacts/`, ignored by
    git."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS
