"""Compute a line's KPIs over a window between two snapshots of the same run."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from linetwin.twin import layout as L
from linetwin.twin.errors import TwinError
from linetwin.twin.snapshot import Snapshot
from linetwin.twin.spec import LineSpec


@dataclass(frozen=True)
class Kpis:
    """KPIs over a window of `hours`, per scenario `(n_scenarios,)` unless noted.

    throughput_per_hour: good parts per hour. scrap_per_hour: scrapped parts per hour.
    scrap_rate: scrapped / (good + scrapped).
    energy_kwh_per_hour, energy_kwh_per_good_part (NaN without good parts). profit_per_hour in
    the spec's currency. availability and utilisation `(n_scenarios, n_stations)`: share of
    the window not down, and busy. oee, oee_availability, oee_performance, oee_quality: the
    line's overall equipment effectiveness as ISO 22400-2 defines it, availability x
    performance x quality, each in [0, 1] (see `oee_parts`).
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
    oee_availability: np.ndarray
    oee_performance: np.ndarray
    oee_quality: np.ndarray


def ideal_cycle_s(spec: LineSpec) -> tuple[float, int]:
    """Return (the line's ideal time per part, s; its constraint station's index).

    The fastest rate the line is allowed to run is that of its slowest station at its maximum
    speed setpoint: `max_i cycle_time_s[i] / speed.max[i]` seconds per part (ISO 22400's
    planned run time per item). The constraint is the first station with that time.
    """
    per_part = [s.cycle_time_s / s.setpoints.speed.max for s in spec.stations]
    worst = max(per_part)
    return worst, per_part.index(worst)


def oee_parts(
    spec: LineSpec, dt_s: float, good: np.ndarray, scrap: np.ndarray, constraint_down_s: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return ISO 22400 (availability, performance, quality) of a window, each `(n,)` in [0, 1].

    The line is one work unit and the whole window is planned busy time (PBT = `dt_s`).
    Availability = APT / PBT, with APT the window less the time the constraint station (see
    `ideal_cycle_s`) was down: no station is faster than it, so its downtime is production
    time the line loses for good. Performance (ISO's effectiveness) = produced quantity (good
    plus scrapped parts) x ideal time per part / APT, against the fastest allowed rate, so 1
    means the line ran at its maximum speeds whenever the constraint was up; it is capped at 1,
    which binds only in short windows where work in progress drained faster than the
    constraint's mean rate, or random processing times ran short. Quality = good / produced
    (1 when nothing was produced). OEE is their product, so it is in [0, 1] too.
    """
    ideal, _ = ideal_cycle_s(spec)
    availability = np.clip(1.0 - constraint_down_s / dt_s, 0.0, 1.0)
    produced = good + scrap
    apt = availability * dt_s
    with np.errstate(invalid="ignore", divide="ignore"):
        perf = np.where(apt > 0, produced * ideal / np.maximum(apt, 1e-300), 0.0)
        quality = np.where(produced > 0, good / np.maximum(produced, 1), 1.0)
    return availability, np.minimum(perf, 1.0), quality


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
    _, constraint = ideal_cycle_s(end.spec)
    a, p, q = oee_parts(end.spec, dt, good, scrap, times[:, constraint, L.DOWN])
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
        oee=a * p * q,
        oee_availability=a,
        oee_performance=p,
        oee_quality=q,
    )
