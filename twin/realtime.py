"""Pace the batch twin against a clock and publish its snapshots to subscribers.

Pacing is a wrapper: `RealtimeTwin` owns a `Twin`, steps it by `tick_s` of line time every
`tick_s / acceleration` seconds of wall time, and hands each snapshot to every subscription.
A subscription is a bounded queue: when a subscriber falls behind, its oldest snapshots are
dropped and counted, and the twin never waits for it.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from linetwin.twin.errors import TwinError
from linetwin.twin.sim import SetpointInput, Twin
from linetwin.twin.snapshot import Snapshot


class Subscription:
    """A bounded queue of snapshots for one subscriber; the oldest are dropped when full."""

    def __init__(self, maxsize: int) -> None:
        if maxsize < 1:
            raise TwinError(f"subscription queue size must be at least 1, got {maxsize}")
        self._items: deque[Snapshot] = deque()
        self._maxsize = maxsize
        self._cond = threading.Condition()
        self.dropped = 0
        self.closed = False

    def put(self, snap: Snapshot) -> None:
        """Queue a snapshot, dropping the oldest if the queue is full. Never blocks."""
        with self._cond:
            if len(self._items) >= self._maxsize:
                self._items.popleft()
                self.dropped += 1
            self._items.append(snap)
            self._cond.notify_all()

    def get(self, timeout: float | None = None) -> Snapshot | None:
        """Return the oldest queued snapshot, waiting up to `timeout` s; None if none came."""
        with self._cond:
            if not self._items and not self.closed:
                self._cond.wait(timeout)
            return self._items.popleft() if self._items else None

    def latest(self) -> Snapshot | None:
        """Return the newest queued snapshot and discard the rest (counted as dropped)."""
        with self._cond:
            if not self._items:
                return None
            snap = self._items.pop()
            self.dropped += len(self._items)
            self._items.clear()
            return snap

    def drain(self) -> list[Snapshot]:
        """Return every queued snapshot, oldest first, and empty the queue (never blocks)."""
        with self._cond:
            items = list(self._items)
            self._items.clear()
            return items

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)

    def close(self) -> None:
        """Stop waiting: wakes a blocked `get`."""
        with self._cond:
            self.closed = True
            self._cond.notify_all()

    def __iter__(self) -> Iterator[Snapshot]:
        """Yield snapshots until the subscription is closed and drained."""
        while True:
            snap = self.get(timeout=0.5)
            if snap is not None:
                yield snap
            elif self.closed:
                return


@dataclass
class PacingStats:
    """How the clock kept up: ticks run, ticks that started late, worst lag in wall s."""

    ticks: int = 0
    late_ticks: int = 0
    max_lag_s: float = 0.0


class RealtimeTwin:
    """Run a `Twin` at `acceleration` times wall-clock speed, one snapshot per `tick_s`."""

    def __init__(
        self,
        twin: Twin,
        tick_s: float = 1.0,
        acceleration: float = 1.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        if not (math.isfinite(tick_s) and tick_s > 0):
            raise TwinError(f"tick_s must be a positive number of seconds, got {tick_s}")
        if not (math.isfinite(acceleration) and acceleration > 0):
            raise TwinError(f"acceleration must be a positive number, got {acceleration}")
        self.twin = twin
        self.tick_s = float(tick_s)
        self.acceleration = float(acceleration)
        self.stats = PacingStats()
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._subs: list[Subscription] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.latest: Snapshot | None = None
        self.error: BaseException | None = None

    def subscribe(self, maxsize: int = 64) -> Subscription:
        """Return a new subscription that receives every snapshot from now on."""
        sub = Subscription(maxsize)
        with self._lock:
            self._subs.append(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        """Stop delivering to `sub` and close it."""
        with self._lock:
            if sub in self._subs:
                self._subs.remove(sub)
        sub.close()

    def set_setpoints(self, setpoints: SetpointInput, source: str = "setpoints") -> None:
        """Apply new setpoints from the next tick on (validated now; thread-safe)."""
        with self._lock:
            self.twin.set_setpoints(setpoints, source)

    def tick(self) -> Snapshot:
        """Advance the twin by one tick and publish the snapshot (no pacing)."""
        with self._lock:
            snap = self.twin.step(self.tick_s)
            subs = list(self._subs)
        self.latest = snap
        for sub in subs:
            sub.put(snap)
        self.stats.ticks += 1
        return snap

    def run(self, n_ticks: int | None = None) -> None:
        """Run paced ticks in this thread until `stop()` or `n_ticks` ticks."""
        period = self.tick_s / self.acceleration
        start = self._clock()
        k = 0
        while not self._stop.is_set() and (n_ticks is None or k < n_ticks):
            due = start + k * period
            lag = self._clock() - due
            if lag > 0.0:
                if lag > period:
                    self.stats.late_ticks += 1
                self.stats.max_lag_s = max(self.stats.max_lag_s, lag)
            elif self._sleep is not None:
                self._sleep(-lag)
            elif self._stop.wait(-lag):  # sleeping, but stop() wakes it at once
                break
            self.tick()
            k += 1

    @property
    def running(self) -> bool:
        """Whether the background thread is ticking."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Run paced ticks in a background thread."""
        if self._thread is not None and self._thread.is_alive():
            raise TwinError("the real-time twin is already running")
        self._stop.clear()

        def target() -> None:
            try:
                self.run()
            except BaseException as exc:  # surfaced to the owner through `error`
                self.error = exc
                raise

        self._thread = threading.Thread(target=target, name="linetwin-realtime", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the background thread and close every subscription."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise TwinError(f"the real-time twin did not stop within {timeout} s")
            self._thread = None
        with self._lock:
            subs, self._subs = list(self._subs), []
        for sub in subs:
            sub.close()
