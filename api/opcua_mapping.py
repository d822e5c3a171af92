"""Read an OPC UA mapping file: where a line's plant-log columns live on an OPC UA server.

A mapping (TOML, documented in `docs/opcua.md`) names the server endpoint, its security, how to
read (subscription or polling, at an interval), and per station the node id of each plant-log
column (`press.status`, `press.completed`, ...) and of each writable setpoint. It is checked
against the line spec when loaded: the columns by the same header rules as the CSV importer
(`replay.csv_layout.parse_header`), the writable setpoints against the spec's limits.

    mapping = load_mapping("line-opcua.toml", spec)
    mapping.columns["press.speed"]            # "ns=2;s=press.speed"
    mapping.setpoints["press"]["speed"]       # WriteNode(node_id=..., min=0.6, max=1.4)
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from linetwin.api.opcua_errors import OpcUaMappingError
from linetwin.api.opcua_toml import TomlReader
from linetwin.replay.csv_layout import LINE_COUNTERS, parse_header
from linetwin.replay.errors import ImportCsvError
from linetwin.twin.spec import SETPOINT_NAMES, LineSpec

POLICIES = ("Basic256Sha256", "None")
MODES = ("Sign", "SignAndEncrypt")
READ_MODES = ("subscription", "polling")
TIME_SOURCES = ("source", "client")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Security:
    """How the connector authenticates: policy, mode, certificates (paths), user and password.

    The password is never in the file: `password_env` names the environment variable that
    holds it, read by `password()` when the connector connects.
    """

    policy: str = "Basic256Sha256"
    mode: str = "SignAndEncrypt"
    certificate: Path | None = None
    private_key: Path | None = None
    server_certificate: Path | None = None
    application_uri: str = "urn:linetwin:opcua-client"
    username: str | None = None
    password_env: str | None = None

    def password(self, environ: Mapping[str, str] | None = None) -> str | None:
        """Return the password from the environment variable `password_env` (None: no user)."""
        if self.password_env is None:
            return None
        env = os.environ if environ is None else environ
        value = env.get(self.password_env)
        if value is None:
            raise OpcUaMappingError(
                f"security.password_env: environment variable {self.password_env!r} is not set "
                f"(it holds the password of OPC UA user {self.username!r})"
            )
        return value


@dataclass(frozen=True)
class WriteNode:
    """A writable setpoint node and the limits a written value must respect (the spec's)."""

    node_id: str
    min: float
    max: float


@dataclass(frozen=True)
class OpcUaMapping:
    """A validated mapping of one line (see `docs/opcua.md` for every key and its default).

    `columns` maps plant-log column names (`released`, `press.status`, ...) to node ids;
    `setpoints` maps `{station: {"speed" | "temperature": WriteNode}}`; times are seconds.
    """

    source: str
    line: str
    endpoint: str
    security: Security
    columns: dict[str, str]
    setpoints: dict[str, dict[str, WriteNode]]
    timeout_s: float = 4.0
    read_mode: str = "subscription"
    interval_s: float = 1.0
    time_source: str = "source"
    time_origin: datetime = EPOCH
    reconnect_initial_s: float = 0.5
    reconnect_max_s: float = 30.0
    namespace_uri: str = "urn:linetwin:plant"

    def node_ids(self) -> list[str]:
        """Return every node id the mapping names (columns, then setpoint nodes), once each."""
        ids = list(self.columns.values())
        ids += [w.node_id for per in self.setpoints.values() for w in per.values()]
        return list(dict.fromkeys(ids))


def load_mapping(path: str | Path, spec: LineSpec) -> OpcUaMapping:
    """Read and check the mapping file at `path` for the line `spec`.

    Relative certificate paths are taken from the file's folder. Raises OpcUaMappingError
    naming the file, the key and the value for anything the format does not allow.
    """
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise OpcUaMappingError(f"{p}: cannot read the mapping file: {exc}") from exc
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise OpcUaMappingError(f"{p}: not a valid TOML file: {exc}") from exc
    return parse_mapping(data, spec, source=str(p), base_dir=p.parent)


def parse_mapping(
    data: Mapping[str, Any],
    spec: LineSpec,
    *,
    source: str = "<mapping>",
    base_dir: Path | None = None,
) -> OpcUaMapping:
    """Check mapping `data` (as parsed from TOML) against `spec`; see `load_mapping`."""
    r = TomlReader(source, base_dir or Path.cwd())
    r.keys(
        data, "", {"line", "server", "security", "read", "reconnect", "line_counters", "stations"}
    )
    line = r.string(data, "line", default=spec.name)
    if line != spec.name:
        raise r.err("line", line, f"the line spec is {spec.name!r}")
    server = r.table(data, "server", required=True)
    r.keys(server, "server", {"endpoint", "timeout_s", "namespace_uri"})
    endpoint = r.string(server, "server.endpoint")
    if not endpoint.startswith("opc.tcp://"):
        raise r.err("server.endpoint", endpoint, "expected an opc.tcp:// URL")
    security = _security(r, r.table(data, "security", required=True))
    read = r.table(data, "read")
    r.keys(read, "read", {"mode", "interval_s", "time_source", "time_origin"})
    reconnect = r.table(data, "reconnect")
    r.keys(reconnect, "reconnect", {"initial_s", "max_s"})
    initial = r.positive(reconnect, "reconnect.initial_s", 0.5)
    cap = r.positive(reconnect, "reconnect.max_s", 30.0)
    if cap < initial:
        raise r.err("reconnect.max_s", cap, f"must be at least reconnect.initial_s ({initial})")
    columns, setpoints = _stations(r, data, spec)
    return OpcUaMapping(
        source=source,
        line=line,
        endpoint=endpoint,
        security=security,
        columns=columns,
        setpoints=setpoints,
        timeout_s=r.positive(server, "server.timeout_s", 4.0),
        read_mode=r.choice(read, "read.mode", READ_MODES, "subscription"),
        interval_s=r.positive(read, "read.interval_s", 1.0),
        time_source=r.choice(read, "read.time_source", TIME_SOURCES, "source"),
        time_origin=r.datetime(read, "read.time_origin", EPOCH),
        reconnect_initial_s=initial,
        reconnect_max_s=cap,
        namespace_uri=r.string(server, "server.namespace_uri", default="urn:linetwin:plant"),
    )


def _security(r: TomlReader, sec: Mapping[str, Any]) -> Security:
    r.keys(
        sec,
        "security",
        {
            "policy",
            "mode",
            "certificate",
            "private_key",
            "server_certificate",
            "application_uri",
            "username",
            "password_env",
            "password",
        },
    )
    if "password" in sec:
        raise r.err(
            "security.password",
            "***",
            "never put a password in the file: name the "
            "environment variable that holds it with security.password_env",
        )
    policy = r.choice(sec, "security.policy", POLICIES, "Basic256Sha256")
    username = r.string(sec, "security.username", default=None)
    password_env = r.string(sec, "security.password_env", default=None)
    if (username is None) != (password_env is None):
        raise r.err(
            "security.password_env" if username else "security.username",
            None,
            "username and password_env come together",
        )
    paths = {
        k: r.path(sec, f"security.{k}")
        for k in ("certificate", "private_key", "server_certificate")
    }
    if policy == "None":
        given = [k for k, v in paths.items() if v is not None]
        if given or "mode" in sec:
            key = f"security.{given[0]}" if given else "security.mode"
            raise r.err(key, sec.get(key.split(".")[1]), "not used with policy 'None'")
        return Security(
            policy="None",
            mode="None",
            username=username,
            password_env=password_env,
            application_uri=r.string(
                sec, "security.application_uri", default=Security.application_uri
            ),
        )
    for key, value in paths.items():
        if value is None:
            raise r.err(f"security.{key}", None, f"required with policy {policy!r}")
    return Security(
        policy=policy,
        mode=r.choice(sec, "security.mode", MODES, "SignAndEncrypt"),
        certificate=paths["certificate"],
        private_key=paths["private_key"],
        server_certificate=paths["server_certificate"],
        application_uri=r.string(sec, "security.application_uri", default=Security.application_uri),
        username=username,
        password_env=password_env,
    )


def _stations(
    r: TomlReader, data: Mapping[str, Any], spec: LineSpec
) -> tuple[dict[str, str], dict[str, dict[str, WriteNode]]]:
    columns: dict[str, str] = {}
    counters = r.table(data, "line_counters")
    r.keys(counters, "line_counters", set(LINE_COUNTERS))
    for name in counters:
        columns[name] = r.node_id(counters, f"line_counters.{name}")
    stations = r.table(data, "stations", required=True)
    names = [st.name for st in spec.stations]
    r.keys(stations, "stations", set(names))
    setpoints: dict[str, dict[str, WriteNode]] = {}
    where: dict[str, str] = {}
    for st in spec.stations:
        entry = r.table(stations, f"stations.{st.name}", required=True, name=st.name)
        for fld, value in entry.items():
            key = f"stations.{st.name}.{fld}"
            if fld == "write":
                setpoints[st.name] = _writes(r, value, key, spec, st.name)
                continue
            columns[f"{st.name}.{fld}"] = r.node_id(entry, key, fld)
            where[f"{st.name}.{fld}"] = key
    try:  # one set of column rules for the CSV importer, HTTP ingestion and this mapping
        parse_header(["time_s", *columns], spec, r.source)
    except ImportCsvError as exc:
        col = exc.column or ""
        station, dot, fld = col.rpartition(".")
        key = where.get(col) or (f"stations.{station}.{fld}" if dot else f"stations ({col})")
        problem = re.sub(r"^.*?: line 1(, column '[^']*')?: ", "", str(exc))
        raise r.err(key, columns.get(exc.column or ""), problem) from exc
    return columns, setpoints


def _writes(
    r: TomlReader, value: Any, key: str, spec: LineSpec, station: str
) -> dict[str, WriteNode]:
    if not isinstance(value, Mapping):
        raise r.err(key, value, "expected a table of writable setpoints")
    limits = spec.stations[spec.station_index(station)].setpoints
    out: dict[str, WriteNode] = {}
    for name, entry in value.items():
        k = f"{key}.{name}"
        if name not in SETPOINT_NAMES:
            raise r.err(k, name, f"unknown setpoint (expected {' or '.join(SETPOINT_NAMES)})")
        sp = getattr(limits, name)
        if sp is None:
            raise r.err(k, entry, f"station {station!r} has no {name} setpoint in the line spec")
        if isinstance(entry, str):
            entry = {"node": entry}
        if not isinstance(entry, Mapping):
            raise r.err(k, entry, "expected a node id or a table {node, min, max}")
        r.keys(entry, k, {"node", "min", "max"})
        lo = r.number(entry, f"{k}.min", sp.min)
        hi = r.number(entry, f"{k}.max", sp.max)
        # The node's range is what the plant accepts: it must hold every value the spec allows,
        # or the optimizer could publish a setpoint the plant refuses.
        if lo > sp.min:
            raise r.err(
                f"{k}.min",
                lo,
                f"above the line spec's minimum {sp.min}: the plant "
                "would refuse values the optimizer may publish",
            )
        if hi < sp.max:
            raise r.err(
                f"{k}.max",
                hi,
                f"below the line spec's maximum {sp.max}: the plant "
                "would refuse values the optimizer may publish",
            )
        out[name] = WriteNode(r.node_id(entry, f"{k}.node", "node"), float(sp.min), float(sp.max))
    return out
