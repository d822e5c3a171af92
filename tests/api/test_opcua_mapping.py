"""The OPC UA mapping format, row assembly and reconnect backoff (no server needed)."""

from __future__ import annotations

import copy
import tomllib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from linetwin.api.opcua import backoff_delay
from linetwin.api.opcua_mapping import OpcUaMappingError, load_mapping, parse_mapping
from linetwin.api.opcua_rows import IncompleteRowError, Sample, build_row
from linetwin.api.opcua_template import mapping_toml
from linetwin.twin import bundled_spec
from linetwin.twin.spec import LineSpec

DOCS = Path(__file__).resolve().parents[2] / "docs"


@pytest.fixture(scope="module")
def spec() -> LineSpec:
    return bundled_spec("example")


@pytest.fixture
def data(spec: LineSpec) -> dict[str, Any]:
    return tomllib.loads(mapping_toml(spec))


def bad(data: dict[str, Any], spec: LineSpec) -> str:
    with pytest.raises(OpcUaMappingError) as info:
        parse_mapping(data, spec, source="m.toml", base_dir=Path("/certs-home"))
    return str(info.value)


def test_the_example_file_is_the_template_and_loads(spec: LineSpec) -> None:
    path = DOCS / "opcua-example.toml"
    assert path.read_text(encoding="utf-8") == mapping_toml(spec)
    m = load_mapping(path, spec)
    assert m.line == spec.name and m.read_mode == "subscription" and m.interval_s == 1.0
    assert m.security.policy == "Basic256Sha256" and m.security.mode == "SignAndEncrypt"
    assert m.security.certificate == DOCS / "certs" / "client-cert.der"
    assert m.time_origin == datetime(2026, 1, 1, tzinfo=UTC)
    assert m.columns["press.completed"] == "ns=2;s=press.completed"
    assert "pack.buffer_level" not in m.columns and "cure.temperature_c" in m.columns
    cure = m.setpoints["cure"]
    assert (cure["temperature"].min, cure["temperature"].max) == (150.0, 230.0)
    assert cure["temperature"].node_id == "ns=2;s=cure.temperature_sp"
    assert set(m.setpoints) == {s.name for s in spec.stations}


def test_password_comes_from_the_environment(spec: LineSpec, data: dict[str, Any]) -> None:
    m = parse_mapping(data, spec)
    assert m.security.password({"LINETWIN_OPCUA_PASSWORD": "s3cret"}) == "s3cret"
    with pytest.raises(OpcUaMappingError, match=r"LINETWIN_OPCUA_PASSWORD.*not set"):
        m.security.password({})
    data["security"]["password"] = "s3cret"
    msg = bad(data, spec)
    assert "security.password" in msg and "s3cret" not in msg


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda d: d.update(line="other"), "key 'line' = 'other'"),
        (lambda d: d["server"].update(endpoint="http://x"), "key 'server.endpoint'"),
        (lambda d: d["server"].update(port=4840), "key 'server.port': unknown key"),
        (lambda d: d["read"].update(mode="push"), "key 'read.mode' = 'push'"),
        (lambda d: d["read"].update(interval_s=0), "key 'read.interval_s' = 0"),
        (lambda d: d["read"].update(time_origin="2026-01-01T00:00"), "read.time_origin"),
        (lambda d: d["reconnect"].update(max_s=0.1), "key 'reconnect.max_s' = 0.1"),
        (lambda d: d["security"].update(policy="Basic128Rsa15"), "key 'security.policy'"),
        (lambda d: d["security"].update(mode="None"), "key 'security.mode' = 'None'"),
        (lambda d: d["security"].pop("certificate"), "'security.certificate': required"),
        (lambda d: d["security"].pop("username"), "come together"),
        (lambda d: d["stations"].update(oven={}), "key 'stations.oven': unknown key"),
        (lambda d: d["stations"].pop("press"), "key 'stations.press': missing"),
        (
            lambda d: d["stations"]["press"].pop("completed"),
            "key 'stations.press.completed': required column is missing",
        ),
        (
            lambda d: d["stations"]["press"].update(temperature_setpoint_c="ns=2;s=x"),
            "key 'stations.press.temperature_setpoint_c' = 'ns=2;s=x': station 'press' has no "
            "temperature setpoint",
        ),
        (
            lambda d: d["stations"]["pack"].update(buffer_level="ns=2;s=x"),
            "'stations.pack.buffer_level' = 'ns=2;s=x': station 'pack' has no buffer",
        ),
        (lambda d: d["stations"]["press"].update(colour="ns=2;s=x"), "unknown field 'colour'"),
        (
            lambda d: d["stations"]["press"].update(status="press status"),
            "key 'stations.press.status' = 'press status': expected an OPC UA node id",
        ),
        (
            lambda d: d["stations"]["press"]["write"]["speed"].update(min=0.7),
            "key 'stations.press.write.speed.min' = 0.7: above the line spec's minimum 0.6",
        ),
        (
            lambda d: d["stations"]["press"]["write"]["speed"].update(max=1.3),
            "key 'stations.press.write.speed.max' = 1.3: below the line spec's maximum 1.4",
        ),
        (
            lambda d: d["stations"]["press"]["write"].update(temperature="ns=2;s=t"),
            "station 'press' has no temperature setpoint in the line spec",
        ),
        (
            lambda d: d["stations"]["press"]["write"].update(pressure="ns=2;s=t"),
            "key 'stations.press.write.pressure' = 'pressure': unknown setpoint",
        ),
        (lambda d: d["line_counters"].update(wip="ns=2;s=w"), "'line_counters.wip': unknown key"),
    ],
)
def test_errors_name_file_key_and_value(
    spec: LineSpec, data: dict[str, Any], edit: Any, expected: str
) -> None:
    edit(data)
    msg = bad(data, spec)
    assert msg.startswith("m.toml: ") and expected in msg


def test_policy_none_takes_no_certificates(spec: LineSpec, data: dict[str, Any]) -> None:
    plain = copy.deepcopy(data)
    plain["security"] = {"policy": "None"}
    m = parse_mapping(plain, spec)
    assert m.security.policy == "None" and m.security.certificate is None
    plain["security"]["certificate"] = "c.der"
    assert "'security.certificate' = 'c.der': not used with policy 'None'" in bad(plain, spec)


def test_paths_are_relative_to_the_file(spec: LineSpec, tmp_path: Path) -> None:
    path = tmp_path / "plant" / "line.toml"
    path.parent.mkdir()
    path.write_text(mapping_toml(spec, certs="/etc/opcua"), encoding="utf-8")
    m = load_mapping(path, spec)
    assert m.security.certificate == Path("/etc/opcua/client-cert.der")
    path.write_text(mapping_toml(spec), encoding="utf-8")
    assert load_mapping(path, spec).security.private_key == path.parent / "certs/client-key.pem"
    path.write_text("line = [", encoding="utf-8")
    with pytest.raises(OpcUaMappingError, match=r"line\.toml: not a valid TOML file"):
        load_mapping(path, spec)


ORIGIN = datetime(2026, 1, 1, tzinfo=UTC)


def test_rows_take_the_newest_source_timestamp() -> None:
    columns = {"a.status": "n1", "a.completed": "n2", "a.power_kw": "n3", "a.speed": "n4"}
    t = ORIGIN + timedelta(seconds=10)
    samples = {
        "n1": Sample(2, True, t),
        "n2": Sample(7, True, t + timedelta(seconds=2.5)),
        "n3": Sample(None, False, t),  # a dropped-out reading: an empty cell
        "n4": Sample(1, True, None, server_time=t),
    }
    now = ORIGIN + timedelta(hours=1)
    row = build_row(columns, samples, time_source="source", time_origin=ORIGIN, now=now)
    assert row == {
        "time_s": 12.5,
        "a.status": "blocked",
        "a.completed": 7,
        "a.power_kw": None,
        "a.speed": 1.0,
    }
    row = build_row(columns, samples, time_source="client", time_origin=ORIGIN, now=now)
    assert row["time_s"] == 3600.0
    samples["n2"] = Sample(None, False, t)
    with pytest.raises(IncompleteRowError, match=r"a.completed \(node n2\): the server reports"):
        build_row(columns, samples, time_source="source", time_origin=ORIGIN, now=now)
    del samples["n2"]
    with pytest.raises(IncompleteRowError, match="no value received yet"):
        build_row(columns, samples, time_source="source", time_origin=ORIGIN, now=now)


@given(
    attempt=st.integers(0, 200),
    initial=st.floats(0.01, 10.0),
    cap=st.floats(10.0, 300.0),
    seed=st.integers(0, 2**32 - 1),
)
def test_backoff_is_capped_jittered_and_reproducible(
    attempt: int, initial: float, cap: float, seed: int
) -> None:
    d = backoff_delay(attempt, initial, cap, np.random.default_rng(seed))
    base = min(cap, initial * 2.0**attempt)
    assert 0.5 * base <= d <= base <= cap
    assert d == backoff_delay(attempt, initial, cap, np.random.default_rng(seed))


def test_backoff_grows_until_the_cap() -> None:
    rng = np.random.default_rng(3)
    delays = [backoff_delay(k, 0.5, 8.0, rng) for k in range(8)]
    assert delays[0] < 0.5 and delays[3] >= 2.0 and max(delays) <= 8.0
    assert all(d >= 4.0 for d in delays[4:])


def test_the_docs_show_the_whole_example_file() -> None:
    doc = (DOCS / "opcua.md").read_text(encoding="utf-8")
    example = (DOCS / "opcua-example.toml").read_text(encoding="utf-8")
    assert f"```toml\n{example}```\n" in doc
