"""Check and convert blocks of a plant log CSV into recording arrays, carrying state between them.

`BlockConverter.convert(batch)` turns one pyarrow record batch (consecutive CSV rows, parsed
with `Layout.column_types()`) into `time_s (k,)` and the recording's columns `(k, 1[, width])`
for `Recorder.write_block`. It checks every rule of the layout (a problem raises
ImportCsvError naming the 1-based CSV line and the column), derives or fills what the log
lacks, and keeps what the next block needs: the last time, the last cumulative counts, the
derived failure and energy counters. A block that fails leaves that state as it was, so a
caller may drop the block and go on with the next (the plant-data route does).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, NoReturn

import numpy as np
import pyarrow as pa

from linetwin.replay.csv_layout import STATUS_VALUES, Layout, csv_error
from linetwin.replay.errors import ReplayError
from linetwin.twin import layout as L

_TOL = 1e-9  # relative slack on setpoint limits, for values written with rounding


class BlockConverter:
    """Convert consecutive record batches of one CSV file; see the module docstring.

    After the first block, `start_timestamp` holds the first `timestamp` cell (None for a
    `time_s` log); `first_time` / `last_time` the time span so far (s) and `rows` the count.
    """

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self.source = layout.source
        spec = layout.spec
        self.n = spec.n_stations
        self.index = {name: i for i, name in enumerate(layout.names)}
        sp = [st.setpoints for st in spec.stations]
        self.speed_lim = np.array([(s.speed.min, s.speed.max) for s in sp]).T
        temp = [(t.min, t.max) if (t := s.temperature) else (math.nan,) * 2 for s in sp]
        self.temp_lim = np.array(temp).T
        self.capacity = np.array([st.buffer_after or 0 for st in spec.stations[:-1]], np.int64)
        self.rows = 0
        self.first_time: float | None = None
        self.last_time: float | None = None
        self.start_timestamp: str | None = None
        self._t0: datetime | None = None
        self._prev: dict[str, np.ndarray] = {}  # last row of each cumulative field
        self._down = np.zeros(self.n, dtype=bool)  # status was down on the last row
        self._failures = np.zeros(self.n, dtype=np.int64)  # derived failure counts
        self._energy = np.zeros(self.n)  # derived energy, kWh
        self._power = np.zeros(self.n)  # last finite power reading, kW

    # ------------------------------------------------------------------ helpers

    def error(self, row: int, column: str | None, problem: str) -> ReplayError:
        """Build the error for `problem` at 0-based `row` of the block being converted and
        `column` (None: the whole row); here ImportCsvError naming the CSV line."""
        return csv_error(self.source, self.rows + row + 2, column, problem)

    def _fail(self, row: int, column: str | None, problem: str) -> NoReturn:
        raise self.error(row, column, problem)

    _CARRIED: tuple[str, ...] = (
        *("rows", "first_time", "last_time", "start_timestamp", "_t0"),
        *("_down", "_failures", "_energy", "_power"),
    )

    def _save(self) -> dict[str, Any]:
        """Return the state carried between blocks (arrays are replaced, never changed)."""
        saved = {name: getattr(self, name) for name in self._CARRIED}
        saved["_prev"] = dict(self._prev)
        return saved

    def _first(self, mask: np.ndarray, cols: Sequence[str | None]) -> tuple[int, int] | None:
        """Return (row, column index) of the first True of `mask (k, m)`, row-major."""
        if not mask.any():
            return None
        r = int(np.flatnonzero(mask.any(axis=1))[0])
        return r, int(np.flatnonzero(mask[r])[0])

    def _check(
        self, bad: np.ndarray, cols: Sequence[str | None], values: np.ndarray, problem: str
    ) -> None:
        """Fail at the first True of `bad (k, m)`: `problem (got VALUE)`."""
        hit = self._first(bad, cols)
        if hit is not None:
            r, j = hit
            self._fail(r, cols[j], f"{problem} (got {values[r, j].item()!r})")

    def _values(
        self, batch: pa.RecordBatch, cols: Sequence[str | None], fill: Any, dtype: Any
    ) -> tuple[np.ndarray, np.ndarray]:
        """Stack columns into `(k, m)` values, and the mask of empty cells (absent: all)."""
        k, m = batch.num_rows, len(cols)
        out = np.full((k, m), fill, dtype=dtype)
        empty = np.ones((k, m), dtype=bool)
        pos = [j for j, c in enumerate(cols) if c is not None]
        if not pos:
            return out, empty
        sub = batch.select([self.index[str(cols[j])] for j in pos])
        empty[:, pos] = False
        with_nulls = [(j, a) for j, a in zip(pos, sub.columns, strict=True) if a.null_count]
        for j, arr in with_nulls:
            empty[:, j] = arr.is_null().to_numpy(zero_copy_only=False)
        if dtype is np.float64 or (dtype is np.int64 and not with_nulls):
            # One call for all columns; nulls become NaN (integers have none here).
            tensor = sub.to_tensor(null_to_nan=dtype is np.float64, row_major=True)
            out[:, pos] = np.asarray(tensor)
            return out, empty
        for j, arr in zip(pos, sub.columns, strict=True):
            filled = arr.fill_null(fill) if arr.null_count else arr
            out[:, j] = filled.to_numpy(zero_copy_only=False)
        return out, empty

    def _required(
        self, batch: pa.RecordBatch, empty: np.ndarray, cols: Sequence[str | None]
    ) -> None:
        """Fail at the first empty cell of present columns (a blank line says so)."""
        present = np.array([c is not None for c in cols])
        hit = self._first(empty & present, cols)
        if hit is not None:
            r, j = hit
            blank = all(not batch.column(i)[r].is_valid for i in range(batch.num_columns))
            self._fail(r, None if blank else cols[j], "blank line" if blank else "missing value")

    def _cumulative(self, key: str, vals: np.ndarray, cols: Sequence[str | None]) -> None:
        """Fail where a cumulative count `(k, m)` decreases, also across blocks."""
        prev = self._prev.get(key)
        seq = vals if prev is None else np.vstack([prev[None], vals])
        dec = np.diff(seq, axis=0) < 0
        hit = self._first(dec, cols)
        if hit is not None:
            r, j = hit
            row = r + (0 if prev is None else -1) + 1
            self._fail(
                row,
                cols[j],
                f"cumulative value decreases from {seq[r, j].item()!r} on the line before "
                f"to {seq[r + 1, j].item()!r}",
            )
        self._prev[key] = vals[-1].copy()

    def _counts(
        self, batch: pa.RecordBatch, key: str, cols: Sequence[str | None], cumulative: bool
    ) -> np.ndarray:
        """Read integer counts `(k, m)` of present columns: no empty or negative cells."""
        vals, empty = self._values(batch, cols, 0, np.int64)
        self._required(batch, empty, cols)
        self._check(vals < 0, cols, vals, "count must not be negative")
        if cumulative:
            self._cumulative(key, vals, cols)
        return vals

    def _floats(self, batch: pa.RecordBatch, cols: Sequence[str | None]) -> np.ndarray:
        """Read required finite floats `(k, m)` of present columns (NaN where absent)."""
        vals, empty = self._values(batch, cols, math.nan, np.float64)
        self._required(batch, empty, cols)
        present = np.array([c is not None for c in cols])
        self._check(~np.isfinite(vals) & present, cols, vals, "value must be a finite number")
        return vals

    # ------------------------------------------------------------------ the block

    def convert(self, batch: pa.RecordBatch) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Check one block and return `time_s (k,)` and the recording columns `(k, 1, ...)`.

        On any error the state carried to the next block is left as it was before the call.
        """
        saved = self._save()
        try:
            return self._convert(batch)
        except BaseException:
            self.__dict__.update(saved)
            raise

    def _convert(self, batch: pa.RecordBatch) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        lay = self.layout.station
        t = self._time(batch)
        status = self._status(batch)
        out: dict[str, np.ndarray] = {"status": status}
        speed = self._floats(batch, lay["speed"])
        lo, hi = self.speed_lim
        self._limits(speed, lay["speed"], lo, hi, "speed")
        temp_sp = self._floats(batch, lay["temperature_setpoint_c"])
        lo, hi = self.temp_lim
        self._limits(temp_sp, lay["temperature_setpoint_c"], lo, hi, "temperature")
        out.update(speed=speed, temperature_setpoint_c=temp_sp)
        for reading in ("temperature_c", "power_kw", "vibration_mm_s"):
            out[reading], out[reading.split("_")[0] + "_valid"] = self._reading(batch, reading)
        completed = self._counts(batch, "completed", lay["completed"], True)
        scrapped = self._counts(batch, "scrapped", lay["scrapped"], True)
        self._check(
            scrapped > completed,
            lay["scrapped"],
            scrapped,
            "scrapped exceeds the station's completed",
        )
        out.update(completed=completed, scrapped=scrapped)
        out["failures"] = self._derive_failures(batch, status)
        out["energy_kwh"] = self._energy_kwh(batch, t, out["power_kw"])
        wear = self._floats(batch, lay["wear"])
        self._check(wear < 0, lay["wear"], wear, "wear must not be negative")
        out["wear"] = np.nan_to_num(wear, nan=0.0)
        if self.n > 1:
            cols = lay["buffer_level"][:-1]
            level = self._counts(batch, "buffer_level", cols, False)
            self._check(level > self.capacity, cols, level, "buffer level above its capacity")
            out["buffer_level"] = level
        derived = {
            "released": completed[:, 0] + np.isin(status[:, 0], (L.BUSY, L.DOWN)),
            "good_out": completed[:, -1] - scrapped[:, -1],
            "scrap_total": scrapped.sum(axis=1),
        }
        for name, col in self.layout.line.items():
            if col is None:
                out[name] = derived[name]
            else:
                out[name] = self._counts(batch, name, [col], True)[:, 0]
        self.rows += batch.num_rows
        if self.first_time is None:
            self.first_time = float(t[0])
        self.last_time = float(t[-1])
        return t, {name: a[:, None] for name, a in out.items()}

    def peek_times(self, batch: pa.RecordBatch) -> np.ndarray:
        """Return each row's time `(k,)` in s as `convert` would read it, checking and keeping
        nothing: NaN where the cell is empty or does not parse (`convert` names those).

        A `timestamp` log counts from the first timestamp converted so far, or else from the
        first one of `batch` that parses.
        """
        arr = batch.column(self.index[self.layout.time_column])
        if self.layout.time_column == "time_s":
            return np.asarray(arr.to_numpy(zero_copy_only=False), dtype=np.float64)
        out = np.full(batch.num_rows, math.nan)
        t0 = self._t0
        for r, text in enumerate(arr.to_pylist()):
            try:
                stamp = datetime.fromisoformat(text.strip()) if text is not None else None
            except ValueError:
                continue
            if stamp is None or stamp.utcoffset() is None:
                continue
            t0 = stamp if t0 is None else t0
            out[r] = ((stamp - t0) // timedelta(microseconds=1)) / 1e6
        return out

    def _time(self, batch: pa.RecordBatch) -> np.ndarray:
        """Read the time column as seconds `(k,)`: finite and strictly increasing."""
        col = self.layout.time_column
        if col == "time_s":
            t = self._floats(batch, [col])[:, 0]
        else:
            empty = batch.column(self.index[col]).is_null().to_numpy(zero_copy_only=False)
            self._required(batch, empty[:, None], [col])
            t = np.empty(batch.num_rows)
            for r, text in enumerate(batch.column(self.index[col]).to_pylist()):
                t[r] = self._seconds(r, col, text)
        prev = self.last_time
        seq = t if prev is None else np.concatenate([[prev], t])
        bad = np.flatnonzero(np.diff(seq) <= 0)
        if bad.size:
            r = int(bad[0]) + (0 if prev is None else -1) + 1
            now, before = float(seq[bad[0] + 1]), float(seq[bad[0]])
            self._fail(r, col, f"time must increase: {now!r} s follows {before!r} s")
        return t

    def _seconds(self, row: int, col: str, text: str) -> float:
        """Parse one ISO 8601 `timestamp` cell into seconds since the first row's."""
        try:
            if "\n" in text or "\r" in text:  # would shift the line numbers of later rows
                raise ValueError("line break")
            stamp = datetime.fromisoformat(text.strip())
        except ValueError:
            self._fail(row, col, f"not an ISO 8601 date-time (got {text!r})")
        if stamp.utcoffset() is None:
            self._fail(row, col, f"date-time without a UTC offset; add Z or +HH:MM (got {text!r})")
        if self._t0 is None:
            self._t0, self.start_timestamp = stamp, text.strip()
        micro = (stamp - self._t0) // timedelta(microseconds=1)
        return micro / 1e6

    def _status(self, batch: pa.RecordBatch) -> np.ndarray:
        """Read status cells (names or codes 0-3, dictionary-encoded) as int8 codes `(k, n)`."""
        cols = self.layout.station["status"]
        out = np.empty((batch.num_rows, self.n), dtype=np.int8)
        for j, c in enumerate(cols):
            arr = batch.column(self.index[str(c)])
            if arr.null_count:
                self._required(batch, arr.is_null().to_numpy(zero_copy_only=False)[:, None], [c])
            words = arr.dictionary.to_pylist()
            lut = np.array([STATUS_VALUES.get(w.strip().lower(), -1) for w in words] or [-1])
            codes = lut[arr.indices.to_numpy(zero_copy_only=False)]
            bad = np.flatnonzero(codes < 0)
            if bad.size:
                r = int(bad[0])
                self._fail(
                    r,
                    c,
                    f"status must be starved, busy, blocked, down or 0-3 (got {arr[r].as_py()!r})",
                )
            out[:, j] = codes
        return out

    def _limits(
        self,
        vals: np.ndarray,
        cols: Sequence[str | None],
        lo: np.ndarray,
        hi: np.ndarray,
        what: str,
    ) -> None:
        """Fail at the first setpoint outside the line spec's [min, max]."""
        slack = _TOL * np.maximum(1.0, np.maximum(np.abs(lo), np.abs(hi)))
        with np.errstate(invalid="ignore"):
            bad = (vals < lo - slack) | (vals > hi + slack)
        hit = self._first(bad, cols)
        if hit is not None:
            r, j = hit
            self._fail(
                r,
                cols[j],
                f"{what} setpoint {vals[r, j].item()!r} outside the line spec's limits "
                f"[{lo[j]:g}, {hi[j]:g}]",
            )

    def _reading(self, batch: pa.RecordBatch, field: str) -> tuple[np.ndarray, np.ndarray]:
        """Read a sensor channel `(k, n)` and its validity: empty cell = no reading."""
        cols = self.layout.station[field]
        flag_cols = self.layout.station[field.split("_")[0] + "_valid"]
        vals, empty = self._values(batch, cols, math.nan, np.float64)
        self._check(np.isinf(vals), cols, vals, "reading must be finite, empty or nan")
        flags, no_flag = self._values(batch, flag_cols, False, np.bool_)
        valid = np.where(no_flag, ~empty, flags)
        self._check(
            ~valid & ~np.isnan(vals), flag_cols, vals, "flag is false but the reading holds a value"
        )
        return vals, valid

    def _derive_failures(self, batch: pa.RecordBatch, status: np.ndarray) -> np.ndarray:
        """Read `failures`, or count the rows where a station goes down where it is absent."""
        cols = self.layout.station["failures"]
        given = self._counts(batch, "failures", cols, True)
        down = status == L.DOWN
        entered = down & ~np.vstack([self._down[None], down[:-1]])
        derived = self._failures + np.cumsum(entered, axis=0)
        self._down = down[-1].copy()
        self._failures = derived[-1].copy()
        absent = np.array([c is None for c in cols])
        return np.where(absent, derived, given)

    def _energy_kwh(self, batch: pa.RecordBatch, t: np.ndarray, power: np.ndarray) -> np.ndarray:
        """Read `energy_kwh`, or integrate the last finite power reading over time if absent."""
        cols = self.layout.station["energy_kwh"]
        given = self._floats(batch, cols)
        self._check(given < 0, cols, given, "energy must not be negative")
        self._cumulative("energy_kwh", np.nan_to_num(given), cols)
        seq = np.vstack([self._power[None], power])  # row 0: the power held before the block
        finite = np.isfinite(seq)
        last = np.maximum.accumulate(np.where(finite, np.arange(len(seq))[:, None], 0), axis=0)
        held = np.take_along_axis(seq, last, axis=0)
        before = t[0] if self.last_time is None else self.last_time
        dt = np.diff(np.concatenate([[before], t]))
        derived = self._energy + np.cumsum(held[:-1] * dt[:, None] / 3600.0, axis=0)
        self._power, self._energy = held[-1].copy(), derived[-1].copy()
        return np.where([c is None for c in cols], derived, given)
