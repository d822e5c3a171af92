"""A plant to connect to: a twin of a perturbed line that reports like a real line's gateway.

`linetwin plant emulate` runs it. The emulator runs a twin of the line spec with some of its
parameters off by hidden factors (`--mismatch cycle=1.15,scrap=1.2,mtbf=0.9`: the service
optimizes the nominal spec, the "real" line differs), paces it at `speed` times real time
(`twin.realtime.RealtimeTwin`), posts its snapshots as rows of the plant-log layout to
`POST URL/v1/plant/snapshots` (JSON `{"rows": [...]}`, bearer key) in batches, and applies the
setpoints it polls from `GET /v1/setpoints` (`api.client.SetpointPoller`).

    emu = Emulator(spec, "http://127.0.0.1:8000", key, mismatch=parse_mismatch("cycle=1.1"))
    emu.run(stop)                        # until `stop` is set (or `hours` of plant time)
    rows_from_snapshot(snap, spec)       # one row per scenario, JSON-ready

Rows that could not be posted (the service down, a timeout) are kept and posted again with the
next batch: a resend of rows the service already took is ignored there, so nothing is lost or
counted twice. A 4xx other than 408/429 is fatal (a wrong key, or rows the service refuses).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import httpx

from linetwin.api.client import PolledDecision, SetpointPoller
from linetwin.api.errors import ApiError, UsageError
from linetwin.replay.csv_export import rows_from_snapshot
from linetwin.twin.realtime import RealtimeTwin
from linetwin.twin.sim import Twin
from linetwin.twin.spec import LineSpec, parse_spec

__all__ = ["Emulator", "Mismatch", "parse_mismatch", "perturb", "rows_from_snapshot"]

SNAPSHOTS_PATH = "/v1/plant/snapshots"
RETRY_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
"""Answers after which the rows stay pending and are posted again; other errors are fatal."""


class PostError(ApiError):
    """The service answered a POST of rows with an error status (`status`)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Mismatch:
    """Factors on the spec's parameters for the emulated line (1.0: as specified).

    cycle: every `cycle_time_s`. scrap: every station's scrap probability (`base`, the speed
    and temperature gains, capped at 1). mtbf / mttr: the failure and repair means of stations
    that fail. energy: idle and running power.
    """

    cycle: float = 1.0
    scrap: float = 1.0
    mtbf: float = 1.0
    mttr: float = 1.0
    energy: float = 1.0


def parse_mismatch(text: str, source: str = "--mismatch") -> Mismatch:
    """Parse `name=factor,...` (names of `Mismatch`, factors positive); raise UsageError
    naming `source`, the entry and the value."""
    names = [f.name for f in fields(Mismatch)]
    values: dict[str, float] = {}
    for entry in (e.strip() for e in text.split(",")):
        if not entry:
            continue
        name, eq, value = (part.strip() for part in entry.partition("="))
        if not eq or name not in names:
            raise UsageError(
                f"{source}: {entry!r} is not NAME=FACTOR with NAME one of {', '.join(names)}"
            )
        if name in values:
            raise UsageError(f"{source}: {name} is given twice")
        try:
            factor = float(value)
        except ValueError:
            factor = math.nan
        if not (math.isfinite(factor) and factor > 0):
            raise UsageError(f"{source}: {name} must be a positive number, got {value!r}")
        values[name] = factor
    return Mismatch(**values)


def perturb(spec: LineSpec, mismatch: Mismatch) -> LineSpec:
    """Return `spec` with the mismatch's factors applied (same names, setpoints, limits)."""
    data = spec.model_dump()
    for st in data["stations"]:
        st["cycle_time_s"] *= mismatch.cycle
        if st.get("mtbf_s") is not None:
            st["mtbf_s"] *= mismatch.mtbf
            st["mttr_s"] *= mismatch.mttr
        scrap = st["scrap"]
        for key in ("base", "max"):
            scrap[key] = min(1.0, scrap[key] * mismatch.scrap)
        for key in ("speed_gain", "temperature_gain"):
            scrap[key] *= mismatch.scrap
        st["energy"]["idle_kw"] *= mismatch.energy
        st["energy"]["run_kw"] *= mismatch.energy
    return parse_spec(data, f"{spec.name} with mismatch {mismatch}")


@dataclass
class EmulatorStats:
    """What the emulator did: rows and batches posted, resends counted by the service as
    duplicates, failed posts, setpoints applied, the last error."""

    rows_posted: int = 0
    batches_posted: int = 0
    duplicates: int = 0
    post_errors: int = 0
    setpoints_applied: int = 0
    last_error: str | None = None
    versions: list[int] = field(default_factory=list)


class Emulator:
    """Run the emulated line and its gateway; see the module docstring.

    `tick_s`: plant seconds between rows. `batch_rows`: rows per POST (fewer when the
    emulator runs slower than that). `poll=False` leaves setpoints alone (no poller).
    `transport` replaces httpx's (tests). Randomness comes from `seed`.
    """

    def __init__(
        self,
        spec: LineSpec,
        url: str,
        key: str,
        *,
        mismatch: Mismatch | None = None,
        seed: int = 0,
        speed: float = 1.0,
        tick_s: float = 1.0,
        batch_rows: int = 10,
        poll: bool = True,
        timeout_s: float = 10.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if not key:
            raise UsageError("an API key is required (--key or LINETWIN_KEY)")
        if batch_rows < 1:
            raise UsageError(f"batch_rows must be at least 1, got {batch_rows}")
        self.spec = spec
        self.mismatch = mismatch if mismatch is not None else Mismatch()
        self.plant_spec = perturb(spec, self.mismatch)
        self.batch_rows = batch_rows
        self.realtime = RealtimeTwin(Twin(self.plant_spec, 1, seed=seed), tick_s, speed)
        self.stats = EmulatorStats()
        self._sub = self.realtime.subscribe(maxsize=1 << 20)
        self._pending: list[dict[str, Any]] = []
        self._client = httpx.Client(
            base_url=url.rstrip("/"),
            headers={"Authorization": f"Bearer {key}"},
            timeout=timeout_s,
            transport=transport,
        )
        self.poller = (
            SetpointPoller(url, key, apply=self.apply, transport=transport) if poll else None
        )

    def apply(self, decision: PolledDecision) -> None:
        """Apply a polled decision's setpoints to the emulated line (acknowledged as given)."""
        self.realtime.set_setpoints(decision.setpoints, f"decision {decision.version}")
        self.stats.setpoints_applied += 1
        self.stats.versions.append(decision.version)

    def post(self, rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """POST one batch of rows; return the service's JSON answer.

        Raises httpx.TransportError or PostError for an answer other than 2xx.
        """
        response = self._client.post(SNAPSHOTS_PATH, json={"rows": list(rows)})
        if response.status_code >= 300:
            raise PostError(
                f"POST {SNAPSHOTS_PATH}: {response.status_code} {response.text[:300]}",
                response.status_code,
            )
        answer = response.json() if response.content else {}
        return answer if isinstance(answer, dict) else {}

    def pump(self, force: bool = False) -> int:
        """Post what the twin produced, `batch_rows` rows at a time (a last, shorter batch
        only with `force`); return the rows posted. Rows of a failed post stay pending."""
        for snap in self._sub.drain():
            self._pending.extend(rows_from_snapshot(snap, self.spec))
        sent = 0
        while self._pending and (force or len(self._pending) >= self.batch_rows):
            batch = self._pending[: self.batch_rows]
            try:
                answer = self.post(batch)
            except (httpx.TransportError, PostError) as exc:
                self.stats.post_errors += 1
                self.stats.last_error = str(exc)
                if isinstance(exc, PostError) and exc.status not in RETRY_STATUS:
                    raise
                break
            del self._pending[: len(batch)]
            sent += len(batch)
            self.stats.rows_posted += len(batch)
            self.stats.batches_posted += 1
            self.stats.duplicates += int(answer.get("duplicates", 0) or 0)
        return sent

    @property
    def pending(self) -> int:
        """Rows produced and not yet posted."""
        return len(self._pending) + len(self._sub)

    def run(self, stop: threading.Event, hours: float | None = None) -> EmulatorStats:
        """Run the paced twin, the poller and the posting until `stop` is set or `hours` of
        plant time have passed; post what is left and return the stats.

        Raises PostError for a post the service refuses (401, 403, 422, ...) and ApiError
        when the poller meets a fatal answer (a wrong key or URL) or the twin fails.
        """
        poll_stop = threading.Event()
        poll_errors: list[BaseException] = []

        def poll() -> None:
            if self.poller is None:
                return
            try:
                self.poller.run(poll_stop)
            except Exception as exc:  # fatal for the emulator: reported by run()
                poll_errors.append(exc)

        poll_thread = threading.Thread(target=poll, name="linetwin-emulator-poll", daemon=True)
        poll_thread.start()
        self.realtime.start()
        end = math.inf if hours is None else hours * 3600.0
        try:
            while not stop.is_set():
                latest = self.realtime.latest
                if latest is not None and latest.time_s >= end:
                    break
                if self.realtime.error is not None:
                    raise ApiError(f"the emulated line failed: {self.realtime.error!r}")
                if poll_errors:
                    raise ApiError(f"polling setpoints failed: {poll_errors[0]}")
                self.pump()
                stop.wait(min(0.2, self.realtime.tick_s / self.realtime.acceleration))
        finally:
            self.realtime.stop()
            poll_stop.set()
        self.pump(force=True)
        return self.stats

    def close(self) -> None:
        """Close the HTTP connections."""
        self._client.close()
        if self.poller is not None:
            self.poller.close()
