"""Connect to a line's OPC UA server: read its state as plant-log rows, write setpoints back.

`OpcUaConnector(spec, mapping, on_rows, rng=...)` runs an asyncua client on its own thread and
asyncio loop, so a synchronous service can host it (`start()`, `stop()`). It connects with the
mapping's security (Basic256Sha256 with certificates, a user name and a password from the
environment), reads the mapped nodes by subscription or by polling every `read.interval_s`,
assembles one row per sampling instant in the plant-log layout (`api/opcua_rows.py` says how,
`time_s` included) and hands batches of rows to `on_rows(rows)`, on the connector's thread.

`write_setpoints({station: {setpoint: value}}, mode)` writes published setpoints to the mapped
nodes: only in closed mode (advisory and manual are refused and counted), and only values
inside the line spec's limits, checked again right before the write whatever the caller sent.

A lost connection reconnects with exponential backoff (capped, jittered from the passed
Generator); meanwhile `stale_reason()` says why the data is stale and `status` tells
connected / reconnecting, the last error, rows delivered and writes done / refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import numpy as np

from linetwin.api.opcua_errors import (
    OpcUaAuthError,
    OpcUaCertificateError,
    OpcUaConnectionError,
    classify,
)
from linetwin.api.opcua_mapping import OpcUaError, OpcUaMapping, OpcUaMappingError
from linetwin.api.opcua_rows import IncompleteRowError, Sample, build_row, sleep_unless
from linetwin.twin.spec import SETPOINT_NAMES, LineSpec

_log = logging.getLogger(__name__)

RowsCallback = Callable[[list[dict[str, Any]]], Any]


def backoff_delay(attempt: int, initial_s: float, max_s: float, rng: np.random.Generator) -> float:
    """Return the wait before reconnect `attempt` (0-based), in s.

    `min(max_s, initial_s * 2**attempt)` scaled by a uniform draw in [0.5, 1): never above
    `max_s`, never below half of the capped exponential (so clients spread out).
    """
    base = min(max_s, initial_s * 2.0 ** min(attempt, 60))
    return float(base * rng.uniform(0.5, 1.0))


@dataclass(frozen=True)
class ConnectorStatus:
    """What the connector is doing. Times in s; `state` is stopped, connecting, connected or
    reconnecting; `error_kind` auth, certificate, connection or config."""

    state: str
    endpoint: str
    last_error: str | None = None
    error_kind: str | None = None
    failed_attempts: int = 0
    next_retry_s: float | None = None
    rows_delivered: int = 0
    rows_incomplete: int = 0
    rows_rejected: int = 0
    last_row_time_s: float | None = None
    incomplete_reason: str | None = None
    writes_done: int = 0
    writes_refused: int = 0
    writes_failed: int = 0


@dataclass(frozen=True)
class WriteOutcome:
    """The result of one `write_setpoints` call.

    `written` is what reached the plant `{station: {setpoint: value}}`; `refused` says why
    nothing was written (None when the write went through); `skipped` names setpoints the
    mapping has no writable node for.
    """

    written: dict[str, dict[str, float]]
    refused: str | None = None
    skipped: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        """Whether the values went to the plant."""
        return self.refused is None


class OpcUaConnector:
    """An OPC UA client for one line, on its own thread; see the module docstring."""

    def __init__(
        self,
        spec: LineSpec,
        mapping: OpcUaMapping,
        on_rows: RowsCallback,
        *,
        rng: np.random.Generator,
        batch_rows: int = 1,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        if mapping.line != spec.name:
            raise OpcUaMappingError(
                f"{mapping.source}: mapping for line {mapping.line!r}, spec is {spec.name!r}"
            )
        if batch_rows < 1:
            raise OpcUaError(f"batch_rows must be at least 1, got {batch_rows}")
        self.spec = spec
        self.mapping = mapping
        self.on_rows = on_rows
        self.batch_rows = batch_rows
        self._rng = rng
        self._environ = environ
        self._lock = threading.Lock()
        self._status = ConnectorStatus(state="stopped", endpoint=mapping.endpoint)
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._stopping = threading.Event()
        self._client: Any = None
        self._first = threading.Event()
        self._samples: dict[str, Sample] = {}
        self._dirty = False
        self._pending: list[dict[str, Any]] = []
        self._last_time = -math.inf
        self._aliases: dict[str, str] = {}
        self._limits = {
            (st.name, name): (float(sp.min), float(sp.max))
            for st in spec.stations
            for name in SETPOINT_NAMES
            if (sp := getattr(st.setpoints, name)) is not None
        }

    # --- status -------------------------------------------------------------------------

    @property
    def status(self) -> ConnectorStatus:
        """A consistent copy of the connector's state and counters."""
        with self._lock:
            return self._status

    def _set(self, **changes: Any) -> None:
        with self._lock:
            self._status = replace(self._status, **changes)

    def _count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._status = replace(self._status, **{name: getattr(self._status, name) + n})

    def stale_reason(self) -> str | None:
        """Why the plant data is stale now, or None while connected."""
        s = self.status
        if s.state == "connected":
            return None
        if s.state == "stopped":
            return f"OPC UA connector to {s.endpoint} is stopped"
        err = f": {s.last_error}" if s.last_error else ""
        return f"OPC UA connector to {s.endpoint} is {s.state}{err}"

    # --- lifecycle ----------------------------------------------------------------------

    def start(self, wait_s: float | None = None) -> None:
        """Start the connector's thread; with `wait_s`, wait for the first connection.

        With `wait_s`, an authentication, certificate or configuration error on the first
        attempt, or no connection within `wait_s`, stops the connector and raises it
        (OpcUaAuthError, OpcUaCertificateError, OpcUaMappingError, OpcUaConnectionError).
        Without, it keeps retrying in the background and `status` tells why.
        """
        if self._thread is not None:
            raise OpcUaError("the OPC UA connector is already running")
        self._first.clear()
        self._set(state="connecting")
        self._stopping.clear()
        self._loop = self._stop = None
        self._thread = threading.Thread(
            target=lambda: asyncio.run(self._main()), name="linetwin-opcua-client", daemon=True
        )
        self._thread.start()
        if wait_s is None:
            return
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if self._first.wait(0.05):
                s = self.status
                if s.state == "connected":
                    return
                if s.error_kind in ("auth", "certificate", "config"):
                    break
                self._first.clear()
        s = self.status
        if s.state == "connected":
            return
        self.stop()
        raise _error_of(s, wait_s)

    def stop(self, timeout: float = 10.0) -> None:
        """Disconnect, deliver the rows still pending and stop the thread."""
        self._stopping.set()
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None:
            with contextlib.suppress(RuntimeError):  # the loop has already ended
                loop.call_soon_threadsafe(stop.set)
        if self._thread is not None:
            self._thread.join(timeout)
        self._thread = None
        self._loop = None
        self._set(state="stopped", next_retry_s=None)

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        if self._stopping.is_set():  # stop() came before the loop existed
            self._stop.set()
        attempt = 0
        while not self._stop.is_set():
            try:
                await self._session()
                if self._stop.is_set():
                    break
                raise OpcUaConnectionError("the server closed the session")
            except Exception as exc:
                kind, message = classify(exc, self.mapping)
                if self.status.state == "connected":
                    attempt = 0
                self._client = None
                delay = backoff_delay(
                    attempt,
                    self.mapping.reconnect_initial_s,
                    self.mapping.reconnect_max_s,
                    self._rng,
                )
                attempt += 1
                self._set(
                    state="reconnecting",
                    last_error=message,
                    error_kind=kind,
                    failed_attempts=attempt,
                    next_retry_s=delay,
                )
                _log.warning("OPC UA: %s; retrying in %.2f s", message, delay)
                self._first.set()
                self._flush()
                await sleep_unless(self._stop, delay)
        self._flush()

    # --- one connection -----------------------------------------------------------------

    async def _session(self) -> None:
        from asyncua import Client

        m = self.mapping
        client = Client(m.endpoint, timeout=m.timeout_s)
        client.application_uri = m.security.application_uri
        client.session_timeout = 600_000  # ms; asyncua's server caps it there
        client.name = client.description = "linetwin OPC UA connector"
        await self._secure(client)
        await client.connect()
        try:
            self._client = client
            nodes = {nid: client.get_node(nid) for nid in m.columns.values()}
            self._samples = {}
            self._dirty = False
            self._set(state="connected", next_retry_s=None, failed_attempts=0)
            self._first.set()
            if m.read_mode == "subscription":
                await self._subscribe(client, nodes)
            else:
                await self._poll(client, nodes)
        finally:
            self._client = None
            try:
                await asyncio.wait_for(client.disconnect(), 2.0)
            except Exception:  # the connection may already be gone
                _log.debug("OPC UA disconnect failed", exc_info=True)

    async def _secure(self, client: Any) -> None:
        from asyncua import ua
        from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256
        from asyncua.crypto.uacrypto import der_from_x509, load_certificate

        sec = self.mapping.security
        if sec.username is not None:
            client.set_user(sec.username)
            password = sec.password(self._environ)
            if password is not None:
                client.set_password(password)
        if sec.policy == "None":
            return
        assert sec.certificate and sec.private_key and sec.server_certificate
        for key, path in (
            ("certificate", sec.certificate),
            ("private_key", sec.private_key),
            ("server_certificate", sec.server_certificate),
        ):
            if not path.is_file():
                raise OpcUaMappingError(
                    f"{self.mapping.source}: key 'security.{key}' = '{path}': no such file"
                )
        trusted = der_from_x509(await load_certificate(str(sec.server_certificate)))
        await self._check_server_certificate(client, trusted, sec.mode)
        await client.set_security(
            SecurityPolicyBasic256Sha256,
            certificate=str(sec.certificate),
            private_key=str(sec.private_key),
            server_certificate=str(sec.server_certificate),
            mode=getattr(ua.MessageSecurityMode, sec.mode),
        )
        source = self.mapping.source

        async def validate(cert: Any, _description: Any) -> None:
            if der_from_x509(cert) != trusted:
                raise OpcUaCertificateError(
                    f"{source}: the server's certificate is not the one "
                    f"security.server_certificate names ({sec.server_certificate})"
                )

        client.certificate_validator = validate

    async def _check_server_certificate(self, client: Any, trusted: bytes, mode: str) -> None:
        """Ask the server for its endpoints (unsecured discovery, as OPC UA allows) and refuse
        to go on unless it offers Basic256Sha256 in `mode` with the certificate we trust:
        a server with another certificate could not even read our secured requests."""
        from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256

        endpoints = await client.connect_and_get_server_endpoints()
        uri = SecurityPolicyBasic256Sha256.URI
        offered = [ep for ep in endpoints if ep.SecurityPolicyUri == uri]
        if not any(ep.SecurityMode.name == mode for ep in offered):
            raise OpcUaCertificateError(
                f"{self.mapping.endpoint}: the server offers no Basic256Sha256 endpoint in "
                f"mode {mode} (security.mode in {self.mapping.source})"
            )
        if not any((ep.ServerCertificate or b"")[: len(trusted)] == trusted for ep in offered):
            sec = self.mapping.security
            raise OpcUaCertificateError(
                f"{self.mapping.endpoint}: the server's certificate is not the one "
                f"security.server_certificate names ({sec.server_certificate}): refusing to "
                "connect (replace that file with the server's certificate if it changed)"
            )

    def _sample(self, nid: str, dv: Any) -> None:
        value = dv.Value.Value if dv.Value is not None else None
        good = dv.StatusCode is None or dv.StatusCode.is_good()
        self._samples[nid] = Sample(
            value, good and value is not None, _utc(dv.SourceTimestamp), _utc(dv.ServerTimestamp)
        )
        self._dirty = True

    async def _subscribe(self, client: Any, nodes: dict[str, Any]) -> None:
        assert self._stop is not None
        connector = self

        class Handler:
            def datachange_notification(self, node: Any, _val: Any, data: Any) -> None:
                connector._sample(node.nodeid.to_string(), data.monitored_item.Value)

            def status_change_notification(self, status: Any) -> None:
                _log.info("OPC UA subscription status: %s", status)

        by_id = {n.nodeid.to_string(): nid for nid, n in nodes.items()}
        if len(by_id) != len(nodes):
            raise OpcUaMappingError("two node ids of the mapping name the same node")
        sub = await client.create_subscription(self.mapping.interval_s * 1000.0, Handler())
        await sub.subscribe_data_change(list(nodes.values()))
        self._aliases = by_id
        probe = client.get_node("i=2259")  # Server.ServerStatus.State
        last_probe = time.monotonic()
        while not self._stop.is_set():
            await sleep_unless(self._stop, self.mapping.interval_s)
            if self._dirty:
                self._emit()
            if time.monotonic() - last_probe >= max(1.0, self.mapping.interval_s):
                await asyncio.wait_for(probe.read_value(), self.mapping.timeout_s)
                last_probe = time.monotonic()

    async def _poll(self, client: Any, nodes: dict[str, Any]) -> None:
        assert self._stop is not None
        ids = list(nodes)
        node_ids = [n.nodeid for n in nodes.values()]
        self._aliases = {nid: nid for nid in ids}
        while not self._stop.is_set():
            started = time.monotonic()
            values = await client.uaclient.read_attributes(node_ids, _value_attribute())
            for nid, dv in zip(ids, values, strict=True):
                self._sample(nid, dv)
            self._emit()
            wait = self.mapping.interval_s - (time.monotonic() - started)
            await sleep_unless(self._stop, max(wait, 0.0))

    def _emit(self) -> None:
        self._dirty = False
        samples = {self._aliases.get(k, k): v for k, v in self._samples.items()}
        try:
            row = build_row(
                self.mapping.columns,
                samples,
                time_source=self.mapping.time_source,
                time_origin=self.mapping.time_origin,
                now=datetime.now(UTC),
            )
        except IncompleteRowError as exc:
            self._count("rows_incomplete")
            self._set(incomplete_reason=str(exc))
            return
        if row["time_s"] <= self._last_time:
            if row["time_s"] < self._last_time:  # equal: the plant has not moved on
                self._count("rows_incomplete")
                self._set(
                    incomplete_reason=f"time_s {row['time_s']} is before the last row's "
                    f"{self._last_time}: the server's clock went back"
                )
            return
        self._last_time = row["time_s"]
        self._pending.append(row)
        if len(self._pending) >= self.batch_rows:
            self._flush()

    def _flush(self) -> None:
        rows, self._pending = self._pending, []
        if not rows:
            return
        try:
            self.on_rows(rows)
        except Exception as exc:
            self._count("rows_rejected", len(rows))
            self._set(last_error=f"on_rows refused {len(rows)} rows: {exc}")
            _log.warning("OPC UA rows refused by on_rows: %s", exc)
            return
        self._count("rows_delivered", len(rows))
        self._set(last_row_time_s=rows[-1]["time_s"])

    # --- writes -------------------------------------------------------------------------

    def write_setpoints(
        self, setpoints: Mapping[str, Mapping[str, float]], mode: str, timeout: float | None = None
    ) -> WriteOutcome:
        """Write published setpoints `{station: {"speed" | "temperature": value}}` to the plant.

        Only in `mode` "closed"; every value must be finite and inside the line spec's limits,
        or nothing is written (refused and counted). Setpoints the mapping has no writable
        node for are skipped and named. Thread-safe; waits up to `timeout` s (default: the
        mapping's request timeout) for the server's answer.
        """
        if str(mode) != "closed":
            self._count("writes_refused")
            return WriteOutcome({}, refused=f"mode {str(mode)!r}: only closed mode writes")
        _, problem = self._plan(setpoints)
        if problem is not None:
            self._count("writes_refused")
            return WriteOutcome({}, refused=problem)
        loop = self._loop
        if loop is None or self._client is None:
            self._count("writes_failed")
            return WriteOutcome({}, refused=f"not connected ({self.stale_reason()})")
        fut = asyncio.run_coroutine_threadsafe(self._write(setpoints), loop)
        try:
            return fut.result(timeout or self.mapping.timeout_s + 1.0)
        except Exception as exc:
            fut.cancel()
            self._count("writes_failed")
            return WriteOutcome({}, refused=f"write failed: {exc!r}")

    def _plan(
        self, setpoints: Mapping[str, Mapping[str, float]]
    ) -> tuple[list[tuple[str, str, float]], str | None]:
        """Read `setpoints` once into `(station, setpoint, value)`; say why they may not go to
        the plant (None: all finite, known and inside the line spec's limits)."""
        if not isinstance(setpoints, Mapping):
            return [], f"expected {{station: {{setpoint: value}}}}, got {type(setpoints).__name__}"
        plan: list[tuple[str, str, float]] = []
        for station, per in setpoints.items():
            if not isinstance(per, Mapping):
                return [], f"{station}: expected {{setpoint: value}}, got {type(per).__name__}"
            for name, value in per.items():
                limits = self._limits.get((station, name))
                if limits is None:
                    return [], f"{station}.{name}: no such setpoint on line {self.spec.name!r}"
                ok = isinstance(value, int | float | np.floating | np.integer)
                if not ok or isinstance(value, bool) or not math.isfinite(float(value)):
                    return [], f"{station}.{name} = {value!r}: not a finite number"
                v = float(value)
                if not limits[0] <= v <= limits[1]:
                    return [], (
                        f"{station}.{name} = {v!r} is outside the line spec's "
                        f"limits [{limits[0]}, {limits[1]}]"
                    )
                plan.append((station, name, v))
        return plan, None

    async def _write(self, setpoints: Mapping[str, Mapping[str, float]]) -> WriteOutcome:
        client = self._client
        if client is None:
            self._count("writes_failed")
            return WriteOutcome({}, refused=f"not connected ({self.stale_reason()})")
        # Checked again here, right before the wire, and what is sent is what was checked.
        plan, problem = self._plan(setpoints)
        if problem is not None:
            self._count("writes_refused")
            return WriteOutcome({}, refused=problem)
        nodes, values, skipped = [], [], []
        written: dict[str, dict[str, float]] = {}
        for station, name, value in plan:
            target = self.mapping.setpoints.get(station, {}).get(name)
            if target is None:
                skipped.append(f"{station}.{name}")
                continue
            nodes.append(client.get_node(target.node_id))
            values.append(value)
            written.setdefault(station, {})[name] = value
        if nodes:
            try:
                await client.write_values(nodes, values)
            except Exception as exc:
                self._count("writes_failed")
                return WriteOutcome(
                    {}, refused=f"the server refused the write: {exc}", skipped=tuple(skipped)
                )
            self._count("writes_done")
        return WriteOutcome(written, skipped=tuple(skipped))


def _utc(stamp: datetime | None) -> datetime | None:
    if stamp is None:
        return None
    return stamp.replace(tzinfo=UTC) if stamp.tzinfo is None else stamp


def _value_attribute() -> Any:
    from asyncua import ua

    return ua.AttributeIds.Value


def _error_of(s: ConnectorStatus, wait_s: float) -> OpcUaError:
    message = s.last_error or f"no connection within {wait_s} s"
    if s.error_kind == "auth":
        return OpcUaAuthError(message)
    if s.error_kind == "certificate":
        return OpcUaCertificateError(message)
    if s.error_kind == "config":
        return OpcUaMappingError(message)
    return OpcUaConnectionError(f"{message} (no connection within {wait_s} s)")
