"""Simulate a line for a while and summarise its KPIs: the job behind `linetwin simulate`."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from linetwin.twin.errors import TwinError
from linetwin.twin.kpi import Kpis, window_kpis
from linetwin.twin.sim import SetpointInput, Twin
from linetwin.twin.snapshot import Snapshot
from linetwin.twin.spec import LineSpec

Progress = Callable[[float], None]
"""Called with the fraction of the run done, from 0 to 1."""


@dataclass(frozen=True)
class SimulationResult:
    """KPIs of a simulation over its measured window (after the warm-up)."""

    spec: LineSpec
    kpis: Kpis
    scenarios: int
    seed: int | None
    sim_hours: float
    warmup_hours: float
    wall_seconds: float
    station_operations: int

    def summary(self) -> dict[str, Any]:
        """Return the JSON-ready summary: means over scenarios, 95% half-widths, per station."""
        k = self.kpis

        def mean(x: np.ndarray) -> float | None:
            m = float(np.nanmean(x)) if np.isfinite(x).any() else math.nan
            return m if math.isfinite(m) else None

        def half_width(x: np.ndarray) -> float | None:
            x = x[np.isfinite(x)]
            if x.size < 2:
                return None
            return float(1.96 * x.std(ddof=1) / math.sqrt(x.size))

        names = [s.name for s in self.spec.stations]
        return {
            "line": self.spec.name,
            "spec_hash": self.spec.spec_hash(),
            "scenarios": self.scenarios,
            "seed": self.seed,
            "sim_hours": self.sim_hours,
            "warmup_hours": self.warmup_hours,
            "throughput_per_hour": mean(k.throughput_per_hour),
            "scrap_rate": mean(k.scrap_rate),
            "energy_kwh_per_good_part": mean(k.energy_kwh_per_good_part),
            "energy_kwh_per_hour": mean(k.energy_kwh_per_hour),
            "profit_per_hour": mean(k.profit_per_hour),
            "currency": self.spec.economics.currency,
            "oee": mean(k.oee),
            "availability": [mean(k.availability[:, i]) for i in range(len(names))],
            "utilisation": [mean(k.utilisation[:, i]) for i in range(len(names))],
            "stations": names,
            "ci95": {
                "throughput_per_hour": half_width(k.throughput_per_hour),
                "scrap_rate": half_width(k.scrap_rate),
                "energy_kwh_per_good_part": half_width(k.energy_kwh_per_good_part),
                "profit_per_hour": half_width(k.profit_per_hour),
            },
            "station_operations": self.station_operations,
            "wall_seconds": self.wall_seconds,
        }


def simulate(
    spec: LineSpec,
    hours: float,
    *,
    scenarios: int = 1,
    seed: int | None = None,
    setpoints: SetpointInput | None = None,
    warmup_hours: float = 0.5,
    tick_s: float | None = None,
    on_tick: Callable[[Snapshot], Any] | None = None,
    progress: Progress | None = None,
    device: str = "cpu",
) -> SimulationResult:
    """Run `scenarios` copies of the line for `warmup_hours + hours` and measure `hours`.

    With `tick_s`, `on_tick` receives a snapshot every tick (warm-up included), e.g. a
    recorder's `write`. Without it the run goes in a few large kernel calls.
    """
    if not (math.isfinite(hours) and hours > 0):
        raise TwinError(f"hours must be a positive number, got {hours}")
    if not (math.isfinite(warmup_hours) and warmup_hours >= 0):
        raise TwinError(f"warm-up hours must be zero or more, got {warmup_hours}")
    t_wall = time.perf_counter()
    twin = Twin(spec, scenarios, seed=seed, setpoints=setpoints, device=device)
    total = (warmup_hours + hours) * 3600.0
    chunk = tick_s if tick_s is not None else max(total / 50.0, 1.0)
    if on_tick is not None:
        on_tick(twin.snapshot())

    def run_to(t_end: float) -> Snapshot:
        while twin.time_s < t_end - 1e-9:
            dt = min(chunk, t_end - twin.time_s)
            if on_tick is not None:
                on_tick(twin.step(dt))
            else:
                twin.advance(dt)
            if progress is not None:
                progress(twin.time_s / total)
        return twin.snapshot()

    start = run_to(warmup_hours * 3600.0)
    end = run_to(total)
    ops = int(end.completed.sum() - start.completed.sum())
    return SimulationResult(
        spec=spec,
        kpis=window_kpis(start, end),
        scenarios=scenarios,
        seed=seed,
        sim_hours=hours,
        warmup_hours=warmup_hours,
        wall_seconds=time.perf_counter() - t_wall,
        station_operations=ops,
    )
