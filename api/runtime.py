"""The service's pieces in one process: storage, keys, audit, model, real-time twin, controller.

`Runtime` owns them. A background thread follows the twin's snapshots and runs one controller
cycle every `period_s` of line time; after each publish it caches the decision's encoded bytes
(`Published`) and wakes long-pollers, both threads (`wait_newer`) and asyncio handlers
(`wait_newer_async`, which never blocks the event loop).

Engineers' changes of plant behaviour (approve, reject, override, release, rollback, objective,
mode) are the controller's methods (`optimizer.controller`); the runtime validates the request,
calls the method and writes the change's audit record from the method's `record` callback: for
changes that publish, inside the same storage transaction as the decision. Setpoints an
engineer sends (override, rollback) go through the controller's guard like the optimizer's;
held overrides keep ramping inside the controller's cycles (one publish per cycle). The mode,
the objective and the held overrides are restored from the audit log on start (the mode only
when the settings do not name one).

The line itself is a `Plant` (`api.plant`, the seam): `settings.plant == "twin"` runs the
real-time twin as the plant (the demo); `"external"` takes measured rows (`ExternalPlant`, fed
by `POST /v1/plant/snapshots` and the OPC UA connector, `runtime.connector`). Either way the
loop follows snapshot time: in external mode the controller decides every `period_s` of plant
time as rows arrive, however fast. When the plant's data go stale or bad
(`plant.stale_reason`, the connector's), the controller holds its last-known-good setpoints
with the guard's STALE_DATA / BAD_DATA reason: a fallback decision published once when the
rows stop (then again each period while bad rows keep coming), an audit record
`plant.data`, and `/readyz`'s `plant_data` check says why. A plant that runs other setpoints
than published is run by hand: audited once (`plant.hand`) and followed (the guard ramps from
what the plant runs).

`clock` (wall time, s since the epoch) is injectable: the controller's staleness check, the
readiness check, acknowledgement ages and decision times all read it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from linetwin.api.audit import AuditLog, AuditRecord
from linetwin.api.errors import ApiError, UsageError
from linetwin.api.keys import KeyStore
from linetwin.api.metrics import Metrics
from linetwin.api.plant import ExternalPlant, Plant, TwinPlant
from linetwin.api.recording import RunRecorder
from linetwin.api.settings import Settings
from linetwin.api.storage import DecisionRecord, Storage, StorageError, database_path
from linetwin.models.dataset import recent_throughput
from linetwin.models.estimate import kpi_samples
from linetwin.models.surrogate import Surrogate
from linetwin.optimizer import errors as optimizer_errors
from linetwin.optimizer.controller import Controller, Held
from linetwin.optimizer.decision import Decision, Mode
from linetwin.optimizer.guard import Reason
from linetwin.optimizer.monitor import InputMonitor
from linetwin.optimizer.problem import Objective
from linetwin.twin.kpi import Kpis, window_kpis
from linetwin.twin.params import compile_params, setpoints_to_mapping
from linetwin.twin.realtime import RealtimeTwin, Subscription
from linetwin.twin.recorder import Recorder
from linetwin.twin.sim import Twin
from linetwin.twin.snapshot import Snapshot
from linetwin.twin.spec import SETPOINT_NAMES, LineSpec

CYCLE_GRACE_S = 5.0
"""Wall seconds added to three controller periods before the last cycle counts as stale."""

HISTORY_MAX = 20_000
"""Most snapshots kept for KPI windows (whatever `kpi_window_max_s / tick_s` asks)."""
TREND_STEP_S = 60.0
"""Line s between the snapshots the runtime keeps for long KPI trends."""
TREND_MAX = 1440
"""Snapshots kept for long KPI trends: a day of line time at `TREND_STEP_S`."""
PLANT_QUEUE = 1 << 16
"""Snapshots queued for the controller loop in external mode (a large batch arrives at once;
past this the oldest are dropped: the cycle runs on the newest, KPIs read counters)."""


class InvalidInputError(ApiError):
    """A request names values the line does not allow; `errors` in FastAPI's 422 shape."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__("; ".join(str(e["msg"]) for e in errors))
        self.errors = errors


class StateConflictError(ApiError):
    """The request does not fit the current state (nothing pending, wrong mode): 409."""


class NotHeldError(ApiError):
    """No override holds that station: 404."""


@dataclass(frozen=True)
class Surrogated:
    """The surrogate's view of one candidate: KPI -> (mean, std), OOD score, in envelope."""

    kpis: dict[str, tuple[float, float]]
    ood_score: float
    in_envelope: bool


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

    `model` is the loaded surrogate (`models.checkpoint.load(model_dir, spec)`); `clock` gives
    wall time, s since the epoch (tests pass a fake one instead of sleeping).
    """

    def __init__(
        self,
        settings: Settings,
        spec: LineSpec,
        model: Surrogate,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if settings.opcua is not None and settings.plant != "external":
            raise UsageError("--opcua reads an external plant: it needs --plant external")
        self.settings = settings
        self.clock = clock
        self.spec = spec
        self.model = model
        self.params = compile_params(spec)
        try:
            settings.data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ApiError(
                f"{settings.data_dir}: cannot create the data directory: {exc.strerror or exc}"
            ) from None
        self.storage = Storage(database_path(settings.data_dir), spec, clock=clock)
        try:
            self.audit = AuditLog(self.storage)
            self.keys = KeyStore(self.storage)
            self.metrics = Metrics(self.storage.acks, settings.silent_after_s)
            restored_mode = self._last_audit("mode.change")
            explicit = "mode" in settings.model_fields_set
            mode = settings.mode
            if not explicit and restored_mode is not None:
                mode = restored_mode["mode"]
            self.mode_restored = not explicit and restored_mode is not None
            restored_objective = self._last_audit("objective.change")
            objective = None if restored_objective is None else Objective(**restored_objective)
            restored_held = self._last_audit("override.set", "override.release")
            self.plant: Plant = make_plant(settings, spec)
            self.connector: Any = None
            """The OPC UA connector feeding the external plant (`serve --opcua`), or None."""
            self.controller: Controller[DecisionRecord] = Controller(
                spec,
                model,
                self.storage,
                mode=Mode(mode),
                objective=objective,
                budget_s=settings.budget_s,
                period_s=settings.period_s,
                apply=self._apply,
                clock=clock,
                held=None if restored_held is None else restored_held["held"],
                on_publish=self._on_publish,
                plant_setpoints=self.running,
            )
            latest = self.storage.latest_record()
            if self.external:
                self.controller.monitor = PlantMonitor(
                    spec, self.controller.monitor.stale_after_s, self.plant_problem
                )
        except BaseException:
            self.storage.close()
            raise
        self._cond = threading.Condition()
        self._current: Published | None = None if latest is None else Published.of(latest)
        self._async_waiters: dict[asyncio.Future[None], asyncio.AbstractEventLoop] = {}
        self._mode_lock = threading.Lock()
        self._change_lock = threading.Lock()  # engineers' changes, one at a time
        self.last_recent: float | None = None
        """Good parts/h over the last controller period (the last cycle's input), or None."""
        n_hist = math.ceil(settings.kpi_window_max_s / settings.tick_s) + 2
        self.history: deque[Snapshot] = deque(maxlen=min(HISTORY_MAX, n_hist))
        self.trend: deque[Snapshot] = deque(maxlen=TREND_MAX)
        """One snapshot every `TREND_STEP_S` line s over the last day: trends longer than
        `history` (the page shows the last hours as soon as it opens)."""
        self.streams_closing = threading.Event()
        """Set when the process shuts down: state streams end."""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started_at: float | None = None
        self.cycles_run = 0
        """Controller cycles finished (published or not, failed included)."""
        self.last_cycle_at: float | None = None
        """Wall time (s since the epoch) the last cycle finished, or None."""
        self.cycle_error: BaseException | None = None
        self.stopped = False
        self.recorder: RunRecorder | None = None
        """Records the run when `settings.record` is set (from `start`; twin mode: the
        external plant records what it ingests)."""
        self._holding = False  # a fallback for stale plant data is published
        self._hand_noted = False  # running by hand is audited
        self.write_error: str | None = None
        """Why the last write of setpoints to the plant (OPC UA) failed, or None."""

    @property
    def twin(self) -> RealtimeTwin:
        """The real-time twin that is the plant in twin mode (tests step it); ApiError in
        external mode. Everything else goes through `plant`, the seam."""
        if isinstance(self.plant, TwinPlant):
            return self.plant.realtime
        raise ApiError("the plant is external: there is no real-time twin")

    @property
    def external(self) -> bool:
        """Whether the plant is a real line fed with measured rows (`--plant external`)."""
        return isinstance(self.plant, ExternalPlant)

    def plant_problem(self) -> str | None:
        """Why the plant's data cannot be trusted now (the plant's, then the connector's), or
        None."""
        reason = self.plant.stale_reason()
        if reason is None and self.connector is not None:
            reason = self.connector.stale_reason()
        return reason

    # -- lifecycle -------------------------------------------------------------------------
    def start(self, wait_s: float | None = None) -> None:
        """Start the plant and the controller thread (and, with `settings.opcua`, the OPC UA
        connector: `wait_s` waits for its first connection, raising why it failed)."""
        if self._thread is not None:
            raise ApiError("the runtime is already started")
        plant = self.plant
        if self.settings.record is not None:
            if isinstance(plant, TwinPlant):
                self.recorder = RunRecorder(
                    plant.realtime, self.settings.record, seed=self.settings.seed
                )
            elif isinstance(plant, ExternalPlant):
                plant.recorder = Recorder(
                    self.settings.record,
                    self.spec,
                    seed=self.settings.seed,
                    note="linetwin serve --plant external",
                )
        self._started_at = self.clock()
        sub = plant.subscribe(maxsize=PLANT_QUEUE if self.external else 256)
        first = plant.first_snapshot(timeout=0.0)
        self._thread = threading.Thread(
            target=self._loop, args=(sub, first), name="linetwin-controller", daemon=True
        )
        self._thread.start()
        plant.start()
        if self.settings.opcua is not None and isinstance(plant, ExternalPlant):
            self.connector = self._connect_opcua(plant, self.settings.opcua, wait_s)

    def _connect_opcua(self, plant: ExternalPlant, mapping_path: Path, wait_s: float | None) -> Any:
        """Start an OPC UA connector on `mapping_path` feeding `plant.ingest` (asyncua is an
        optional extra: imported here)."""
        from linetwin.api.opcua import OpcUaConnector
        from linetwin.api.opcua_mapping import load_mapping

        connector = OpcUaConnector(
            self.spec,
            load_mapping(mapping_path, self.spec),
            lambda rows: plant.ingest(rows, "OPC UA"),
            rng=np.random.default_rng(self.settings.seed),
        )
        connector.start(wait_s)
        return connector

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the twin and the controller (the current cycle and its write finish first),
        wake every long-poller and close the storage. Idempotent."""
        if self.stopped:
            return
        self.stopped = True
        self.streams_closing.set()
        self._stop.set()
        try:
            if self.connector is not None:
                self.connector.stop()
            self.plant.stop(timeout)
        finally:
            if self._thread is not None:
                self._thread.join(timeout)
            self._wake_all()
            try:
                if self.recorder is not None:
                    self.recorder.stop()
            finally:
                self.storage.close()

    def close_streams(self) -> None:
        """End every open state stream and long poll (call before the HTTP server drains its
        connections: otherwise a graceful shutdown waits out every open `?wait=`)."""
        self.streams_closing.set()
        self._wake_all()

    def __enter__(self) -> Runtime:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the controller loop ---------------------------------------------------------------
    def _apply(self, setpoints: np.ndarray) -> None:
        self.plant.set_setpoints(setpoints[None], "controller")

    def _loop(self, sub: Subscription, first: Snapshot | None) -> None:
        period = self.settings.period_s
        while first is None and not self._stop.is_set():  # an external plant's first row
            first = sub.get(timeout=0.25)
        if first is None:
            return
        history: deque[Snapshot] = deque([first])
        self._keep(first)
        last_cycle_line_s = first.time_s
        while not self._stop.is_set():
            snap = sub.get(timeout=0.25)
            if snap is None:
                if self.external:
                    self._hold_if_stale()
                continue
            # What piled up during a slow cycle is kept for KPIs; the cycle runs on the newest.
            for queued in (snap, *sub.drain()):
                history.append(queued)
                self._keep(queued)
                snap = queued
            received = self.clock()
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
            if self.external:
                self._note_external()
            self.run_cycle(snap, recent, received)

    def _hold_if_stale(self) -> None:
        """No new row: when the plant's data went stale or bad, publish one fallback decision
        (the controller holds its last-known-good setpoints) and audit why; once per episode."""
        reason = self.plant_problem()
        latest = self.plant.latest
        if reason is None or self._holding or latest is None:
            return
        self._holding = True
        self._hand_noted = False  # whatever runs when the data come back is a new episode
        self._audit_plant("plant.data", reason)
        self.run_cycle(latest, self.last_recent or 0.0, None)

    def _note_external(self) -> None:
        """Before a cycle on a measured snapshot: note (audit) when the data are bad and when
        the plant runs other setpoints than published (running by hand: the cycle follows it,
        the guard ramping from what the plant runs)."""
        reason = self.plant_problem()
        if reason is None:
            self._holding = False
        elif not self._holding:
            self._holding = True
            self._audit_plant("plant.data", reason)
        hand = self.plant.hand_reason()
        if hand is None:
            self._hand_noted = False
        elif not self._hand_noted:
            self._hand_noted = True
            self._audit_plant("plant.hand", f"running by hand: {hand}")

    def _audit_plant(self, action: str, reason: str) -> None:
        latest = self.plant.latest
        try:
            self.audit.append(
                "plant",
                action,
                new={"line_time_s": None if latest is None else latest.time_s},
                reason=reason,
            )
        except StorageError as exc:  # readyz reports an unwritable storage
            self.cycle_error = exc

    def _keep(self, snap: Snapshot) -> None:
        self.history.append(snap)
        if not self.trend or snap.time_s - self.trend[-1].time_s >= TREND_STEP_S - 1e-9:
            self.trend.append(snap)

    def trend_snapshots(self) -> list[Snapshot]:
        """The snapshots of the last day, sparse (`trend`) before `history` begins, then dense."""
        dense = list(self.history)
        if not dense:
            return list(self.trend)
        start = dense[0].time_s
        return [s for s in list(self.trend) if s.time_s < start] + dense

    def run_cycle(self, snap: Snapshot, recent: float, received: float | None = None) -> None:
        """Run one controller cycle on `snap` (recent good parts/h; wall time it arrived) and
        publish its decision; errors are kept in `cycle_error` and counted, not raised."""
        try:
            self._run_cycle(snap, recent, received)
        finally:
            with self._cond:
                self.cycles_run += 1
                self._cond.notify_all()

    def _run_cycle(self, snap: Snapshot, recent: float, received: float | None) -> None:
        t0 = time.perf_counter()
        self.last_recent = recent
        try:
            decision = self.controller.cycle(snap, recent, received)  # cached by _on_publish
        except Exception as exc:  # keep looping; readyz reports the stale cycle
            self.cycle_error = exc
            self.metrics.cycle_errors.inc()
            return
        self.cycle_error = None
        self.metrics.cycles.inc()
        self.metrics.cycle_seconds.observe(time.perf_counter() - t0)
        self._count(decision)
        self.last_cycle_at = self.clock()

    def wait_cycles(self, count: int, timeout: float) -> int:
        """Block up to `timeout` s until `cycles_run` reaches `count` (a cycle publishes
        only what is new: wait on this, not on a version, to know the loop caught up);
        return `cycles_run`."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self.cycles_run < count and not self._stop.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            return self.cycles_run

    def _count(self, decision: Decision) -> None:
        if decision.fallback:
            self.metrics.fallbacks.labels(decision.reasons[0] if decision.reasons else "").inc()
        self.metrics.solve_status.labels(decision.status or "none").inc()

    # -- published decisions and long polls ------------------------------------------------
    @property
    def current(self) -> Published | None:
        """The newest published decision, encoded; None before the first."""
        return self._current

    def _on_publish(self, decision: Decision, stored: DecisionRecord) -> None:
        """The controller published `decision` (stored as `stored`): cache it, wake pollers;
        write an applied decision's setpoints to the plant through the OPC UA connector."""
        self._publish(Published.of(stored))
        if decision.applied and self.connector is not None:
            outcome = self.connector.write_setpoints(
                setpoints_to_mapping(self.spec, decision.setpoints), str(decision.mode)
            )
            self.write_error = outcome.refused

    def _published(self, decision: Decision) -> Published:
        """The cached encoding of `decision` (read back only when a newer one came first)."""
        current = self._current
        if current is not None and current.version == decision.version:
            return current
        record = self.storage.decision(decision.version)
        if record is None:
            raise ApiError(f"decision {decision.version} was published but is not stored")
        return Published.of(record)

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
            while not (
                self._newer(version) or self._stop.is_set() or self.streams_closing.is_set()
            ):
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
            if self._newer(version) or self._stop.is_set() or self.streams_closing.is_set():
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
        audit: list[AuditRecord] = []

        def note(old: Mode, new: Mode) -> None:
            audit.append(
                self.audit.append(
                    actor,
                    "mode.change",
                    old={"mode": str(old)},
                    new={"mode": str(new)},
                    reason=reason,
                )
            )

        with self._mode_lock:
            old = self.controller.set_mode(Mode(mode), record=note)
        return old, audit[0]

    # -- the audit log as memory -----------------------------------------------------------
    def _last_audit(self, *actions: str) -> Any:
        """The `new` value of the newest audit record with one of `actions`, or None."""
        marks = ", ".join("?" for _ in actions)
        with self.storage.read("read last audit record") as con:
            row = con.execute(
                f"SELECT new FROM audit WHERE action IN ({marks}) ORDER BY seq DESC LIMIT 1",
                actions,
            ).fetchone()
        return None if row is None else json.loads(row[0])

    # -- engineers' changes ----------------------------------------------------------------
    def running(self) -> np.ndarray:
        """What the plant runs now `(n_stations, 2)` (as it reports them)."""
        return self.plant.setpoints[0]

    def latest_snapshot(self) -> Snapshot:
        """The newest snapshot (the twin's state before it runs); an external plant without
        a row yet raises StateConflictError."""
        snap = self.plant.first_snapshot(timeout=0.0)
        if snap is None:
            raise StateConflictError("no plant data received yet")
        return snap

    def _line_time(self) -> float:
        snap = self.plant.first_snapshot(timeout=0.0)
        return 0.0 if snap is None else float(snap.time_s)

    def approve(
        self, decision_id: str, *, actor: str, reason: str
    ) -> tuple[Published, AuditRecord]:
        """Apply the pending advisory decision `decision_id` through `Controller.approve`
        (which re-checks it with the guard) and audit it: the decision and its audit record
        are committed together, then published."""
        audit: list[AuditRecord] = []

        def note(approved: Decision, pending: Decision) -> None:
            old = self.current
            audit.append(
                self.audit.append(
                    actor,
                    "decision.approve",
                    old={"version": None if old is None else old.version, "pending": pending.id},
                    new={
                        "version": approved.version,
                        "id": approved.id,
                        "setpoints": approved.setpoint_mapping(self.spec),
                        "reasons": list(approved.reasons),
                    },
                    reason=reason,
                )
            )

        with self._change_lock, _conflicts():
            approved = self.controller.approve(
                decision_id, within=self.storage.write("approve"), record=note
            )
        return self._published(approved), audit[0]

    def reject(self, decision_id: str, *, actor: str, reason: str) -> AuditRecord:
        """Drop the pending advisory decision `decision_id` (the plant keeps what it runs)."""
        audit: list[AuditRecord] = []

        def note(pending: Decision) -> None:
            audit.append(
                self.audit.append(
                    actor,
                    "decision.reject",
                    old={"pending": pending.id, "version": pending.version},
                    new={"pending": None},
                    reason=reason,
                )
            )

        with self._change_lock, _conflicts():
            self.controller.reject(decision_id, record=note)
        return audit[0]

    @property
    def pending(self) -> Decision | None:
        """The advisory recommendation awaiting approval, or None."""
        return self.controller.pending

    @property
    def overrides(self) -> Held:
        """The held overrides `{station: {setpoint: value}}` (a copy)."""
        return self.controller.held

    def override(
        self, values: dict[str, dict[str, float]], *, actor: str, reason: str
    ) -> tuple[Published, AuditRecord]:
        """Hold `values` on their stations: validated, published through the guard now (one
        rate-limited step), then held (locked for the optimizer) and ramped on each cycle."""
        errors = self.check_values(values)
        if errors:
            raise InvalidInputError(errors)
        audit: list[AuditRecord] = []

        def note(decision: Decision, old: Held, held: Held) -> None:
            audit.append(
                self.audit.append(
                    actor,
                    "override.set",
                    old={"held": old},
                    new={
                        "held": held,
                        "version": decision.version,
                        "setpoints": decision.setpoint_mapping(self.spec),
                        "reasons": list(decision.reasons),
                    },
                    reason=reason,
                )
            )

        with self._change_lock:
            decision = self.controller.override(
                values,
                line_time_s=self._line_time(),
                within=self.storage.write("override"),
                record=note,
            )
        return self._published(decision), audit[0]

    def release(self, station: str, *, actor: str, reason: str) -> AuditRecord:
        """Stop holding the override of `station`: the controller decides it again."""
        audit: list[AuditRecord] = []

        def note(old: Held, held: Held) -> None:
            audit.append(
                self.audit.append(
                    actor,
                    "override.release",
                    old={"held": old},
                    new={"held": held},
                    reason=reason,
                )
            )

        with self._change_lock:
            try:
                self.controller.release(station, record=note)
            except optimizer_errors.NotHeldError as exc:
                raise NotHeldError(str(exc)) from None
        return audit[0]

    def rollback(self, version: int, *, actor: str, reason: str) -> tuple[Published, AuditRecord]:
        """Publish the setpoints of decision `version` again, through the guard (held
        overrides stay held)."""
        stored = self.storage.decision(version)
        if stored is None:
            raise InvalidInputError(
                [
                    {
                        "loc": ("body", "version"),
                        "msg": f"no published decision version {version}",
                        "type": "value_error",
                    }
                ]
            )
        earlier = self.storage.to_decision(stored)
        audit: list[AuditRecord] = []

        def note(decision: Decision) -> None:
            old = self.current
            audit.append(
                self.audit.append(
                    actor,
                    "decision.rollback",
                    old={"version": None if old is None else old.version},
                    new={
                        "to_version": version,
                        "version": decision.version,
                        "setpoints": decision.setpoint_mapping(self.spec),
                        "reasons": list(decision.reasons),
                    },
                    reason=reason,
                )
            )

        with self._change_lock:
            decision = self.controller.rollback(
                earlier.setpoints,
                line_time_s=self._line_time(),
                within=self.storage.write("rollback"),
                record=note,
            )
        return self._published(decision), audit[0]

    @property
    def ramping(self) -> bool:
        """Whether held overrides are still ramping toward their targets."""
        return self.controller.ramping

    @property
    def objective(self) -> Objective:
        return self.controller.objective

    def set_objective(
        self, values: dict[str, Any], *, actor: str, reason: str
    ) -> tuple[Objective, AuditRecord]:
        """Replace the objective (used from the next cycle on); `ProblemError` names a bad
        field."""
        new = Objective(**values)
        audit: list[AuditRecord] = []

        def note(old: Objective, new: Objective) -> None:
            audit.append(
                self.audit.append(
                    actor, "objective.change", old=asdict(old), new=asdict(new), reason=reason
                )
            )

        with self._change_lock:
            old = self.controller.set_objective(new, record=note)
        return old, audit[0]

    # -- what-if and KPIs ------------------------------------------------------------------
    def candidate_arrays(
        self, candidates: list[dict[str, dict[str, float]]]
    ) -> tuple[Snapshot, np.ndarray]:
        """Validate candidates and fill what they leave out from what the plant runs:
        (the snapshot they start from, setpoints `(n, n_stations, 2)`)."""
        errors: list[dict[str, Any]] = []
        for j, c in enumerate(candidates):
            errors += self.check_values(c, ("body", "candidates", j))
        if errors:
            raise InvalidInputError(errors)
        snap = self.latest_snapshot()
        names = [st.name for st in self.spec.stations]
        out = np.repeat(snap.setpoints[:1], len(candidates), axis=0).astype(float)
        for j, c in enumerate(candidates):
            for station, entries in c.items():
                for name, value in entries.items():
                    out[j, names.index(station), SETPOINT_NAMES.index(name)] = value
        return snap, out

    def surrogate_whatif(self, snap: Snapshot, setpoints: np.ndarray) -> list[Surrogated]:
        """The surrogate's KPIs (mean, calibrated std) for each candidate from `snap`."""
        schema, model = self.model.schema, self.model
        recent = self.last_recent if self.last_recent is not None else 0.0
        state = schema.state_features(snap, np.array([recent]))[:1]
        x = schema.setpoint_features(setpoints)
        samples = kpi_samples(model, self.spec, state, x)
        ood = model.ood_score(state, x)
        return [
            Surrogated(samples.estimate(j), float(ood[j]), bool(ood[j] <= model.ood_threshold))
            for j in range(setpoints.shape[0])
        ]

    def twin_whatif(
        self, snap: Snapshot, setpoints: np.ndarray, seeds: int, hours: float, seed: int
    ) -> list[Kpis]:
        """KPIs of `seeds` forked twin runs of `hours` per candidate (common random numbers:
        every candidate sees the same `seeds` streams)."""
        out = []
        for j in range(setpoints.shape[0]):
            twin = Twin.fork(snap, seeds, seed=seed)
            twin.set_setpoints(np.broadcast_to(setpoints[j], (seeds, *setpoints.shape[1:])))
            start = twin.snapshot()
            end = twin.run(hours * 3600.0)
            out.append(window_kpis(start, end))
        return out

    def kpis(self, window_s: float) -> Kpis | None:
        """KPIs over the last `window_s` line s of the runtime's snapshots (shorter when the
        history is shorter); None before two snapshots."""
        snaps = list(self.history)
        if len(snaps) < 2:
            return None
        end = snaps[-1]
        start = next((s for s in snaps if s.time_s >= end.time_s - window_s - 1e-9), snaps[0])
        if start.time_s >= end.time_s:
            start = snaps[-2]
        return window_kpis(start, end)

    # -- acknowledgements ------------------------------------------------------------------
    def check_values(
        self, values: Any, where: tuple[str | int, ...] = ("body", "values")
    ) -> list[dict[str, Any]]:
        """Check `{station: {setpoint: value}}` against the line's stations and limits; return
        validation errors (FastAPI's `loc`/`msg`/`type` shape, under `where`)."""
        errors: list[dict[str, Any]] = []
        names = [s.name for s in self.spec.stations]

        def error(loc: tuple[str, ...], msg: str) -> None:
            errors.append({"loc": (*where, *loc), "msg": msg, "type": "value_error"})

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
        plant = self.plant
        running = not self.stopped and plant.running
        loop = self._thread is not None and self._thread.is_alive()
        name = "plant_running" if self.external else "twin_running"
        if plant.error is not None:
            checks[name] = (False, f"twin failed: {plant.error!r}")
        elif self.external:
            ok = running and loop
            checks[name] = (ok, "taking rows" if ok else "not running")
        else:
            checks[name] = (running, "running" if running else "not running")
        if self.external:
            problem = self.plant_problem()
            checks["plant_data"] = (problem is None, problem or "fresh")
        try:
            with self.storage.write("readiness probe"):
                pass
            checks["storage_writable"] = (True, str(self.storage.path))
        except StorageError as exc:
            checks["storage_writable"] = (False, str(exc))
        # an external plant runs at least in real time: three periods of wall time at most
        speed = 1.0 if self.external else self.settings.speed
        limit = 3 * self.settings.period_s / speed + CYCLE_GRACE_S
        since = self.last_cycle_at if self.last_cycle_at is not None else self._started_at
        if since is None or self.stopped:
            checks["last_cycle_recent"] = (False, "controller not running")
        else:
            age = self.clock() - since
            ok = age <= limit
            what = "last cycle" if self.last_cycle_at is not None else "start, no cycle yet,"
            detail = f"{what} {age:.1f} s ago (limit {limit:.1f} s)"
            if self.cycle_error is not None:
                detail += f"; last error: {self.cycle_error!r}"
            checks["last_cycle_recent"] = (ok, detail)
        return checks


def make_plant(settings: Settings, spec: LineSpec) -> Plant:
    """The plant `settings.plant` names: the real-time twin, or an external line."""
    if settings.plant == "external":
        return ExternalPlant(spec, seed=settings.seed, stale_after_s=settings.stale_after_s)
    return TwinPlant(
        RealtimeTwin(Twin(spec, 1, seed=settings.seed), settings.tick_s, settings.speed)
    )


DATA_REASONS = ("the last batch", "reading ")
"""Beginnings of the plant's stale reasons that mean bad data (rejected, out of range)."""


class PlantMonitor(InputMonitor):
    """The controller's input monitor behind the plant's own verdict: STALE_DATA or BAD_DATA
    while `problem()` names one, else what `InputMonitor` says of the snapshot."""

    def __init__(
        self, spec: LineSpec, stale_after_s: float, problem: Callable[[], str | None]
    ) -> None:
        super().__init__(spec, stale_after_s)
        self.problem = problem

    def check(self, snap: Snapshot, age_s: float) -> Reason | None:
        reason = self.problem()
        if reason is not None:
            return Reason.BAD_DATA if reason.startswith(DATA_REASONS) else Reason.STALE_DATA
        return super().check(snap, age_s)


@contextlib.contextmanager
def _conflicts() -> Iterator[None]:
    """Turn the controller's state errors (nothing pending, wrong mode) into 409s."""
    try:
        yield
    except optimizer_errors.StateError as exc:
        raise StateConflictError(str(exc)) from None


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)
