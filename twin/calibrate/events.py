"""Extract what a calibration needs from a recording, in one streamed pass.

`LogScan` takes consecutive chunks of one scenario of a recording (`feed`) and keeps, per
station, only sums and small tables, so memory does not grow with the log's length (except
for the lists of failures and repairs, one entry per event):

- busy work (busy time x speed, s) and parts finished, per block of `BLOCK_TICKS` ticks (the
  batches of the batch-means standard error) and per speed level;
- clean processing intervals: log intervals between two completions while the station stayed
  busy at one speed without failing, counted by (length in intervals, speed);
- busy time between failures (with the age at the start of the log from the `wear` column as
  left truncation, and the busy time since the last failure at the end as censoring), and
  repair times from the runs of `down` (the run going on at the end censored; a run already
  going on when the log starts is dropped: its start is unknown);
- scrap: the sufficient statistics of the regression of scrapped on finished parts against
  (1, speed excess², temperature excess²);
- power readings by status and speed level (heating taken off with the skeleton's heater);
- lagged temperature pairs of thermal stations while their setpoint holds.

Statuses are sampled at each row: a status held at row k is taken to hold over the interval
that ends there, so times are unbiased sampling estimates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from linetwin.twin import layout as L
from linetwin.twin.spec import LineSpec

BLOCK_TICKS = 256
SPEED_QUANTUM = 1e-3  # speed levels are told apart to this resolution
MIN_TRANSIENT_C = 3.0  # temperature pairs nearer their setpoint than this carry no signal


@dataclass(frozen=True)
class Rows:
    """One scenario's rows of consecutive ticks: `tick (T,)` global tick indices, `time_s
    (T,)`, and per-station arrays `(T, n_stations)` as in `twin.recorder.Recording`."""

    tick: np.ndarray
    time_s: np.ndarray
    status: np.ndarray
    completed: np.ndarray
    scrapped: np.ndarray
    failures: np.ndarray
    speed: np.ndarray
    temperature_setpoint_c: np.ndarray
    temperature_c: np.ndarray
    temperature_valid: np.ndarray
    power_kw: np.ndarray
    power_valid: np.ndarray
    wear: np.ndarray
    buffer_level: np.ndarray  # (T, n_stations - 1)

    def take(self, sel: slice) -> Rows:
        """The rows `sel`."""
        return Rows(**{k: getattr(self, k)[sel] for k in self.__dataclass_fields__})

    @property
    def n(self) -> int:
        """Number of rows."""
        return int(self.tick.shape[0])


@dataclass
class Segments:
    """Observations of a lifetime per station: start age, end age (s), event flag."""

    start: list[list[float]]
    end: list[list[float]]
    event: list[list[bool]]

    @classmethod
    def empty(cls, n: int) -> Segments:
        """No observations for `n` stations."""
        return cls([[] for _ in range(n)], [[] for _ in range(n)], [[] for _ in range(n)])

    def add(self, j: int, start: float, end: float, event: bool) -> None:
        """Record one observation of station `j`."""
        self.start[j].append(start)
        self.end[j].append(end)
        self.event[j].append(event)


@dataclass
class LogScan:
    """Streaming sums of the fitting part of one scenario of a log (see the module text)."""

    spec: LineSpec
    dt: float
    n_rows: int = 0
    first_time_s: float = math.nan
    last_time_s: float = math.nan
    # per block: busy work (s at speed 1) and parts, lists of (n,) arrays
    block_work: list[np.ndarray] = field(default_factory=list)
    block_parts: list[np.ndarray] = field(default_factory=list)
    # (station, speed level) -> [busy time s, parts]
    by_speed: dict[tuple[int, int], list[float]] = field(default_factory=dict)
    # (station, d, speed level) -> count of clean intervals
    intervals: dict[tuple[int, int, int], int] = field(default_factory=dict)
    failures: Segments = field(init=False)
    repairs: Segments = field(init=False)
    # scrap regression sums per station
    scrap_a: np.ndarray = field(init=False)
    scrap_b: np.ndarray = field(init=False)
    scrap_m3: np.ndarray = field(init=False)
    scrap_parts: np.ndarray = field(init=False)  # (n, 3): all, above nominal, outside window
    scrap_count: np.ndarray = field(init=False)
    # power: (station, speed level) -> [sum, sum sq, count] while busy; idle per station
    power_busy: dict[tuple[int, int], list[float]] = field(default_factory=dict)
    power_idle: np.ndarray = field(init=False)
    # thermal: per station [sum xy, sum xx, sum yy, n, sum lag s]
    thermal: dict[int, list[float]] = field(default_factory=dict)
    speed_changes: np.ndarray = field(init=False)
    temperature_changes: np.ndarray = field(init=False)
    _prev: Rows | None = None
    _break_count: np.ndarray = field(init=False)
    _last_event_tick: np.ndarray = field(init=False)
    _last_event_break: np.ndarray = field(init=False)
    _last_event_ok: np.ndarray = field(init=False)
    _age: np.ndarray = field(init=False)
    _age0: np.ndarray = field(init=False)
    _first_life: np.ndarray = field(init=False)
    _down_s: np.ndarray = field(init=False)
    _down_since: np.ndarray = field(init=False)
    _lag_rows: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = self.spec.n_stations
        self.failures = Segments.empty(n)
        self.repairs = Segments.empty(n)
        self.scrap_a = np.zeros((n, 3, 3))
        self.scrap_b = np.zeros((n, 3))
        self.scrap_m3 = np.zeros((n, 3, 3, 3))
        self.scrap_parts = np.zeros((n, 3))
        self.scrap_count = np.zeros(n)
        self.power_idle = np.zeros((n, 3))
        self.speed_changes = np.zeros(n, dtype=np.int64)
        self.temperature_changes = np.zeros(n, dtype=np.int64)
        self._break_count = np.zeros(n, dtype=np.int64)
        self._last_event_tick = np.full(n, -1, dtype=np.int64)
        self._last_event_break = np.zeros(n, dtype=np.int64)
        self._last_event_ok = np.zeros(n, dtype=bool)
        caps = [s.buffer_after or 0 for s in self.spec.stations[:-1]]
        self._capacity = np.array(caps, dtype=np.int64)
        self._age = np.zeros(n)
        self._age0 = np.zeros(n)
        self._first_life = np.ones(n, dtype=bool)
        self._down_s = np.zeros(n)
        self._down_since = np.full(n, math.nan)  # down seconds at the start of the run
        st = self.spec.stations
        self._nominal = np.array([s.setpoints.speed.nominal for s in st])
        self._thermal = np.array([s.thermal is not None for s in st])
        lo = np.array([s.thermal.ideal_min_c if s.thermal else np.nan for s in st])
        hi = np.array([s.thermal.ideal_max_c if s.thermal else np.nan for s in st])
        self._window = (lo, hi)
        heat = np.zeros(len(st))
        amb = np.zeros(len(st))
        for j, s in enumerate(st):
            temp = s.setpoints.temperature
            if s.thermal is not None and temp is not None:
                heat[j] = s.thermal.heater_kw / (temp.max - s.thermal.ambient_c)
                amb[j] = s.thermal.ambient_c
        self._heat = (heat, amb)
        self._lag = {
            j: max(1, round(0.5 * s.thermal.time_constant_s / self.dt))
            for j, s in enumerate(st)
            if s.thermal is not None
        }

    # ------------------------------------------------------------------ feeding

    def feed(self, rows: Rows) -> None:
        """Add the next rows (consecutive with the rows fed before)."""
        if rows.n == 0:
            return
        if self._prev is None:
            self.first_time_s = float(rows.time_s[0])
            self._age0 = np.maximum(rows.wear[0], 0.0) * 3600.0
            self._down_since = np.where(rows.status[0] == L.DOWN, -1.0, math.nan)
            self._prev = rows.take(slice(0, 1))
            self._thermal_pairs(rows)
            rows = rows.take(slice(1, None))
            self.n_rows = 1
            if rows.n == 0:
                self.last_time_s = self.first_time_s
                return
        else:
            self._thermal_pairs(rows)
        prev = self._prev
        assert prev is not None
        ext = _concat(prev, rows)
        self._accumulate(ext)
        self._prev = rows.take(slice(rows.n - 1, rows.n))
        self.n_rows += rows.n
        self.last_time_s = float(rows.time_s[-1])

    def _accumulate(self, e: Rows) -> None:
        n = self.spec.n_stations
        dt = np.diff(e.time_s)  # (T,)
        inc = np.diff(e.completed, axis=0)
        sinc = np.diff(e.scrapped, axis=0)
        finc = np.diff(e.failures, axis=0)
        st = e.status[1:]
        sp = e.speed[1:]
        busy = st == L.BUSY
        bt = busy * dt[:, None]
        spchange = e.speed[1:] != e.speed[:-1]
        self.speed_changes += spchange.sum(axis=0)
        tch = (e.temperature_setpoint_c[1:] != e.temperature_setpoint_c[:-1]) & np.isfinite(
            e.temperature_setpoint_c[1:]
        )
        self.temperature_changes += tch.sum(axis=0)
        level = np.rint(sp / SPEED_QUANTUM).astype(np.int64)
        self._blocks(e.tick[1:], bt * sp, inc)
        # busy time and parts per speed level
        key = (level * n + np.arange(n)[None, :]).reshape(-1)
        uk, inv = np.unique(key, return_inverse=True)
        bsum = np.bincount(inv, weights=bt.reshape(-1), minlength=uk.size)
        psum = np.bincount(inv, weights=inc.reshape(-1).astype(float), minlength=uk.size)
        for k, b, p in zip(uk.tolist(), bsum.tolist(), psum.tolist(), strict=True):
            acc = self.by_speed.setdefault((k % n, k // n), [0.0, 0.0])
            acc[0] += b
            acc[1] += p
        self._intervals(e, inc, finc, spchange, level, self._free_flow(e))
        self._lifetimes(e, bt, finc, st, dt)
        self._scrap(inc, sinc, sp, e.temperature_c[1:], e.temperature_valid[1:])
        self._power(st, level, e.power_kw[1:], e.power_valid[1:], e)

    def _blocks(self, tick: np.ndarray, work: np.ndarray, inc: np.ndarray) -> None:
        block = tick // BLOCK_TICKS
        starts = np.flatnonzero(np.r_[True, block[1:] != block[:-1]])
        w = np.add.reduceat(work, starts, axis=0)
        p = np.add.reduceat(inc.astype(float), starts, axis=0)
        first = int(block[0])
        for i in range(starts.size):
            if i == 0 and len(self.block_work) > first:
                self.block_work[first] += w[0]
                self.block_parts[first] += p[0]
                continue
            self.block_work.append(w[i])
            self.block_parts.append(p[i])

    def _free_flow(self, e: Rows) -> np.ndarray:
        """`(T, n)`: how many parts a station finishing parts in the interval before row k
        could surely start at once and pass on: parts in the buffer in front (plus one held by
        a blocked station upstream) and places behind (plus one for a starved station
        downstream), judged on row k - 1 (only this station takes from the buffer in front
        and fills the one behind, so neither gets worse before its completions). A part that
        starts at a completion is tracked only when it surely started there: the j-th
        completion of an interval needs j; the decision never depends on the part's own time,
        so tracking does not bias the processing times, and they are not lengthened by a wait
        shorter than the log interval."""
        lev = e.buffer_level[:-1]
        st = e.status[:-1]
        t = lev.shape[0]
        n = self.spec.n_stations
        big = np.iinfo(np.int64).max // 4
        avail = np.full((t, n), big, dtype=np.int64)
        room = np.full((t, n), big, dtype=np.int64)
        if n > 1:
            avail[:, 1:] = lev + (st[:, :-1] == L.BLOCKED)
            room[:, :-1] = self._capacity[None, :] - lev + (st[:, 1:] == L.STARVED)
        return np.minimum(avail, room)

    def _intervals(
        self,
        e: Rows,
        inc: np.ndarray,
        finc: np.ndarray,
        spchange: np.ndarray,
        level: np.ndarray,
        free: np.ndarray,
    ) -> None:
        brk = (e.status[:-1] != L.BUSY) | spchange | (finc > 0)
        cum = self._break_count[None, :] + np.cumsum(brk, axis=0)
        jj, tt = np.nonzero(inc.T > 0)  # station-major, ticks in order
        if jj.size:
            ticks = e.tick[1:][tt]
            cev = cum[tt, jj]
            first = np.r_[True, jj[1:] != jj[:-1]]
            prev_tick = np.where(first, self._last_event_tick[jj], np.r_[0, ticks[:-1]])
            prev_brk = np.where(first, self._last_event_break[jj], np.r_[0, cev[:-1]])
            m = inc[tt, jj]
            fr = free[tt, jj] >= m  # the part started at the last completion is tracked
            prev_free = np.where(first, self._last_event_ok[jj], np.r_[False, fr[:-1]])
            ok = (prev_tick >= 0) & (cev == prev_brk) & prev_free
            d = ticks - prev_tick
            lev = level[tt, jj]
            # parts started and finished within the interval (length 0), tracked as above
            extra = np.minimum(m - 1, np.maximum(free[tt, jj], 0))
            keys_j = np.r_[jj[ok], np.repeat(jj, extra)]
            keys_d = np.r_[d[ok], np.zeros(int(extra.sum()), dtype=np.int64)]
            keys_l = np.r_[lev[ok], np.repeat(lev, extra)]
            big = keys_d < 1 << 30
            packed = (keys_j[big] << 52) | (keys_d[big] << 22) | keys_l[big]
            uk, cnt = np.unique(packed, return_counts=True)
            for k, c in zip(uk.tolist(), cnt.tolist(), strict=True):
                t = (k >> 52, (k >> 22) & ((1 << 30) - 1), k & ((1 << 22) - 1))
                self.intervals[t] = self.intervals.get(t, 0) + c
            last = np.r_[jj[1:] != jj[:-1], True]
            self._last_event_tick[jj[last]] = ticks[last]
            self._last_event_break[jj[last]] = cev[last]
            self._last_event_ok[jj[last]] = fr[last]
        self._break_count = cum[-1].copy()

    def _lifetimes(
        self, e: Rows, bt: np.ndarray, finc: np.ndarray, st: np.ndarray, dt: np.ndarray
    ) -> None:
        cum = np.cumsum(bt, axis=0)  # busy s since the chunk began
        offset = self._age.copy()  # age at row t = cum[t] + offset
        down = st == L.DOWN
        down_s = self._down_s[None, :] + np.cumsum(down * dt[:, None], axis=0)
        jj, tt = np.nonzero(finc.T > 0)
        for j, t in zip(jj.tolist(), tt.tolist(), strict=True):
            a0 = float(self._age0[j]) if self._first_life[j] else 0.0
            life = float(cum[t, j] + offset[j]) + a0
            self.failures.add(j, a0, max(life, a0 + 1e-9), True)
            for _ in range(int(finc[t, j]) - 1):  # several failures within one interval
                self.failures.add(j, 0.0, 0.5 * float(dt[t]), True)
            offset[j] = -float(cum[t, j])
            self._first_life[j] = False
        self._age = cum[-1] + offset
        # repair runs: starts and ends of `down`
        was = np.r_[self._prev_down()[None, :], down[:-1]]
        starts = down & ~was
        ends = ~down & was
        jj, tt = np.nonzero((starts | ends).T)
        for j, t in zip(jj.tolist(), tt.tolist(), strict=True):
            if starts[t, j]:
                self._down_since[j] = float(down_s[t, j] - down[t, j] * dt[t])
            else:
                since = self._down_since[j]
                if since >= 0:  # NaN (never) and -1 (down when the log began) give no repair
                    self.repairs.add(j, 0.0, float(down_s[t, j] - since), True)
                self._down_since[j] = math.nan
        self._down_s = down_s[-1].copy()

    def _prev_down(self) -> np.ndarray:
        assert self._prev is not None
        return np.asarray(self._prev.status[0] == L.DOWN)

    def _scrap(
        self, inc: np.ndarray, sinc: np.ndarray, sp: np.ndarray, temp: np.ndarray, valid: np.ndarray
    ) -> None:
        tt, jj = np.nonzero(inc > 0)
        if tt.size == 0:
            return
        nn = inc[tt, jj].astype(float)
        y = sinc[tt, jj].astype(float)
        xs = np.maximum(sp[tt, jj] - self._nominal[jj], 0.0) ** 2
        lo, hi = self._window
        t = np.where(valid[tt, jj], temp[tt, jj], np.nan)
        dev = np.maximum(np.maximum(lo[jj] - t, t - hi[jj]), 0.0)
        xt = np.where(self._thermal[jj], dev * dev, 0.0)
        keep = np.isfinite(xt)
        nn, y, xs, xt, jj = nn[keep], y[keep], xs[keep], xt[keep], jj[keep]
        x = np.stack([np.ones_like(xs), xs, xt], axis=1)
        np.add.at(self.scrap_a, jj, nn[:, None, None] * x[:, :, None] * x[:, None, :])
        np.add.at(self.scrap_b, jj, y[:, None] * x)
        np.add.at(self.scrap_m3, jj, nn[:, None, None, None] * np.einsum("ma,mb,mc->mabc", x, x, x))
        np.add.at(
            self.scrap_parts, jj, nn[:, None] * np.stack([np.ones_like(xs), xs > 0, xt > 0], 1)
        )
        np.add.at(self.scrap_count, jj, y)

    def _power(
        self,
        st: np.ndarray,
        level: np.ndarray,
        power: np.ndarray,
        valid: np.ndarray,
        e: Rows,
    ) -> None:
        n = self.spec.n_stations
        heat, amb = self._heat
        t = np.where(e.temperature_valid[1:], e.temperature_c[1:], np.nan)
        heating = np.where(self._thermal[None, :], heat * np.maximum(t - amb, 0.0), 0.0)
        p = power - heating
        ok = valid & np.isfinite(p)
        busy = (st == L.BUSY) & ok
        idle = (st != L.BUSY) & ok
        pi = np.where(idle, p, 0.0)
        self.power_idle += np.stack([pi.sum(0), (pi * pi).sum(0), idle.sum(0)], axis=1)
        tt, jj = np.nonzero(busy)
        if tt.size == 0:
            return
        key = level[tt, jj] * n + jj
        uk, inv = np.unique(key, return_inverse=True)
        v = p[tt, jj]
        s1 = np.bincount(inv, weights=v)
        s2 = np.bincount(inv, weights=v * v)
        c = np.bincount(inv)
        for k, a, b, m in zip(uk.tolist(), s1.tolist(), s2.tolist(), c.tolist(), strict=True):
            acc = self.power_busy.setdefault((k % n, k // n), [0.0, 0.0, 0.0])
            acc[0] += a
            acc[1] += b
            acc[2] += m

    def _thermal_pairs(self, rows: Rows) -> None:
        for j, lag in self._lag.items():
            temp = np.where(rows.temperature_valid[:, j], rows.temperature_c[:, j], np.nan)
            tset = rows.temperature_setpoint_c[:, j]
            time = rows.time_s
            old = self._lag_rows.get(j)
            if old is not None:
                temp = np.r_[old[0], temp]
                tset = np.r_[old[1], tset]
                time = np.r_[old[2], time]
            self._lag_rows[j] = (temp[-lag:], tset[-lag:], time[-lag:])
            if temp.size <= lag:
                continue
            chg = np.r_[0, np.cumsum(tset[1:] != tset[:-1])]
            i = np.arange(temp.size - lag)
            k = i + lag
            hold = chg[k] - chg[i + 1] == 0
            x = temp[i] - tset[k]
            y = temp[k] - tset[k]
            ok = hold & np.isfinite(x) & np.isfinite(y) & (np.abs(x) > MIN_TRANSIENT_C)
            if not ok.any():
                continue
            acc = self.thermal.setdefault(j, [0.0, 0.0, 0.0, 0.0, 0.0])
            acc[0] += float((x[ok] * y[ok]).sum())
            acc[1] += float((x[ok] ** 2).sum())
            acc[2] += float((y[ok] ** 2).sum())
            acc[3] += float(ok.sum())
            acc[4] += float((time[k][ok] - time[i][ok]).sum())

    # ------------------------------------------------------------------ end of the log

    def finish(self) -> None:
        """Close the observations still open at the end: censored lifetimes and repairs."""
        if self._prev is None:
            return
        for j in range(self.spec.n_stations):
            a0 = self._age0[j] if self._first_life[j] else 0.0
            if self._age[j] > 0:
                self.failures.add(j, a0, a0 + float(self._age[j]), False)
            since = self._down_since[j]
            if since >= 0 and self._down_s[j] > since:
                self.repairs.add(j, 0.0, float(self._down_s[j] - since), False)
        self._prev = None


def _concat(a: Rows, b: Rows) -> Rows:
    return Rows(
        **{
            k: np.concatenate([getattr(a, k), getattr(b, k)], axis=0)
            for k in a.__dataclass_fields__
        }
    )
