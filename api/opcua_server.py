"""The emulator's OPC UA server: a twin's line exposed on the nodes an OPC UA mapping names.

`serve_opcua(spec, mapping, twin, ...)` starts an asyncua server on its own thread and asyncio
loop and returns the running `PlantServer`. It publishes every snapshot of the real-time twin
(paced with `twin.start()`, or stepped by the caller with `twin.tick()`) to the mapped nodes,
with source timestamps at `start_utc + line time`, so a client that reads source timestamps
sees the plant's time at any `--speed`. Writes to the mapped setpoint nodes reach the twin;
a write request with any value outside the line spec's limits is refused whole with
`BadOutOfRange` and changes nothing. Security: Basic256Sha256 (Sign, SignAndEncrypt), the
server's certificate and key, only the client certificates given as trusted, and users
checked by name and password (no anonymous access).

    server = serve_opcua(spec, mapping, rt, server_certificate=..., server_private_key=...,
                         users={"linetwin": "secret"}, trusted_certificates=[client_cert])
    ...
    server.stop()
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import math
import threading
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from linetwin.api.opcua_errors import OpcUaError
from linetwin.api.opcua_mapping import OpcUaMapping
from linetwin.api.opcua_nodes import add_nodes, column_values, trust_only
from linetwin.api.opcua_rows import sleep_unless
from linetwin.twin.realtime import RealtimeTwin, Subscription
from linetwin.twin.snapshot import Snapshot
from linetwin.twin.spec import SETPOINT_NAMES, LineSpec


class PlantServer:
    """An OPC UA server over a `RealtimeTwin`, run on its own thread and asyncio loop.

    `start()` and `stop()` may be called again (same port: a dropped connection for clients).
    `writes_applied` and `writes_refused` count setpoint write requests.
    """

    def __init__(
        self,
        spec: LineSpec,
        mapping: OpcUaMapping,
        twin: RealtimeTwin,
        *,
        server_certificate: str | Path | None,
        server_private_key: str | Path | None,
        users: Mapping[str, str] | None = None,
        trusted_certificates: Sequence[str | Path] = (),
        endpoint: str | None = None,
        start_utc: datetime | None = None,
        poll_s: float = 0.02,
    ) -> None:
        secured = mapping.security.policy != "None"
        if secured and (server_certificate is None or server_private_key is None):
            raise OpcUaError(
                f"{mapping.source}: policy {mapping.security.policy} needs the server's "
                "certificate and private key"
            )
        self.spec = spec
        self.mapping = mapping
        self.twin = twin
        self.endpoint = endpoint or mapping.endpoint
        self.start_utc = start_utc or mapping.time_origin
        self._cert = server_certificate
        self._key = server_private_key
        self._users = dict(users or {})
        self._trusted = [Path(p) for p in trusted_certificates]
        self._poll_s = poll_s
        self._write_nodes: dict[str, tuple[int, int, float, float]] = {}
        for station, per in mapping.setpoints.items():
            i = spec.station_index(station)
            for name, node in per.items():
                self._write_nodes[node.node_id] = (
                    i,
                    SETPOINT_NAMES.index(name),
                    node.min,
                    node.max,
                )
        self._write_keys: dict[str, tuple[int, int, float, float]] = {}
        self.writes_applied = 0
        self.writes_refused = 0
        self.published_time_s = -math.inf
        self._published = threading.Condition()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._stopping = threading.Event()
        self._sub: Subscription | None = None

    # --- lifecycle (any thread) ---------------------------------------------------------

    def start(self, timeout: float = 30.0) -> PlantServer:
        """Start serving; return once the server listens (raises OpcUaError if it cannot)."""
        if self._thread is not None:
            raise OpcUaError("the OPC UA server is already running")
        ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._sub = self.twin.subscribe(maxsize=4)
        self._stopping.clear()
        self._loop = self._stop = None
        self._thread = threading.Thread(
            target=lambda: asyncio.run(self._main(ready)),
            name="linetwin-opcua-server",
            daemon=True,
        )
        self._thread.start()
        try:
            ready.result(timeout)
        except BaseException as exc:
            self.stop()
            if isinstance(exc, OpcUaError):
                raise
            raise OpcUaError(f"OPC UA server at {self.endpoint} did not start: {exc!r}") from exc
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop serving and close the port (clients lose their connection)."""
        self._stopping.set()
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None:
            with contextlib.suppress(RuntimeError):  # the loop has already ended
                loop.call_soon_threadsafe(stop.set)
        if self._thread is not None:
            self._thread.join(timeout)
        self._thread = None
        self._loop = None
        if self._sub is not None:
            self.twin.unsubscribe(self._sub)
            self._sub = None

    @property
    def running(self) -> bool:
        """Whether the server thread is serving."""
        return self._thread is not None and self._thread.is_alive()

    def wait_published(self, time_s: float, timeout: float = 10.0) -> bool:
        """Wait until the snapshot at line time `time_s` (or later) is on the nodes."""
        with self._published:
            return self._published.wait_for(lambda: self.published_time_s >= time_s, timeout)

    # --- the server (its own loop) ------------------------------------------------------

    async def _main(self, ready: concurrent.futures.Future[None]) -> None:
        self._stop = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        if self._stopping.is_set():  # stop() came before the loop existed
            self._stop.set()
        try:
            server, nodes = await self._build()
            await server.start()
        except BaseException as exc:
            ready.set_exception(exc)
            return
        ready.set_result(None)
        try:
            await self._feed(server, nodes)
        finally:
            await server.stop()

    async def _build(self) -> tuple[Any, dict[str, tuple[Any, Any]]]:
        from asyncua import Server, ua
        from asyncua.crypto.permission_rules import User, UserRole
        from asyncua.server.user_managers import UserManager

        users = self._users

        class _Users(UserManager):
            def get_user(
                self,
                iserver: Any,
                username: Any = None,
                password: Any = None,
                certificate: Any = None,
            ) -> User | None:
                if username is not None and username in users and users[username] == password:
                    return User(role=UserRole.User, name=username)
                return None

        server = Server(user_manager=_Users() if users else None)
        await server.init()
        server.set_endpoint(self.endpoint)
        server.set_server_name(f"linetwin plant emulator ({self.spec.name})")
        if self.mapping.security.policy == "None":
            server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        else:
            from asyncua.crypto.uacrypto import der_from_x509, load_certificate

            from linetwin.api.opcua_certs import SERVER_URI

            await server.set_application_uri(SERVER_URI)
            server.set_security_policy(
                [
                    ua.SecurityPolicyType.Basic256Sha256_Sign,
                    ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt,
                ]
            )
            await server.load_certificate(str(self._cert))
            await server.load_private_key(str(self._key))
            trusted = {der_from_x509(await load_certificate(p)) for p in self._trusted}
            server.set_certificate_validator(trust_only(trusted))
        tokens: list[type] = [ua.UserNameIdentityToken if users else ua.AnonymousIdentityToken]
        server.set_identity_tokens(tokens)
        nodes = await add_nodes(server, self.spec, self.mapping, set(self._write_nodes))
        self._write_keys = {nodes[nid][0].to_string(): v for nid, v in self._write_nodes.items()}
        first = self.twin.latest if self.twin.latest is not None else self.twin.twin.snapshot()
        await self._publish(server, nodes, first)
        from asyncua.common.callback import CallbackType

        server.subscribe_server_callback(CallbackType.PreWrite, self._check_write)
        server.subscribe_server_callback(CallbackType.PostWrite, self._apply_write)
        return server, nodes

    async def _feed(self, server: Any, nodes: dict[str, tuple[Any, Any]]) -> None:
        assert self._stop is not None and self._sub is not None
        sub = self._sub
        while not self._stop.is_set():
            snap = sub.latest()
            if snap is not None:
                await self._publish(server, nodes, snap)
            await sleep_unless(self._stop, self._poll_s)

    async def _publish(
        self, server: Any, nodes: dict[str, tuple[Any, Any]], snap: Snapshot
    ) -> None:
        from asyncua import ua

        values = column_values(self.spec, snap)
        stamps: dict[str, Any] = {
            "SourceTimestamp": self.start_utc + timedelta(seconds=snap.time_s),
            "ServerTimestamp": datetime.now(UTC),
        }
        bad: Any = ua.StatusCodes.BadSensorFailure
        for col, nid in self.mapping.columns.items():
            value, good = values[col]
            nodeid, vtype = nodes[nid]
            if good:
                py = float(value) if vtype == ua.VariantType.Double else int(value)
                dv = ua.DataValue(ua.Variant(py, vtype), **stamps)
            else:  # a dropped-out sensor: bad quality, no value
                null = ua.Variant(None, ua.VariantType.Null)
                dv = ua.DataValue(null, StatusCode=ua.StatusCode(bad), **stamps)
            await server.write_attribute_value(nodeid, dv)
        for nid, (i, k, _, _) in self._write_nodes.items():
            if nid in self.mapping.columns.values():
                continue
            variant = ua.Variant(float(snap.setpoints[0, i, k]), ua.VariantType.Double)
            await server.write_attribute_value(nodes[nid][0], ua.DataValue(variant, **stamps))
        with self._published:
            self.published_time_s = snap.time_s
            self._published.notify_all()

    def _setpoint_writes(self, params: Any) -> list[tuple[int, int, float, float, Any]]:
        out = []
        for wv in params.NodesToWrite:
            target = self._write_keys.get(wv.NodeId.to_string())
            if target is not None:
                v = wv.Value.Value.Value if wv.Value is not None and wv.Value.Value else None
                out.append((*target, v))
        return out

    async def _check_write(self, event: Any, _dispatcher: Any) -> None:
        from asyncua import ua

        for i, k, lo, hi, value in self._setpoint_writes(event.request_params):
            ok = isinstance(value, float | int) and not isinstance(value, bool)
            if not (ok and math.isfinite(value) and lo <= value <= hi):
                self.writes_refused += 1
                raise ua.uaerrors.BadOutOfRange(
                    f"{self.spec.stations[i].name}.{SETPOINT_NAMES[k]} = {value!r} is outside "
                    f"[{lo}, {hi}]"
                )

    async def _apply_write(self, event: Any, _dispatcher: Any) -> None:
        writes = self._setpoint_writes(event.request_params)
        results = event.response_params or []
        good = [w for w, res in zip(writes, results, strict=False) if res.is_good()]
        if not good:
            return
        sp = np.array(self.twin.twin.setpoints[0], dtype=np.float64)
        for i, k, _, _, value in good:
            sp[i, k] = float(value)
        self.twin.set_setpoints(sp, source=f"OPC UA write to {self.endpoint}")
        self.writes_applied += 1


def serve_opcua(
    spec: LineSpec,
    mapping: OpcUaMapping,
    twin: RealtimeTwin,
    *,
    server_certificate: str | Path | None,
    server_private_key: str | Path | None,
    users: Mapping[str, str] | None = None,
    trusted_certificates: Sequence[str | Path] | None = None,
    endpoint: str | None = None,
    start_utc: datetime | None = None,
) -> PlantServer:
    """Start an OPC UA server for `twin` on the nodes of `mapping`; return it running.

    `users` defaults to the mapping's user with the password from its environment variable;
    `trusted_certificates` to the mapping's client certificate. `endpoint` defaults to the
    mapping's, `start_utc` (the source timestamp of line time 0) to its `read.time_origin`.
    Stop it with `server.stop()`.
    """
    sec = mapping.security
    if users is None:
        password = sec.password()
        users = {sec.username: password} if sec.username and password is not None else {}
    if trusted_certificates is None:
        trusted_certificates = [sec.certificate] if sec.certificate is not None else []
    server = PlantServer(
        spec,
        mapping,
        twin,
        server_certificate=server_certificate,
        server_private_key=server_private_key,
        users=users,
        trusted_certificates=trusted_certificates,
        endpoint=endpoint,
        start_utc=start_utc,
    )
    return server.start()
