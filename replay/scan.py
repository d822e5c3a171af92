"""Stream a recording once and pick its decision points: one every `cadence_s` of line time.

At each point the line is rebuilt from the recorded row (`twin.restore`): a one-copy snapshot
for the controllers, and every `start_every` points a snapshot of `seeds` copies, shifted to
time 0, that counterfactual runs fork from. Memory holds one chunk of the recording plus the
points (tiny: a few arrays per point), whatever the recording's length.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from linetwin.replay.errors import ReplayError
from linetwin.twin.errors import TwinError
from linetwin.twin.kpi import window_kpis
from linetwin.twin.params import LineParams, compile_params
from linetwin.twin.recorder import Recording, iter_recording
from linetwin.twin.restore import restore
from linetwin.twin.snapshot import Snapshot

KPI_NAMES = (
    "throughput_per_hour",
    "scrap_rate",
    "energy_kwh_per_good_part",
    "profit_per_hour",
)
CHUNK_TICKS = 4096


@dataclass(frozen=True)
class Point:
    """One decision point: the recorded line at `time_s` and what happened since the last.

    `snapshot` has one scenario (the recorded one); `recorded` are the setpoints in force
    `(n_stations, 2)`; `recent` the good parts/h since the previous point; `window` the
    recorded KPIs of that window (KPI_NAMES); `fork` the `seeds`-copy start of counterfactual
    runs (time shifted to 0), on every `start_every`-th point, else None.
    """

    index: int
    tick: int
    time_s: float
    snapshot: Snapshot
    recorded: np.ndarray
    recent: float
    window: dict[str, float]
    fork: Snapshot | None


def scan(
    path: str | Path,
    cadence_s: float,
    *,
    scenario: int = 0,
    seed: int = 0,
    seeds: int = 0,
    start_every: int = 60,
    on_progress: Callable[[int, int], None] | None = None,
) -> Iterator[Point]:
    """Yield the decision points of the recording at `path`, in time order.

    The first point is the first row at least `cadence_s` after the first recorded row (the
    controller needs a window of recent throughput); then one every `cadence_s`. `seed` drives
    the draws of the hidden clocks: one stream per point, so the same seed gives the same
    points. `on_progress(ticks_read, ticks_total)` is called after each chunk.
    """
    if not (np.isfinite(cadence_s) and cadence_s > 0):
        raise ReplayError(f"--cadence must be a positive number of s, got {cadence_s}")
    root = np.random.SeedSequence(seed)
    params: LineParams | None = None
    previous: Snapshot | None = None
    next_time: float | None = None
    count = read = 0
    total: int | None = None
    for chunk in iter_recording(path, batch_ticks=CHUNK_TICKS):
        if total is None:
            total = pq.ParquetFile(path).metadata.num_rows // max(chunk.n_scenarios, 1)
        if not 0 <= scenario < chunk.n_scenarios:
            raise ReplayError(
                f"{path}: --scenario {scenario} is not in the recording "
                f"(it has {chunk.n_scenarios} scenario(s))"
            )
        times = chunk.time_s
        if params is None:
            params = compile_params(chunk.spec)
        if next_time is None:
            next_time = float(times[0]) + cadence_s
            previous = _restore(chunk, 0, scenario, root, -1, 1, None, params)
        start = 0
        while True:
            hits = np.flatnonzero(times[start:] >= next_time - 1e-9)
            if hits.size == 0:
                break
            j = start + int(hits[0])
            snap = _restore(chunk, j, scenario, root, count, 1, None, params)
            assert previous is not None
            window = window_kpis(previous, snap)
            values = {k: float(getattr(window, k)[0]) for k in KPI_NAMES}
            fork = None
            if seeds > 0 and count % start_every == 0:
                fork = _restore(chunk, j, scenario, root, count, seeds, 0.0, params)
            yield Point(
                index=count,
                tick=int(chunk.tick[j]),
                time_s=float(times[j]),
                snapshot=snap,
                recorded=snap.setpoints[0].copy(),
                recent=values["throughput_per_hour"],
                window=values,
                fork=fork,
            )
            count += 1
            previous = snap
            next_time = float(times[j]) + cadence_s
            start = j + 1
        read += chunk.n_ticks
        if on_progress is not None:
            on_progress(read, max(total or 0, read))
    if next_time is None:
        raise ReplayError(f"{path}: the recording has no rows")


def _restore(
    chunk: Recording,
    j: int,
    scenario: int,
    root: np.random.SeedSequence,
    point: int,
    copies: int,
    time_s: float | None,
    params: LineParams,
) -> Snapshot:
    # One stream per (point, purpose): decisions and forks of a point draw independently.
    purpose = 0 if copies == 1 and time_s is None else 1
    stream = np.random.SeedSequence(root.entropy, spawn_key=(point + 1, purpose))
    rng = np.random.default_rng(stream)
    try:
        return restore(chunk, j, scenario, rng, copies, time_s=time_s, params=params)
    except TwinError as exc:
        raise ReplayError(f"recorded row {j}: {exc}") from None
