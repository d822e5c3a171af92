"""Compute a line's KPIs over a window between two snapshots of the same run."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from linetwin.twin import layout as L
from linetwin.twin.errors import TwinError
from linetwin.twin.snapshot import Snapshot


@dataclass(frozen=True)
class Kpis:
    """KPIs over a window of `hours`, per scenario `(n_scenarios,)` unless noted.

    throughput_per_hour: good parts per hour. scrap_per_hour: scrapped parts per hour.
    scrap_rate: scrapped / (good + scrapped).
    energy_kwh_per_hour, energy_kwh_per_good_part (NaN without good parts). profit_per_hour in
    the spec's currency. availability and utilisation `(n_scenarios, n_stations)`: share of
    the window not down, and busy. oee: good parts times the bottleneck's cycle time at rated
    speed (1.0) over the window.
    """

    hours: float
    throughput_per_hour: np.ndarray
    scrap_per_hour: np.ndarray
    scrap_rate: np.ndarray
    energy_kwh_per_hour: np.ndarray
    energy_kwh_per_good_part: np.ndarray
    profit_per_hour: np.ndarray
    availability: np.ndarray
    utilisation: np.ndarray
    oee: np.ndarray


def window_kpis(start: Snapshot, end: Snapshot) -> Kpis:
    """Return the KPIs of the window from `start` to `end` (same run, `end` later)."""
    dt = end.time_s - start.time_s
    if not dt > 0:
        raise TwinError(f"KPI window must have positive length (got {dt} s)")
    if start.state.fstate.shape != end.state.fstate.shape:
        raise TwinError("KPI window: snapshots come from runs of different shapes")
    hours = dt / 3600.0
    good = (end.good_out - start.good_out).astype(float)
    scrap = (end.scrap_total - start.scrap_total).astype(float)
    energy = (end.energy_kwh - start.energy_kwh).sum(axis=1)
    finished = good + scrap
    with np.errstate(invalid="ignore", divide="ignore"):
        scrap_rate = np.where(finished > 0, scrap / np.maximum(finished, 1), 0.0)
        per_part = np.where(good > 0, energy / np.maximum(good, 1), np.nan)
    eco = end.spec.economics
    profit = (
        good * eco.price_per_good_part
        - scrap * eco.cost_per_scrap_part
        - energy * eco.energy_price_per_kwh
    ) / hours
    times = end.status_time_s - start.status_time_s
    availability = 1.0 - times[:, :, L.DOWN] / dt
    utilisation = times[:, :, L.BUSY] / dt
    ideal = max(s.cycle_time_s for s in end.spec.stations)  # bottleneck at rated speed 1.0
    return Kpis(
        hours=hours,
        throughput_per_hour=good / hours,
        scrap_per_hour=scrap / hours,
        scrap_rate=scrap_rate,
        energy_kwh_per_hour=energy / hours,
        energy_kwh_per_good_part=per_part,
        profit_per_hour=profit,
        availability=availability,
        utilisation=utilisation,
        oee=good * ideal / dt,
    )
