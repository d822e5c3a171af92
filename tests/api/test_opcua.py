"""OPC UA end to end on loopback: the emulator's server and the connector, both real.

One server (Basic256Sha256, SignAndEncrypt and Sign, user name and password, only the
connector's certificate trusted) serves a stepped real-time twin of the example line for the
whole module; the connectors connect to it with mappings made from the template.
"""

from __future__ import annotations

import asyncio
import math
import socket
import time
import tomllib
from collections.abc import Callable, Iterator, Mapping
from csv import DictWriter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from linetwin.api.opcua import OpcUaConnector
from linetwin.api.opcua_certs import demo_certificates, write_certificate
from linetwin.api.opcua_errors import (
    OpcUaAuthError,
    OpcUaCertificateError,
    OpcUaConnectionError,
)
from linetwin.api.opcua_mapping import OpcUaMapping, OpcUaMappingError, parse_mapping
from linetwin.api.opcua_nodes import column_values
from linetwin.api.opcua_server import PlantServer, serve_opcua
from linetwin.api.opcua_template import mapping_toml
from linetwin.replay.importer import import_csv
from linetwin.twin import Twin, bundled_spec
from linetwin.twin.layout import STATUS_NAMES
from linetwin.twin.realtime import RealtimeTwin
from linetwin.twin.snapshot import Snapshot
from linetwin.twin.spec import LineSpec

PASSWORD = "correct horse"
ENV = {"LINETWIN_OPCUA_PASSWORD": PASSWORD}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(0.02)


class Plant:
    """The module's server, its stepped twin and what a mapping needs."""

    def __init__(self, spec: LineSpec, folder: Path, endpoint: str) -> None:
        self.spec = spec
        self.folder = folder
        self.endpoint = endpoint
        self.certs = demo_certificates(folder / "certs")
        self.rt = RealtimeTwin(Twin(spec, 1, seed=11), tick_s=1.0)
        self.server: PlantServer | None = None

    def mapping(self, **changes: Any) -> OpcUaMapping:
        """A mapping of this plant; `changes` are `section.key = value` (None removes)."""
        data = tomllib.loads(
            mapping_toml(self.spec, endpoint=self.endpoint, read_mode="subscription")
        )
        data["read"]["interval_s"] = 0.05
        data["reconnect"] = {"initial_s": 0.1, "max_s": 0.5}
        for key, value in changes.items():
            section, name = key.split(".")
            data[section][name] = value
        return parse_mapping(data, self.spec, source="test.toml", base_dir=self.folder)

    def start(self) -> PlantServer:
        self.server = serve_opcua(
            self.spec,
            self.mapping(),
            self.rt,
            server_certificate=self.certs["server_certificate"],
            server_private_key=self.certs["server_private_key"],
            users={"linetwin": PASSWORD},
        )
        return self.server

    def tick(self, n: int = 1) -> Snapshot:
        for _ in range(n):
            snap = self.rt.tick()
        assert self.server is not None and self.server.wait_published(snap.time_s)
        return snap


@pytest.fixture(scope="module")
def plant(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Plant]:
    folder = tmp_path_factory.mktemp("opcua")
    p = Plant(bundled_spec("example"), folder, f"opc.tcp://127.0.0.1:{free_port()}/linetwin/")
    p.start()
    yield p
    if p.server is not None:
        p.server.stop()


@pytest.fixture
def connect(plant: Plant) -> Iterator[Callable[..., tuple[OpcUaConnector, list[Any]]]]:
    """Start connectors on the plant (stopped at the end); return each and its rows."""
    started: list[OpcUaConnector] = []

    def make(mapping: OpcUaMapping | None = None, env: Mapping[str, str] = ENV) -> Any:
        rows: list[dict[str, Any]] = []
        c = OpcUaConnector(
            plant.spec,
            mapping or plant.mapping(),
            rows.extend,
            rng=np.random.default_rng(1),
            environ=env,
        )
        started.append(c)
        c.start(wait_s=15.0)
        return c, rows

    yield make
    for c in started:
        c.stop()


def expect_row(row: dict[str, Any], spec: LineSpec, snap: Snapshot) -> None:
    """The row holds the snapshot's values, column by column."""
    truth = column_values(spec, snap)
    assert row["time_s"] == pytest.approx(snap.time_s, abs=1e-5)
    for column, value in row.items():
        if column == "time_s":
            continue
        want, good = truth[column]
        if column.endswith(".status"):
            assert value == STATUS_NAMES[int(want)], column
        elif not good:
            assert value is None, column
        elif isinstance(want, float) and math.isnan(want):
            assert math.isnan(value), column
        else:
            assert value == want and type(value) is type(want), column


@pytest.mark.parametrize("mode", ["subscription", "polling"])
def test_rows_match_the_twin(plant: Plant, connect: Any, mode: str, tmp_path: Path) -> None:
    connector, rows = connect(plant.mapping(**{"read.mode": mode}))
    assert connector.status.state == "connected" and connector.stale_reason() is None
    for _ in range(3):
        snap = plant.tick(7)
        wait_for(lambda s=snap: bool(rows) and rows[-1]["time_s"] >= s.time_s - 1e-6)
        expect_row(rows[-1], plant.spec, snap)
    times = [r["time_s"] for r in rows]
    assert times == sorted(set(times))
    assert set(rows[-1]) == {"time_s", *plant.mapping().columns}
    wait_for(lambda: connector.status.rows_delivered == len(rows))
    # The rows are in the plant-log layout: the CSV importer takes them as they are.
    csv = tmp_path / "rows.csv"
    with csv.open("w", newline="") as f:
        writer = DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows({k: "" if v is None else v for k, v in r.items()} for r in rows)
    summary = import_csv(csv, plant.spec, tmp_path / "rows.parquet")
    assert summary.n_rows == len(rows) and summary.last_time_s == rows[-1]["time_s"]


def test_closed_mode_writes_reach_the_twin(plant: Plant, connect: Any) -> None:
    connector, rows = connect()
    server = plant.server
    assert server is not None
    before = server.writes_applied
    out = connector.write_setpoints(
        {"press": {"speed": 1.15}, "cure": {"temperature": 196.0}}, "closed"
    )
    assert out.ok and out.written == {"press": {"speed": 1.15}, "cure": {"temperature": 196.0}}
    sp = plant.rt.twin.setpoints[0]
    assert sp[1, 0] == 1.15 and sp[6, 1] == 196.0
    assert server.writes_applied == before + 1 and connector.status.writes_done == 1
    snap = plant.tick()
    wait_for(lambda: bool(rows) and rows[-1]["time_s"] >= snap.time_s - 1e-6)
    assert rows[-1]["press.speed"] == 1.15 and rows[-1]["cure.temperature_setpoint_c"] == 196.0


@pytest.mark.parametrize("mode", ["advisory", "manual"])
def test_no_write_in_advisory_or_manual_mode(plant: Plant, connect: Any, mode: str) -> None:
    connector, _ = connect()
    assert plant.server is not None
    before, sp = plant.server.writes_applied, plant.rt.twin.setpoints.copy()
    out = connector.write_setpoints({"press": {"speed": 0.9}}, mode)
    assert not out.ok and out.written == {} and f"mode '{mode}'" in str(out.refused)
    assert connector.status.writes_refused == 1 and connector.status.writes_done == 0
    assert plant.server.writes_applied == before
    np.testing.assert_array_equal(plant.rt.twin.setpoints, sp)


class Flipping(Mapping[str, float]):
    """A caller's mapping whose value leaves the limits after it was first read."""

    def __init__(self) -> None:
        self.reads = 0

    def __getitem__(self, key: str) -> float:
        return dict(self.items())[key]

    def __iter__(self) -> Iterator[str]:
        return iter(["speed"])

    def __len__(self) -> int:
        return 1

    def items(self) -> Any:
        self.reads += 1
        return [("speed", 1.2 if self.reads == 1 else 1.9)]


def test_no_write_outside_limits(plant: Plant, connect: Any) -> None:
    connector, _ = connect()
    server = plant.server
    assert server is not None
    applied, refused = server.writes_applied, server.writes_refused
    sp = plant.rt.twin.setpoints.copy()
    for bad in (
        {"press": {"speed": 1.6}},
        {"press": {"speed": 0.59}},
        {"cure": {"temperature": math.nan}},
        {"press": {"speed": True}},
        {"press": {"temperature": 80.0}},
        {"oven": {"speed": 1.0}},
        {"press": {"speed": 1.0}, "coat": {"speed": 1.31}},  # one bad value stops them all
        {"press": Flipping()},  # checked again right before the write
    ):
        out = connector.write_setpoints(bad, "closed")
        assert not out.ok and out.written == {}, bad
    assert "press.speed = 1.6 is outside the line spec's limits [0.6, 1.4]" in str(
        connector.write_setpoints({"press": {"speed": 1.6}}, "closed").refused
    )
    assert connector.status.writes_refused == 9 and connector.status.writes_done == 0
    # Nothing reached the wire: the server saw no write at all.
    assert (server.writes_applied, server.writes_refused) == (applied, refused)
    np.testing.assert_array_equal(plant.rt.twin.setpoints, sp)
    # The server refuses too: a plain client that skips the checks gets BadOutOfRange.
    from asyncua import Client, ua
    from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256

    async def raw_write() -> str:
        client = Client(plant.endpoint)
        client.application_uri = "urn:linetwin:opcua-client"
        await client.set_security(
            SecurityPolicyBasic256Sha256,
            certificate=str(plant.certs["certificate"]),
            private_key=str(plant.certs["private_key"]),
            server_certificate=str(plant.certs["server_certificate"]),
            mode=ua.MessageSecurityMode.Sign,
        )
        client.set_user("linetwin")
        client.set_password(PASSWORD)
        async with client:
            node = client.get_node("ns=2;s=press.speed_sp")
            try:
                await node.write_value(ua.DataValue(ua.Variant(1.6, ua.VariantType.Double)))
            except ua.UaStatusCodeError as exc:
                return type(exc).__name__
            return "accepted"

    assert asyncio.run(raw_write()) == "BadOutOfRange"
    assert server.writes_refused == refused + 1 and server.writes_applied == applied
    np.testing.assert_array_equal(plant.rt.twin.setpoints, sp)


def test_a_dropped_connection_reconnects_and_is_stale_meanwhile(plant: Plant, connect: Any) -> None:
    connector, rows = connect()
    assert plant.server is not None
    plant.server.stop()
    wait_for(lambda: connector.status.state == "reconnecting")
    status = connector.status
    assert status.last_error and status.error_kind == "connection"
    assert "reconnecting" in str(connector.stale_reason())
    wait_for(lambda: connector.status.failed_attempts >= 3)  # retried, backing off
    out = connector.write_setpoints({"press": {"speed": 1.0}}, "closed")
    assert not out.ok and "not connected" in str(out.refused)
    assert connector.status.writes_failed == 1
    plant.start()  # the same port again
    wait_for(lambda: connector.status.state == "connected", timeout=20.0)
    assert connector.stale_reason() is None and connector.status.failed_attempts == 0
    snap = plant.tick(3)
    wait_for(lambda: bool(rows) and rows[-1]["time_s"] >= snap.time_s - 1e-6)
    expect_row(rows[-1], plant.spec, snap)


def test_wrong_password_is_a_clear_error(plant: Plant, connect: Any) -> None:
    with pytest.raises(OpcUaAuthError, match=r"refused user 'linetwin'.*LINETWIN_OPCUA_PASSWORD"):
        connect(env={"LINETWIN_OPCUA_PASSWORD": "wrong"})


def test_an_untrusted_client_certificate_is_a_clear_error(plant: Plant, connect: Any) -> None:
    cert, key = write_certificate(
        plant.folder / "stranger", "client", application_uri="urn:linetwin:opcua-client"
    )
    mapping = plant.mapping(**{"security.certificate": str(cert), "security.private_key": str(key)})
    with pytest.raises(OpcUaCertificateError, match="does not trust our certificate"):
        connect(mapping)


def test_an_untrusted_server_certificate_is_a_clear_error(plant: Plant, connect: Any) -> None:
    rogue, _ = write_certificate(
        plant.folder / "rogue", "server", application_uri="urn:linetwin:opcua-plant", server=True
    )
    mapping = plant.mapping(**{"security.server_certificate": str(rogue)})
    with pytest.raises(OpcUaCertificateError, match="server"):
        connect(mapping)


def test_an_unreachable_server_is_a_clear_error(plant: Plant) -> None:
    endpoint = f"opc.tcp://127.0.0.1:{free_port()}/linetwin/"
    mapping = plant.mapping(**{"server.endpoint": endpoint})
    connector = OpcUaConnector(plant.spec, mapping, list, rng=np.random.default_rng(2), environ=ENV)
    with pytest.raises(OpcUaConnectionError, match=r"127\.0\.0\.1.*no connection within 1\.0 s"):
        connector.start(wait_s=1.0)
    assert connector.status.state == "stopped" and connector.status.failed_attempts >= 2
    assert "stopped" in str(connector.stale_reason())


def test_configuration_errors_stop_the_first_attempt(plant: Plant, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "client-cert.der"
    for mapping, env, expected in (
        (plant.mapping(**{"security.certificate": str(missing)}), ENV, "no such file"),
        (plant.mapping(), {}, "LINETWIN_OPCUA_PASSWORD' is not set"),
    ):
        connector = OpcUaConnector(
            plant.spec, mapping, list, rng=np.random.default_rng(3), environ=env
        )
        with pytest.raises(OpcUaMappingError, match=expected):
            connector.start(wait_s=5.0)
        assert connector.status.error_kind == "config"


def test_on_rows_may_write_setpoints(plant: Plant) -> None:
    """A service that decides on each snapshot writes from inside `on_rows`."""
    outcomes: list[Any] = []
    holder: list[OpcUaConnector] = []

    def on_rows(rows: list[dict[str, Any]]) -> None:
        speed = 0.8 if rows[-1]["coat.speed"] != 0.8 else 0.9
        outcomes.append(holder[0].write_setpoints({"coat": {"speed": speed}}, "closed"))

    connector = OpcUaConnector(
        plant.spec, plant.mapping(), on_rows, rng=np.random.default_rng(4), environ=ENV
    )
    holder.append(connector)
    connector.start(wait_s=15.0)
    try:
        plant.tick()
        wait_for(lambda: len(outcomes) >= 1)
    finally:
        connector.stop()
    assert outcomes[0].ok and plant.rt.twin.setpoints[0, 5, 0] in (0.8, 0.9)
