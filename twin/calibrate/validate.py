"""Validate a fitted line spec on the held-out tail of the log.

From the recorded row where the held-out tail starts, the line is rebuilt (`twin.restore`) in
`replications` copies of one batched twin, run under the log's own setpoint schedule to the end
of the log, and compared with what the plant did over the same time: throughput, scrap rate,
energy per good part, each station's busy / blocked / starved / down shares and each buffer's
mean level. The twin's 95% interval is the 2.5% to 97.5% quantile range over replications (a
prediction interval: the plant's tail is one more run), and each row says whether the plant
falls inside it. The skeleton as given goes through the same comparison.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from linetwin.twin import layout as L
from linetwin.twin.params import compile_params
from linetwin.twin.recorder import Recording
from linetwin.twin.restore import restore
from linetwin.twin.sim import Twin
from linetwin.twin.spec import LineSpec

MAX_SAMPLES = 120  # buffer levels of the twin are sampled this often over the tail


@dataclass
class Holdout:
    """The held-out tail of one scenario of a log, gathered while streaming: its first row (a
    one-tick `Recording`), its setpoint changes, and the plant's sums over it."""

    start: Recording | None = None
    changes: list[tuple[float, np.ndarray]] = field(default_factory=list)
    t0: float = math.nan
    t1: float = math.nan
    good0: float = 0.0
    good1: float = 0.0
    scrap0: float = 0.0
    scrap1: float = 0.0
    energy0: float = 0.0
    energy1: float = 0.0
    status_s: np.ndarray | None = None
    level_sum: np.ndarray | None = None
    n_rows: int = 0
    _last_sp: np.ndarray | None = None
    _last_t: float = math.nan

    def feed(self, chunk: Recording, lo: int, scenario: int = 0) -> None:
        """Add rows `lo:` of `chunk` (the first call's first row starts the tail)."""
        c = chunk
        s = scenario
        if lo >= c.n_ticks:
            return
        sp = np.stack([c.speed[:, s], c.temperature_setpoint_c[:, s]], axis=-1)  # (T, n, 2)
        times = c.time_s
        i = lo
        if self.start is None:
            self.start = _one_row(c, lo)
            self.t0 = self.t1 = float(times[lo])
            self.good0 = self.good1 = float(c.good_out[lo, s])
            self.scrap0 = self.scrap1 = float(c.scrap_total[lo, s])
            self.energy0 = self.energy1 = float(c.energy_kwh[lo, s].sum())
            n = c.n_stations
            self.status_s = np.zeros((n, L.N_STATUS))
            self.level_sum = np.zeros(max(n - 1, 0))
            self._last_sp = sp[lo]
            self._last_t = float(times[lo])
            i = lo + 1
        if i >= c.n_ticks:
            return
        assert self.status_s is not None and self.level_sum is not None
        dt = np.diff(np.r_[self._last_t, times[i:]])
        st = c.status[i:, s]
        for code in range(L.N_STATUS):
            self.status_s[:, code] += ((st == code) * dt[:, None]).sum(axis=0)
        self.level_sum += c.buffer_level[i:, s].sum(axis=0)
        self.n_rows += c.n_ticks - i
        prev = np.r_[self._last_sp[None], sp[i:-1]] if self._last_sp is not None else sp[i:]
        same = np.isclose(sp[i:], prev, equal_nan=True).all(axis=(1, 2))
        prev_t = np.r_[self._last_t, times[i:-1]]
        for k in np.flatnonzero(~same).tolist():
            self.changes.append((float(prev_t[k]), sp[i + k].copy()))
        self._last_sp = sp[-1]
        self._last_t = float(times[-1])
        self.t1 = float(times[-1])
        self.good1 = float(c.good_out[-1, s])
        self.scrap1 = float(c.scrap_total[-1, s])
        self.energy1 = float(c.energy_kwh[-1, s].sum())

    @property
    def duration_s(self) -> float:
        """Length of the tail, s."""
        return self.t1 - self.t0

    def plant(self) -> dict[str, np.ndarray]:
        """The plant's KPIs over the tail, in `_kpis`' layout."""
        assert self.status_s is not None and self.level_sum is not None
        hours = self.duration_s / 3600.0
        good = self.good1 - self.good0
        scrap = self.scrap1 - self.scrap0
        energy = self.energy1 - self.energy0
        return {
            "throughput_per_hour": np.array([good / hours]),
            "scrap_rate": np.array([scrap / (good + scrap) if good + scrap > 0 else 0.0]),
            "energy_kwh_per_good_part": np.array([energy / good if good > 0 else math.nan]),
            "shares": (self.status_s / self.duration_s)[None],
            "buffer_mean": (self.level_sum / max(self.n_rows, 1))[None],
        }


def _one_row(c: Recording, i: int) -> Recording:
    arrays = {
        f.name: getattr(c, f.name)[i : i + 1]
        for f in dataclasses.fields(c)
        if f.name not in ("spec", "meta")
    }
    return Recording(spec=c.spec, meta=c.meta, **arrays)


def simulate_tail(
    spec: LineSpec, hold: Holdout, replications: int, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """Run `spec` from the tail's first row under its setpoint schedule; KPIs per replication."""
    assert hold.start is not None
    row = dataclasses.replace(hold.start, spec=spec)
    lp = compile_params(spec)
    snap = restore(row, 0, 0, rng, copies=replications, params=lp)
    twin = Twin(spec, replications, rng=rng, state=snap.state.copy(), time_s=snap.time_s)
    twin.set_setpoints(snap.setpoints)
    start = twin.snapshot()
    n = spec.n_stations
    step = max(hold.duration_s / MAX_SAMPLES, 1e-9)
    times = np.arange(hold.t0 + step, hold.t1 + 0.5 * step, step)
    change_t = [t for t, _ in hold.changes]
    events = sorted({*times.tolist(), *[t for t in change_t if hold.t0 <= t < hold.t1], hold.t1})
    levels = np.zeros((replications, max(n - 1, 0)))
    samples = 0
    ci = 0
    sample_set = set(times.tolist())
    now = hold.t0
    while ci < len(hold.changes) and hold.changes[ci][0] <= now:
        _apply(twin, lp.present, hold.changes[ci][1])
        ci += 1
    end = start
    for t in events:
        if t > now:
            twin.advance(t - now)
            now = t
        if t in sample_set or t == hold.t1:
            end = twin.snapshot()
            levels += end.buffer_level
            samples += 1
        while ci < len(hold.changes) and hold.changes[ci][0] <= now:
            _apply(twin, lp.present, hold.changes[ci][1])
            ci += 1
    end = twin.snapshot()
    dt = end.time_s - start.time_s
    good = (end.good_out - start.good_out).astype(float)
    scrap = (end.scrap_total - start.scrap_total).astype(float)
    energy = (end.energy_kwh - start.energy_kwh).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        rate = np.where(good + scrap > 0, scrap / np.maximum(good + scrap, 1), 0.0)
        per_part = np.where(good > 0, energy / np.maximum(good, 1), np.nan)
    return {
        "throughput_per_hour": good / (dt / 3600.0),
        "scrap_rate": rate,
        "energy_kwh_per_good_part": per_part,
        "shares": (end.status_time_s - start.status_time_s) / dt,
        "buffer_mean": levels / max(samples, 1),
    }


def _apply(twin: Twin, present: np.ndarray, sp: np.ndarray) -> None:
    twin.set_setpoints(np.where(present, np.nan_to_num(sp, nan=0.0), 0.0), "logged setpoints")


def _interval(v: np.ndarray) -> dict[str, float | None]:
    f = v[np.isfinite(v)]
    if f.size == 0:
        return {"mean": None, "low": None, "high": None}
    return {
        "mean": float(f.mean()),
        "low": float(np.quantile(f, 0.025)),
        "high": float(np.quantile(f, 0.975)),
    }


def comparison_table(
    spec: LineSpec, plant: dict[str, np.ndarray], twins: dict[str, dict[str, np.ndarray]]
) -> list[dict[str, Any]]:
    """Rows `{kpi, station, plant, <twin name>: {mean, low, high, inside}}` for every KPI."""
    rows: list[dict[str, Any]] = []

    def add(kpi: str, station: str | None, value: float, get: Any) -> None:
        row: dict[str, Any] = {
            "kpi": kpi,
            "station": station,
            "plant": value if math.isfinite(value) else None,
        }
        for name, res in twins.items():
            iv = _interval(get(res))
            inside = (
                None
                if iv["low"] is None or not math.isfinite(value)
                else bool(iv["low"] - 1e-12 <= value <= iv["high"] + 1e-12)  # type: ignore[operator]
            )
            row[name] = {**iv, "inside": inside}
        rows.append(row)

    for kpi in ("throughput_per_hour", "scrap_rate", "energy_kwh_per_good_part"):
        add(kpi, None, float(plant[kpi][0]), lambda r, k=kpi: r[k])
    names = [s.name for s in spec.stations]
    for j, name in enumerate(names):
        for code, status in enumerate(L.STATUS_NAMES):
            add(f"{status}_share", name, float(plant["shares"][0, j, code]),
                lambda r, j=j, c=code: r["shares"][:, j, c])  # fmt: skip
    for j, name in enumerate(names[:-1]):
        add("buffer_mean", name, float(plant["buffer_mean"][0, j]),
            lambda r, j=j: r["buffer_mean"][:, j])  # fmt: skip
    return rows


def coverage(rows: list[dict[str, Any]], name: str) -> dict[str, Any]:
    """How many rows of twin `name` hold the plant's value inside the twin's interval."""
    judged = [r[name]["inside"] for r in rows if r[name]["inside"] is not None]
    return {"inside": int(sum(judged)), "rows": len(judged)}
