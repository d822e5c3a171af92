"""Connect to a line's OPC UA server: read its state as plant-log rows, write setpoints back.

`OpcUaConnector(spec, mapping, on_rows, rng=...)` runs an asyncua client on its own thread and
asyncio loop, so a synchronous service can host it (`start()`, `stop()`). It connects with the
mapping's security (Basic256Sha256 with certificates, a user name and a password from the
environment), reads the mapped nodes by subscription or by polling every `read.interval_s`,
assembles one row per sampling instant in the plant-log layout (`api/opcua_rows.py` says how,
`time_s` included) and hands batches of rows to `on_rows(rows)`, in order, on a delivery
thread of its own (so `on_rows` may block, and may call `write_setpoints`).

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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import numpy as np

from linetwin.api.opcua_errors import (
    OpcUaAuthError,
    OpcUaCertificateError,
    OpcUaConnectionError,
    OpcUaError,
    OpcUaMappingError,
)
from linetwin.api.opcua_mapping import OpcUaMapping
from linetwin.api.opcua_rows import IncompleteRowError, Sample, build_row, sleep_unless
from linetwin.api.opcua_security import classify, secure
from linetwin.api.opcua_status import (
    ConnectorStatus,
    WriteOutcome,
    backoff_delay,
    plan_writes,
)
from linetwin.twin.spec import SETPOINT_NAMES, LineSpec

_log = logging.getLogger(__name__)

RowsCallback = Callable[[list[dict[str, Any]]], Any]

__all__ = ["ConnectorStatus", "OpcUaConnector", "RowsCallback", "WriteOutcome", "backoff_delay"]


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
        self._delivery: ThreadPoolExecutor | None = None
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
        self._delivery = ThreadPoolExecutor(1, thread_name_prefix="linetwin-opcua-rows")
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
        if self._delivery is not None:
            self._delivery.shutdown(wait=True)  # the last rows reach on_rows
        self._thread = self._delivery = None
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
        await secure(client, self.mapping, self._environ)
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
        if rows and self._delivery is not None:
            self._delivery.submit(self._deliver, rows)

    def _deliver(self, rows: list[dict[str, Any]]) -> None:
        """Hand `rows` to `on_rows`, on the delivery thread (so it may call `write_setpoints`)."""
        try:
            self.on_rows(rows)
        except Exception as exc:
            self._count("rows_rejected", len(rows))
            self._set(rows_error=f"on_rows refused {len(rows)} rows: {exc}")
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
        _, problem = plan_writes(self._limits, setpoints, self.spec.name)
        if problem is not None:
            self._count("writes_refused")
            return WriteOutcome({}, refused=problem)
        loop = self._loop
        if threading.current_thread() is self._thread:
            self._count("writes_failed")
            return WriteOutcome({}, refused="called on the connector's own thread (would block it)")
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

    async def _write(self, setpoints: Mapping[str, Mapping[str, float]]) -> WriteOutcome:
        client = self._client
        if client is None:
            self._count("writes_failed")
            return WriteOutcome({}, refused=f"not connected ({self.stale_reason()})")
        # Checked again here, right before the wire, and what is sent is what was checked.
        plan, problem = plan_writes(self._limits, setpoints, self.spec.name)
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
