"""A live setpoint service on a loopback port, in threads, that can be stopped and restarted."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import uvicorn

from linetwin.api.app import create_app
from linetwin.api.runtime import Runtime
from linetwin.api.settings import Settings
from linetwin.models.checkpoint import load
from linetwin.twin.spec import LineSpec


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LiveServer:
    """`Runtime` + uvicorn serving `create_app(runtime)` on 127.0.0.1:`port`, on `data_dir`."""

    def __init__(
        self,
        spec: LineSpec,
        model_dir: Path,
        data_dir: Path,
        port: int,
        speed: float,
        mode: str = "closed",
    ) -> None:
        self.spec, self.model_dir, self.data_dir = spec, model_dir, data_dir
        self.port, self.speed, self.mode = port, speed, mode
        self.runtime: Runtime | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Runtime:
        settings = Settings.load(
            {}, data_dir=self.data_dir, model_dir=self.model_dir, speed=self.speed, mode=self.mode
        )
        runtime = Runtime(settings, self.spec, load(self.model_dir, self.spec))
        config = uvicorn.Config(
            create_app(runtime),
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            lifespan="off",
            timeout_graceful_shutdown=1,
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, name="test-uvicorn", daemon=True)
        runtime.start()
        thread.start()
        deadline = time.monotonic() + 20
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                runtime.stop()
                raise AssertionError("uvicorn did not start")
            time.sleep(0.01)
        self.runtime, self._server, self._thread = runtime, server, thread
        return runtime

    def stop(self) -> None:
        """Stop uvicorn first (in-flight requests end), then the runtime (it closes the
        storage: closing SQLite connections under a running request can crash the process)."""
        try:
            if self._server is not None and self._thread is not None:
                self._server.should_exit = True
                self._thread.join(20)
                assert not self._thread.is_alive(), "uvicorn did not stop"
        finally:
            if self.runtime is not None:
                self.runtime.stop()
            self._server = self._thread = None
