"""`serve --plant external --opcua MAPPING.toml`: the runtime's OPC UA connector reads the
emulator's OPC UA server (Basic256Sha256, username and password; both in-process on loopback)
and writes closed-mode decisions back to the emulated twin; none in advisory mode."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from waiting import wait_until

from linetwin.api.emulator import Mismatch, perturb
from linetwin.api.opcua_certs import demo_certificates
from linetwin.api.opcua_mapping import load_mapping
from linetwin.api.opcua_server import PlantServer, serve_opcua
from linetwin.api.opcua_template import mapping_toml
from linetwin.api.runtime import Runtime
from linetwin.api.settings import Settings
from linetwin.models.checkpoint import load
from linetwin.optimizer.decision import Mode
from linetwin.twin import Twin
from linetwin.twin.realtime import RealtimeTwin
from linetwin.twin.spec import LineSpec

PASSWORD = "correct horse"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Setup:
    runtime: Runtime
    server: PlantServer
    rt: RealtimeTwin

    def run(self, seconds: int) -> None:
        """Tick the emulated line `seconds` plant s, each tick published on the server."""
        for _ in range(seconds):
            snap = self.rt.tick()
            assert self.server.wait_published(snap.time_s)


@pytest.fixture
def setup(
    two: LineSpec, model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Setup]:
    monkeypatch.setenv("LINETWIN_OPCUA_PASSWORD", PASSWORD)
    endpoint = f"opc.tcp://127.0.0.1:{free_port()}/linetwin/"
    certs = demo_certificates(tmp_path / "certs")
    text = mapping_toml(two, endpoint=endpoint, read_mode="polling", interval_s=0.05)
    assert 'policy = "Basic256Sha256"' in text
    path = tmp_path / "mapping.toml"
    text = text.replace("initial_s = 0.5\nmax_s = 30.0", "initial_s = 0.1\nmax_s = 0.5")
    assert "max_s = 0.5" in text
    path.write_text(text, encoding="utf-8")
    rt = RealtimeTwin(Twin(perturb(two, Mismatch(cycle=1.15, scrap=1.2)), 1, seed=4), 1.0)
    server = serve_opcua(
        two,
        load_mapping(path, two),
        rt,
        server_certificate=certs["server_certificate"],
        server_private_key=certs["server_private_key"],
        users={"linetwin": PASSWORD},
    )
    settings = Settings.load(
        {},
        data_dir=tmp_path / "data",
        model_dir=model_dir,
        plant="external",
        mode="closed",
        opcua=path,
        stale_after_s=600.0,
    )
    runtime = Runtime(settings, two, load(model_dir, two))
    try:
        runtime.start(wait_s=20.0)
        yield Setup(runtime, server, rt)
    finally:
        runtime.stop()
        server.stop()


def test_closed_mode_writes_reach_the_twin_and_advisory_writes_nothing(
    setup: Setup, two: LineSpec
) -> None:
    runtime, server = setup.runtime, setup.server
    assert runtime.connector is not None and runtime.connector.stale_reason() is None
    for _ in range(6):
        setup.run(40)
        if server.writes_applied:
            break
    wait_until(lambda: server.writes_applied > 0, timeout=20.0)
    wait_until(lambda: runtime.plant.latest is not None)
    ready = runtime.readiness()
    assert ready["plant_data"] == (True, "fresh")
    # the emulated twin runs what the service published last (closed mode)
    current = runtime.current
    assert current is not None
    published = runtime.storage.to_decision(runtime.storage.decision(current.version))
    assert published.applied
    wait_until(lambda: np.allclose(setup.rt.twin.setpoints[0], published.setpoints), timeout=10.0)
    # advisory: decisions go on, writes stop
    runtime.set_mode(Mode.ADVISORY, actor="test", reason="advisory has no writes")
    writes, cycles = server.writes_applied, runtime.cycles_run
    setup.run(200)
    # cycles go on (a cycle publishes only what changes, so count cycles, not versions)
    assert runtime.wait_cycles(cycles + 2, timeout=20.0) >= cycles + 2
    assert server.writes_applied == writes
    np.testing.assert_allclose(setup.rt.twin.setpoints[0], published.setpoints)


def test_a_lost_connection_makes_readyz_say_why(setup: Setup) -> None:
    runtime = setup.runtime
    setup.run(5)
    wait_until(lambda: runtime.plant.latest is not None)
    setup.server.stop()
    wait_until(lambda: not runtime.readiness()["plant_data"][0], timeout=20.0)
    detail = runtime.readiness()["plant_data"][1]
    assert "OPC UA connector" in detail


def test_plant_emulate_serves_opcua(
    cli: Any, two: LineSpec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LINETWIN_OPCUA_PASSWORD", PASSWORD)
    endpoint = f"opc.tcp://127.0.0.1:{free_port()}/linetwin/"
    path = tmp_path / "mapping.toml"
    path.write_text(mapping_toml(two, endpoint=endpoint), encoding="utf-8")
    args = ["plant", "emulate", "--opcua", path, "--line", "two-station"]
    result = cli(*args, "--hours", "0.05", "--speed", "600", "--mismatch", "cycle=1.1")
    assert result.code == 0, result.err
    out = json.loads(result.out)
    assert out["endpoint"] == endpoint and out["time_s"] >= 180.0
    assert out["mismatch"]["cycle"] == 1.1
    assert (tmp_path / "certs" / "server-cert.der").is_file()  # made next to the mapping
    missing = cli("plant", "emulate", "--line", "two-station")
    assert missing.code == 2 and "--key" in missing.err


def test_serve_opcua_needs_an_external_plant(cli: Any, tmp_path: Path) -> None:
    result = cli("serve", "--opcua", tmp_path / "m.toml", "--data-dir", tmp_path)
    assert result.code == 2 and "--plant external" in result.err
    bad = cli("serve", "--plant", "outside", "--data-dir", tmp_path)
    assert bad.code == 2 and "twin" in bad.err
