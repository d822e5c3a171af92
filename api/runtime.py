"""The service's pieces in one process: storage, keys, audit, model, real-time twin, controller.

`Runtime` owns them. A background thread follows the twin's snapshots and runs one controller
cycle every `period_s` of line time; after each publish it caches the decision's encoded bytes
(`Published`) and wakes long-pollers, both threads (`wait_newer`) and asyncio handlers
(`wait_newer_async`, which never blocks the event loop).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np

from api.audit import AuditLog, AuditRecord
from api.errors import ApiError
from api.keys import KeyStore
from api.metrics import Metrics
from api.settings import Settings
from api.storage import DecisionRecord, Storage, StorageError, database_path
from models.dataset import recent_throughput
from models.surrogate import Surrogate
from optimizer.controller import Controller, Decision, Mode
from twin.params import compile_params
from twin.realtime import RealtimeTwin
from twin.sim import Twin
from twin.snapshot import Snapshot
from twin.spec import SETPOINT_NAMES, LineSpec

CYCLE_GRACE_S = 5.0
"""Wall seconds added to three controller periods before the last cycle counts as stale."""


@dataclass(frozen=True)
class Published:
    """A published decision, encoded once: its version, strong ETag and JSON body bytes."""

    version: int
    etag: str
    body: bytes

    @classmethod
    def of(cls, record: DecisionRecord) -> Published:
        return cls(record.version, f'"{record.version}"', record.payload_json.encode("utf-8"))


class Runtime:
    """Run the twin, the controller and the storage of one line; see the module docstring.

    `model` is the loaded surrogate (`models.checkpoint.load(model_dir, spec)`).
    """

    def __init__(self, settings: Settings, spec: LineSpec, model: Surrogate) -> None:
        self.settings = settings
        self.spec = spec
        self.model = model
        self.params = compile_params(spec)
        try:
            settings.data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ApiError(
                f"{settings.data_dir}: cannot create the data directory: {exc.strerror or exc}"
            ) from None
        self.storage = Storage(database_path(settings.data_dir), spec)
        try:
            self.audit = AuditLog(self.storage)
            self.keys = KeyStore(self.storage)
            self.metrics = Metrics(self.storage.acks)
            self.twin = RealtimeTwin(
                Twin(spec, 1, seed=settings.seed), settings.tick_s, settings.speed
            )
            self.controller = Controller(
                spec,
                model,
                self.storage,
                mode=Mode(settings.mode),
                budget_s=settings.budget_s,
                apply=self._apply,
            )
            latest = self.storage.latest_record()
        except BaseException:
            self.storage.close()
            raise
        self._cond = threading.Condition()
        self._current: Published | None = None if latest is None else Published.of(latest)
        self._async_waiters: dict[asyncio.Future[None], asyncio.AbstractEventLoop] = {}
        self._mode_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started_at: float | None = None
        self.last_cycle_at: float | None = None
        """Wall time (s since the epoch) the last cycle finished, or None."""
        self.cycle_error: BaseException | None = None
        self.stopped = False

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        """Start the real-time twin and the controller thread."""
        if self._thread is not None:
            raise ApiError("the runtime is already started")
        self._started_at = time.time()
        sub = self.twin.subscribe(maxsize=256)
        first = self.twin.twin.snapshot()
        self._thread = threading.Thread(
            target=self._loop, args=(sub, first), name="linetwin-controller", daemon=True
        )
        self._thread.start()
        self.twin.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the twin and the controller (the current cycle and its write finish first),
        wake every long-poller and close the storage. Idempotent."""
        if self.stopped:
            return
        self.stopped = True
        self._stop.set()
        try:
            self.twin.stop(timeout)
        finally:
            if self._thread is not None:
                self._thread.join(timeout)
            self._wake_all()
            self.storage.close()

    def __enter__(self) -> Runtime:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the controller loop ---------------------------------------------------------------
    def _apply(self, setpoints: np.ndarray) -> None:
        self.twin.set_setpoints(setpoints[None], "controller")

    def _loop(self, sub: Any, first: Snapshot) -> None:
        period = self.settings.period_s
        history: deque[Snapshot] = deque([first])
        last_cycle_line_s = first.time_s
        while not self._stop.is_set():
            snap = sub.get(timeout=0.25)
            if snap is None:
                continue
            snap = sub.latest() or snap  # skip what piled up during a slow cycle
            received = time.time()
            history.append(snap)
            while len(history) > 1 and history[1].time_s <= snap.time_s - period:
                history.popleft()
            if snap.time_s - last_cycle_line_s < period - 1e-9:
                continue
            last_cycle_line_s = snap.time_s
            before = history[0]
            if before.time_s >= snap.time_s:
                continue
            recent = float(recent_throughput(before, snap)[0])
            if self._stop.is_set():
                break
            self.run_cycle(snap, recent, received)

    def run_cycle(self, snap: Snapshot, recent: float, received: float | None = None) -> None:
        """Run one controller cycle on `snap` (recent good parts/h; wall time it arrived) and
        publish its decision; errors are kept in `cycle_error` and counted, not raised."""
        t0 = time.perf_counter()
        try:
            decision = self.controller.cycle(snap, recent, received)
            record = self.storage.latest_record()
        except Exception as exc:  # keep looping; readyz reports the stale cycle
            self.cycle_error = exc
            self.metrics.cycle_errors.inc()
            return
        self.cycle_error = None
        self.metrics.cycles.inc()
        self.metrics.cycle_seconds.observe(time.perf_counter() - t0)
        self._count(decision)
        self.last_cycle_at = time.time()
        if record is not None:
            self._publish(Published.of(record))

    def _count(self, decision: Decision) -> None:
        if decision.fallback:
            self.metrics.fallbacks.labels(decision.reasons[0] if decision.reasons else "").inc()
        self.metrics.solve_status.labels(decision.status or "none").inc()

    # -- published decisions and long polls ------------------------------------------------
    @property
    def current(self) -> Published | None:
        """The newest published decision, encoded; None before the first."""
        return self._current

    def _publish(self, published: Published) -> None:
        with self._cond:
            if self._current is not None and published.version <= self._current.version:
                return
            self._current = published
            self.metrics.version.set(published.version)
            self._cond.notify_all()
        self._wake_async()

    def _wake_async(self) -> None:
        with self._cond:
            waiters, self._async_waiters = self._async_waiters, {}
        for fut, loop in waiters.items():
            with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits
                loop.call_soon_threadsafe(_resolve, fut)

    def _wake_all(self) -> None:
        with self._cond:
            self._cond.notify_all()
        self._wake_async()

    def wait_newer(self, version: int, timeout: float) -> Published | None:
        """Block up to `timeout` s until a version above `version` is published; return the
        current decision either way (None when none is published)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self._newer(version) and not self._stop.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            return self._current

    async def wait_newer_async(self, version: int, timeout: float) -> Published | None:
        """`wait_newer` for asyncio handlers: waits on a future, never blocking the loop."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        with self._cond:
            if self._newer(version) or self._stop.is_set():
                return self._current
            self._async_waiters[fut] = loop
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(fut, timeout)
        finally:
            with self._cond:
                self._async_waiters.pop(fut, None)
        return self._current

    def _newer(self, version: int) -> bool:
        return self._current is not None and self._current.version > version

    # -- mode ------------------------------------------------------------------------------
    @property
    def mode(self) -> Mode:
        return self.controller.mode

    def set_mode(self, mode: Mode | str, *, actor: str, reason: str) -> tuple[Mode, AuditRecord]:
        """Switch the controller's mode (bumpless into closed) and audit it; return the old
        mode and the audit record."""
        new = Mode(mode)
        with self._mode_lock:
            old = self.controller.mode
            record = self.audit.append(
                actor, "mode.change", old={"mode": str(old)}, new={"mode": str(new)}, reason=reason
            )
            self.controller.set_mode(new, self.twin.twin.setpoints[0])
        return old, record

    # -- acknowledgements ------------------------------------------------------------------
    def check_values(self, values: Any) -> list[dict[str, Any]]:
        """Check `{station: {setpoint: value}}` against the line's stations and limits; return
        validation errors (FastAPI's `loc`/`msg`/`type` shape, under `body.values`)."""
        errors: list[dict[str, Any]] = []
        names = [s.name for s in self.spec.stations]

        def error(loc: tuple[str, ...], msg: str) -> None:
            errors.append({"loc": ("body", "values", *loc), "msg": msg, "type": "value_error"})

        if not isinstance(values, dict) or not values:
            error((), "expected an object of stations with the setpoints applied")
            return errors
        for station, entries in values.items():
            if station not in names:
                error(
                    (station,), f"unknown station (line {self.spec.name!r} has: {', '.join(names)})"
                )
                continue
            i = names.index(station)
            have = [n for k, n in enumerate(SETPOINT_NAMES) if self.params.present[i, k]]
            if not isinstance(entries, dict) or not entries:
                error((station,), f"expected an object of setpoints (has: {', '.join(have)})")
                continue
            for name, value in entries.items():
                if name not in have:
                    error(
                        (station, name),
                        f"station {station!r} has no setpoint {name!r} (has: {', '.join(have)})",
                    )
                    continue
                k = SETPOINT_NAMES.index(name)
                low, high = float(self.params.lower[i, k]), float(self.params.upper[i, k])
                if isinstance(value, bool) or not isinstance(value, int | float):
                    error((station, name), f"expected a number, got {value!r}")
                elif not math.isfinite(value):
                    error((station, name), f"must be a finite number, got {value!r}")
                elif not low <= value <= high:
                    error((station, name), f"{value!r} is outside its limits [{low}, {high}]")
        return errors

    # -- readiness -------------------------------------------------------------------------
    def readiness(self) -> dict[str, tuple[bool, str]]:
        """Each readiness check: name -> (ok, detail)."""
        checks: dict[str, tuple[bool, str]] = {}
        checks["model_loaded"] = (self.model is not None, "surrogate loaded")
        thread = self.twin._thread
        running = not self.stopped and thread is not None and thread.is_alive()
        if self.twin.error is not None:
            checks["twin_running"] = (False, f"twin failed: {self.twin.error!r}")
        else:
            checks["twin_running"] = (running, "running" if running else "not running")
        try:
            with self.storage.write("readiness probe"):
                pass
            checks["storage_writable"] = (True, str(self.storage.path))
        except StorageError as exc:
            checks["storage_writable"] = (False, str(exc))
        limit = 3 * self.settings.period_s / self.settings.speed + CYCLE_GRACE_S
        since = self.last_cycle_at if self.last_cycle_at is not None else self._started_at
        if since is None or self.stopped:
            checks["last_cycle_recent"] = (False, "controller not running")
        else:
            age = time.time() - since
            ok = age <= limit
            what = "last cycle" if self.last_cycle_at is not None else "start, no cycle yet,"
            detail = f"{what} {age:.1f} s ago (limit {limit:.1f} s)"
            if self.cycle_error is not None:
                detail += f"; last error: {self.cycle_error!r}"
            checks["last_cycle_recent"] = (ok, detail)
        return checks


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)
