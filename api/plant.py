"""The plant seam: the line the service controls, simulated (`TwinPlant`) or real (`ExternalPlant`).

`Plant` is what the runtime needs of a line: snapshots to subscribe to (`subscribe(maxsize)`
returns a `twin.realtime.Subscription`), the newest one (`latest`, `first_snapshot`), the
setpoints in force (`setpoints`), a door for published setpoints (`set_setpoints(array,
source)`), `start()` / `stop(timeout)`, `running` and `error`, and why its data cannot be
trusted right now (`stale_reason(now_wall)`) or whether it is being run by hand
(`hand_reason()`). The runtime, the controller and the page never ask which one they have.

`ExternalPlant` is a real line. Its feeders (the HTTP route `POST /v1/plant/snapshots`, the
OPC UA connector) call, from any thread::

    result = plant.ingest(rows, source)   # rows: [{column: value}, ...] or CSV text
    result.accepted, result.duplicates, result.last_time_s
    plant.published                       # setpoints to write to the plant (n_stations, 2)

`rows` follow the plant-log layout of `docs/recordings.md` (`docs/plant.md` for the route);
they are checked by `replay.plantrows.PlantRows` (the CSV importer's rules; a bad batch raises
`replay.errors.PlantDataError` naming the row and column, and nothing of it is kept) and each
accepted row becomes a `Snapshot` published to the subscribers at its plant time
(`api.measured`: the newest row of a batch restored exactly, so the twin can fork from it; the
rows before it with their measured values, enough for KPIs, trends and recordings).

The setpoints the controller publishes (`set_setpoints`) are kept as `published`: what a
poller or connector writes to the plant. The setpoints in force are those the plant reports;
when they differ from the published ones for `hand_after_s` plant seconds, the plant is being
run by hand (`hand_reason()`), and the controller should follow it (bumpless).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from linetwin.api.errors import ApiError
from linetwin.api.measured import MeasuredLine
from linetwin.replay.plantrows import PlantRows, PlantRowsInput, RowBatch
from linetwin.twin.errors import RecordingError
from linetwin.twin.params import (
    compile_params,
    nominal_setpoints,
    setpoints_from_mapping,
    validate_setpoint_array,
)
from linetwin.twin.realtime import RealtimeTwin, Subscription
from linetwin.twin.recorder import Recorder
from linetwin.twin.sim import SetpointInput
from linetwin.twin.snapshot import Snapshot
from linetwin.twin.spec import SETPOINT_NAMES, LineSpec

PHYSICAL_RANGES: dict[str, tuple[float, float]] = {
    "temperature_c": (-50.0, 1500.0),
    "power_kw": (-1.0, 100_000.0),
    "vibration_mm_s": (-1.0, 1000.0),
}
"""Valid readings outside these ranges (°C, kW, mm/s) make the plant's data bad. Power and
vibration may read a little below 0 (sensor noise around an idle station's zero: the twin's
sensors do, with 0.05 kW and 0.1 mm/s of noise)."""


@runtime_checkable
class Plant(Protocol):
    """The line the runtime controls; see the module docstring."""

    @property
    def latest(self) -> Snapshot | None:
        """The newest snapshot, or None before the first."""
        ...

    @property
    def error(self) -> BaseException | None:
        """Why the plant failed (a crashed pacing thread), or None."""
        ...

    @property
    def running(self) -> bool:
        """Whether the plant is started and not stopped."""
        ...

    @property
    def setpoints(self) -> np.ndarray:
        """Setpoints in force `(1, n_stations, 2)` (0.0 where a station has none)."""
        ...

    def subscribe(self, maxsize: int = 64) -> Subscription:
        """Return a subscription that receives every snapshot from now on."""
        ...

    def unsubscribe(self, sub: Subscription) -> None:
        """Stop delivering to `sub` and close it."""
        ...

    def set_setpoints(self, setpoints: SetpointInput, source: str = "setpoints") -> None:
        """Publish setpoints (validated; raises naming `source`)."""
        ...

    def first_snapshot(self, timeout: float | None = None) -> Snapshot | None:
        """Return the newest snapshot, waiting up to `timeout` s for one (None: none came)."""
        ...

    def start(self) -> None:
        """Start producing snapshots."""
        ...

    def stop(self, timeout: float = 5.0) -> None:
        """Stop and close every subscription."""
        ...

    def stale_reason(self, now_wall: float | None = None) -> str | None:
        """Why the data are stale or bad now, or None when they can be trusted."""
        ...

    def hand_reason(self) -> str | None:
        """How the plant runs other setpoints than those published, or None."""
        ...


class TwinPlant:
    """The real-time twin as the plant (the demo, and `serve --plant twin`)."""

    def __init__(self, realtime: RealtimeTwin) -> None:
        self.realtime = realtime
        self.spec = realtime.twin.spec

    @property
    def latest(self) -> Snapshot | None:
        """The newest snapshot the twin published, or None before its first tick."""
        return self.realtime.latest

    @property
    def error(self) -> BaseException | None:
        """The exception that stopped the pacing thread, or None."""
        return self.realtime.error

    @property
    def running(self) -> bool:
        """Whether the pacing thread is ticking."""
        return self.realtime.running

    @property
    def setpoints(self) -> np.ndarray:
        """The twin's setpoints in force `(n_scenarios, n_stations, 2)`."""
        return self.realtime.twin.setpoints

    def subscribe(self, maxsize: int = 64) -> Subscription:
        """See `RealtimeTwin.subscribe`."""
        return self.realtime.subscribe(maxsize)

    def unsubscribe(self, sub: Subscription) -> None:
        """See `RealtimeTwin.unsubscribe`."""
        self.realtime.unsubscribe(sub)

    def set_setpoints(self, setpoints: SetpointInput, source: str = "setpoints") -> None:
        """Apply setpoints from the twin's next tick on."""
        self.realtime.set_setpoints(setpoints, source)

    def first_snapshot(self, timeout: float | None = None) -> Snapshot | None:
        """The newest snapshot, or the twin's state now (never waits)."""
        latest = self.realtime.latest
        return latest if latest is not None else self.realtime.twin.snapshot()

    def start(self) -> None:
        """Start the pacing thread."""
        self.realtime.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the pacing thread and close every subscription."""
        self.realtime.stop(timeout)

    def stale_reason(self, now_wall: float | None = None) -> str | None:
        """A simulated line is never stale; a crashed one says so."""
        err = self.realtime.error
        return None if err is None else f"the twin failed: {err!r}"

    def hand_reason(self) -> str | None:
        """A simulated line runs exactly what was published."""
        return None


@dataclass(frozen=True)
class IngestResult:
    """What `ExternalPlant.ingest` did with a batch: new rows, resends ignored, and the plant
    time of the last accepted row so far (s; None before the first)."""

    accepted: int
    duplicates: int
    last_time_s: float | None


class ExternalPlant:
    """A real line fed with measured rows; see the module docstring.

    `stale_after_s`: the data are stale when no new row came for that many wall seconds, or
    the newest row follows the one before by more plant seconds. `hand_after_s`: plant
    seconds a difference between published and reported setpoints may last (the plant
    applying them) before it counts as running by hand. `recorder` (optional) receives every
    accepted row (`Recorder.write_block`); `stop()` closes it. `seed` or `rng` draw the hidden
    clocks of restored rows. `clock` is the wall clock (s, monotonic; tests pass a fake one).
    Thread-safe.
    """

    def __init__(
        self,
        spec: LineSpec,
        *,
        seed: int | None = None,
        rng: np.random.Generator | None = None,
        stale_after_s: float = 60.0,
        hand_after_s: float = 30.0,
        recorder: Recorder | None = None,
        physical_ranges: Mapping[str, tuple[float, float]] = PHYSICAL_RANGES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        for name, value in (("stale_after_s", stale_after_s), ("hand_after_s", hand_after_s)):
            if not (math.isfinite(value) and value > 0):
                raise ApiError(f"{name} must be a positive number of seconds, got {value!r}")
        self.spec = spec
        self.params = compile_params(spec)
        self.stale_after_s = float(stale_after_s)
        self.hand_after_s = float(hand_after_s)
        self.physical_ranges = dict(physical_ranges)
        self.recorder = recorder
        self.recording_error: BaseException | None = None
        """Why recording stopped (the rows are still ingested), or None."""
        self.error: BaseException | None = None
        self._rng = rng if rng is not None else np.random.default_rng(seed)
        self._clock = clock
        self._rows = PlantRows(spec)
        self._feed = threading.Lock()  # held through a whole batch
        self._lock = threading.RLock()  # held briefly: state read by other threads
        self._new = threading.Condition(self._lock)
        self._subs: list[Subscription] = []
        self._latest: Snapshot | None = None
        self._before_latest_s: float | None = None  # plant time of the row before the newest
        self._last_wall: float | None = None  # wall time of the last accepted row
        self._rejected: str | None = None  # the last rejected batch's error, until one is accepted
        self._measured = MeasuredLine(spec, self._rng, self.params)
        self._published: np.ndarray | None = None
        self._published_source: str | None = None
        self._published_at_s: float | None = None  # plant time of publication
        self._started = False
        self._stopped = False

    # -- feeding -----------------------------------------------------------------------------
    def ingest(self, rows: PlantRowsInput, source: str = "plant data") -> IngestResult:
        """Check a batch of rows (JSON objects or CSV text), publish a snapshot per new row.

        Raises `replay.errors.PlantDataError` (row and column named; nothing kept, and the
        data count as bad until a batch is accepted) and ApiError once the plant is stopped.
        """
        with self._feed:  # one batch at a time; readers wait only for the swap below
            if self._stopped:
                raise ApiError("the external plant is stopped: no more rows are taken")
            try:
                batch = self._rows.check(rows, source)
            except Exception as exc:
                with self._lock:
                    self._rejected = str(exc)
                raise
            if batch.accepted == 0:
                return IngestResult(0, batch.duplicates, self._rows.last_time_s)
            self._record(batch)
            snaps = self._measured.snapshots(batch)
            with self._lock:
                self._rejected = None
                self._last_wall = self._clock()
                previous = self._latest.time_s if self._latest is not None else None
                before = float(batch.time_s[-2]) if batch.accepted > 1 else previous
                self._before_latest_s = before
                self._latest = snaps[-1]
                subs = list(self._subs)
                self._new.notify_all()
            for snap in snaps:
                for sub in subs:
                    sub.put(snap)
            return IngestResult(batch.accepted, batch.duplicates, self._rows.last_time_s)

    def _record(self, batch: RowBatch) -> None:
        if self.recorder is None:
            return
        try:
            self.recorder.write_block(batch.time_s, batch.columns)
        except (RecordingError, OSError, ValueError) as exc:
            self.recording_error = exc
            self.recorder.abort()
            self.recorder = None

    # -- the seam ----------------------------------------------------------------------------
    @property
    def latest(self) -> Snapshot | None:
        """The snapshot of the newest accepted row, or None before the first."""
        return self._latest

    @property
    def running(self) -> bool:
        """Whether the plant is started and not stopped."""
        return self._started and not self._stopped

    @property
    def setpoints(self) -> np.ndarray:
        """Setpoints in force as the plant reports them `(1, n_stations, 2)` (0.0 where a
        station has none); the spec's nominal ones before the first row."""
        latest = self._latest
        if latest is None:
            return nominal_setpoints(self.params, 1)
        return latest.setpoints.copy()

    @property
    def published(self) -> np.ndarray | None:
        """The setpoints last published `(n_stations, 2)`, for the plant to apply, or None."""
        with self._lock:
            return None if self._published is None else self._published.copy()

    @property
    def published_source(self) -> str | None:
        """Who published `published` (the `source` of `set_setpoints`), or None."""
        return self._published_source

    @property
    def rows(self) -> int:
        """Rows accepted so far."""
        return self._rows.rows

    @property
    def duplicates(self) -> int:
        """Resent rows ignored so far."""
        return self._rows.duplicates

    def subscribe(self, maxsize: int = 64) -> Subscription:
        """Return a subscription that receives a snapshot per accepted row from now on."""
        sub = Subscription(maxsize)
        with self._lock:
            if self._stopped:
                sub.close()
            else:
                self._subs.append(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        """Stop delivering to `sub` and close it."""
        with self._lock:
            if sub in self._subs:
                self._subs.remove(sub)
        sub.close()

    def set_setpoints(self, setpoints: SetpointInput, source: str = "setpoints") -> None:
        """Publish setpoints: an array `(n_stations, 2)` or `(1, n_stations, 2)`, or
        `{station: {name: value}}` (unnamed ones nominal, as `Twin.set_setpoints`); validated
        against the spec (SetpointError naming `source`)."""
        if isinstance(setpoints, Mapping):
            sp = setpoints_from_mapping(self.spec, self.params, setpoints, 1, source)
        else:
            sp = np.array(setpoints, dtype=np.float64)
            if sp.ndim == 2:
                sp = sp[None]
            validate_setpoint_array(self.params, sp, source)
            if sp.shape[0] != 1:
                raise ApiError(f"{source}: {sp.shape[0]} scenarios given, the plant has 1")
            sp = np.where(self.params.present, sp, 0.0)
        with self._lock:
            self._published = sp[0].copy()
            self._published_source = source
            self._published_at_s = None if self._latest is None else self._latest.time_s

    def first_snapshot(self, timeout: float | None = None) -> Snapshot | None:
        """Return the newest snapshot, waiting up to `timeout` s for the first row."""
        with self._new:
            if self._latest is None and not self._stopped:
                self._new.wait(timeout)
            return self._latest

    def start(self) -> None:
        """Mark the plant running (rows are taken whether or not it is started)."""
        with self._lock:
            if self._stopped:
                raise ApiError("the external plant is stopped; make a new one")
            self._started = True

    def stop(self, timeout: float = 5.0) -> None:
        """Stop taking rows (after the batch in progress), close every subscription and the
        recorder. Idempotent."""
        with self._feed, self._lock:
            self._stopped = True
            subs, self._subs = list(self._subs), []
            recorder, self.recorder = self.recorder, None
            self._new.notify_all()
        for sub in subs:
            sub.close()
        if recorder is not None:
            recorder.close()

    # -- trust -------------------------------------------------------------------------------
    def stale_reason(self, now_wall: float | None = None) -> str | None:
        """Why the data are stale or bad now (`now_wall`: the wall clock's time, default
        now), or None: no row yet, a rejected last batch, no row for `stale_after_s` wall s,
        a gap of more than `stale_after_s` plant s before the newest row, or a valid reading
        of the newest row outside `physical_ranges`."""
        with self._lock:
            now = self._clock() if now_wall is None else now_wall
            latest = self._latest
            if self._rejected is not None:
                return f"the last batch of plant data was rejected: {self._rejected}"
            if latest is None or self._last_wall is None:
                return "no plant data received yet"
            quiet = now - self._last_wall
            if quiet > self.stale_after_s:
                return f"no new plant data for {quiet:.1f} s (wall; limit {self.stale_after_s:g} s)"
            before = self._before_latest_s
            if before is not None and latest.time_s - before > self.stale_after_s:
                return (
                    f"a gap of {latest.time_s - before:g} plant s before the newest row "
                    f"(limit {self.stale_after_s:g} s)"
                )
            return self._out_of_range(latest)

    def _out_of_range(self, snap: Snapshot) -> str | None:
        r = snap.readings
        for k, (name, channel) in enumerate(
            (
                ("temperature_c", r.temperature_c),
                ("power_kw", r.power_kw),
                ("vibration_mm_s", r.vibration_mm_s),
            )
        ):
            lo, hi = self.physical_ranges[name]
            with np.errstate(invalid="ignore"):
                bad = r.valid[0, :, k] & ((channel[0] < lo) | (channel[0] > hi))
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                st = self.spec.stations[i].name
                return (
                    f"reading {st}.{name} = {channel[0, i]:g} at {snap.time_s:g} s is outside "
                    f"its physical range [{lo:g}, {hi:g}]"
                )
        return None

    def hand_reason(self) -> str | None:
        """How the setpoints in force differ from the published ones, once the difference has
        lasted `hand_after_s` plant seconds (the plant is run by hand), else None."""
        with self._lock:
            latest, pub, at = self._latest, self._published, self._published_at_s
            if latest is None or pub is None:
                return None
            if at is not None and latest.time_s - at < self.hand_after_s:
                return None
            now = latest.setpoints[0]
            differ = self.params.present & ~np.isclose(now, pub, rtol=1e-9, atol=1e-9)
            if not differ.any():
                return None
            parts = [
                f"{self.spec.stations[i].name}.{SETPOINT_NAMES[j]} runs {now[i, j]:g} "
                f"(published {pub[i, j]:g})"
                for i, j in zip(*np.nonzero(differ), strict=True)
            ]
            shown = "; ".join(parts[:3]) + (
                f"; ... ({len(parts)} in all)" if len(parts) > 3 else ""
            )
            return f"the plant runs other setpoints than published: {shown}"
