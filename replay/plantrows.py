"""Check batches of plant rows, as JSON objects or CSV text, with the CSV importer's rules.

A real line reports its measurements in the plant-log layout of `docs/recordings.md` (the
CSV importer's columns: `time_s` or `timestamp`, `released`, ..., `S.status`, `S.speed`, ...),
a batch of rows at a time: over HTTP (`POST /v1/plant/snapshots`), from the OPC UA connector,
or as a CSV file. `PlantRows` turns each batch into a pyarrow record batch with the layout's
column types and runs the importer's own converter on it (`replay.csv_blocks`), so every rule
and every message is the importer's; only the place is named as the row within the batch:

    rows = PlantRows(spec, "gateway")
    batch = rows.check([{"time_s": 0.0, "press.status": "busy", ...}, ...])  # or CSV text
    batch.time_s, batch.columns     # the new rows: `(k,)` s and recording columns `(k, 1, ...)`
    batch.duplicates                # rows whose time was already received: ignored

On top of the importer's rules: the first accepted batch fixes the columns (later batches must
have the same set, in any order); a row whose time was already received is a resend and is
ignored (counted, not checked again); any other row at or before the last received time is an
error ("time goes back"). A batch with any error raises `PlantDataError` naming the 1-based row
within the batch and the column, and leaves nothing behind: the converter's carried state
(last counters, derived failures and energy, the last time) does not advance.

JSON rows: one object per row, the layout's column names as keys; numbers as JSON numbers
(JSON has one number type: an integral number such as `3.0` is accepted as a count, `3.5` is
not; `true` / `false` in a number column read as 1 and 0, as pyarrow converts them), flags as
`true` / `false`, status as a name or a code 0-3, `timestamp` as a string. `null` or a missing
key is an empty cell. Python's JSON reader also reads `NaN` and `Infinity`: they are CSV's `nan`
and `inf`. Not thread-safe: one caller at a time (`api.plant.ExternalPlant` holds a lock).
"""

from __future__ import annotations

import csv
import io
import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from linetwin.replay.csv_blocks import BlockConverter
from linetwin.replay.csv_layout import Layout, parse_header
from linetwin.replay.errors import ImportCsvError, PlantDataError, ReplayError
from linetwin.replay.importer import csv_options, diagnose_lines
from linetwin.twin.spec import LineSpec

PlantRowsInput = Sequence[Mapping[str, Any]] | str | bytes
"""A batch of plant rows: JSON-like objects `[{column: value}, ...]`, or CSV text with a header."""

REMEMBER_ROWS = 1_000_000
"""Times of received rows kept to recognise resends (about 11 days at 1 Hz); a row at or
before the newest time forgotten counts as a resend."""


def plant_error(source: str, row: int | None, column: str | None, problem: str) -> PlantDataError:
    """Build the error for `problem` at 1-based `row` of a batch (None: the columns or the
    whole batch) and `column` (None: the whole row)."""
    where = [f"row {row}"] if row is not None else []
    where += [f"column {column!r}"] if column is not None else []
    message = f"{source}: {', '.join(where)}: {problem}" if where else f"{source}: {problem}"
    return PlantDataError(message, row=row, column=column, problem=problem)


def _problem(exc: ImportCsvError, source: str) -> str:
    """The message of an importer error without its `source: line N, column 'C': ` prefix."""
    prefix = f"{source}: line {exc.line}" + (f", column {exc.column!r}" if exc.column else "")
    return str(exc).removeprefix(prefix + ": ").removeprefix(f"{source}: ")


@dataclass(frozen=True)
class RowBatch:
    """The accepted part of one batch: `time_s (k,)` s and the recording columns `(k, 1, ...)`
    of `twin.recorder.Recorder.write_block` (status codes, setpoints, readings and flags,
    counters, energy, wear, buffer levels, line counters; no `buffer_level` on a one-station
    line) of the `k` new rows, in time order.

    `received` rows came in; `duplicates` of them were resends and were ignored.
    """

    time_s: np.ndarray
    columns: dict[str, np.ndarray]
    received: int
    duplicates: int

    @property
    def accepted(self) -> int:
        """New rows in the batch."""
        return int(self.time_s.shape[0])


class _RowConverter(BlockConverter):
    """The importer's converter, naming rows within a batch (through `rows_index`)."""

    def __init__(self, layout: Layout) -> None:
        super().__init__(layout)
        self.rows_index: np.ndarray | None = None  # batch row of each converted row

    def error(self, row: int, column: str | None, problem: str) -> ReplayError:
        at = row if self.rows_index is None else int(self.rows_index[row])
        if problem == "blank line":
            problem = "empty row"
        problem = problem.replace("on the line before", "on the row before")
        return plant_error(self.source, at + 1, column, problem)


_WANT = {
    pa.float64(): "a number",
    pa.int64(): "an integer",
    pa.bool_(): "true or false",
    pa.string(): "text",
}


def _accepts(t: pa.DataType, v: Any) -> bool:
    """Whether a JSON value `v` is a valid cell of a column of Arrow type `t` (None: empty).

    As pyarrow converts: an integral number is an integer (JSON has one number type), and
    `true` / `false` in a number column read as 1 and 0.
    """
    if v is None:
        return True
    if t == pa.float64():
        return isinstance(v, int | float)
    if t == pa.int64():
        if isinstance(v, float) and v.is_integer():
            v = int(v)
        return isinstance(v, int) and not isinstance(v, bool) and -(2**63) <= v < 2**63
    if t == pa.bool_():
        return isinstance(v, bool)
    if t == pa.string():
        return isinstance(v, str)
    if pa.types.is_dictionary(t):  # status: a name or an integer code
        return isinstance(v, str) or (isinstance(v, int) and not isinstance(v, bool))
    return False


def _json_column(values: Sequence[Any], t: pa.DataType, name: str, source: str) -> pa.Array:
    """Turn one column of JSON values into an Arrow array of type `t`; raise PlantDataError
    at the first cell that is not one (see `_accepts`)."""
    status = pa.types.is_dictionary(t)
    try:
        if t == pa.int64():  # pyarrow would truncate 3.5 to 3: infer, then cast safely
            arr = pa.array(values)
            if arr.type in (pa.int64(), pa.float64(), pa.null()):
                return arr.cast(t)
        elif not status:
            return pa.array(values, type=t)
        arr = pa.array(values)
        if arr.type in (pa.string(), pa.int64(), pa.null()):
            return arr.cast(pa.string()).dictionary_encode()
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        pass
    want = "a status name or code 0-3" if status else _WANT[t]
    for r, v in enumerate(values):
        if not _accepts(t, v):
            raise plant_error(source, r + 1, name, f"expected {want} (got {v!r})")
    if status:  # names and codes mixed
        text = [v if v is None or isinstance(v, str) else str(v) for v in values]
        return pa.array(text, type=pa.string()).dictionary_encode()
    raise plant_error(source, None, name, f"expected {want} in every row")  # pragma: no cover


def _columns(data: Sequence[Mapping[str, Any]], names: Sequence[str]) -> list[Sequence[Any]]:
    """Transpose rows that all have the keys `names` into one sequence of cells per column
    (raises KeyError for a row that lacks one): a table of object references filled a row at a
    time, whose columns pyarrow reads directly; `zip` where a cell is itself a list."""
    getter = itemgetter(*names)
    table = np.empty((len(data), len(names)), dtype=object)
    try:
        for r, cells in enumerate(map(getter, data)):
            table[r] = cells
    except ValueError:  # a cell holding a sequence: numpy would unpack it
        return list(zip(*map(getter, data), strict=True))
    return list(table.T)


class PlantRows:
    """Check the batches of one line's plant data in arrival order; see the module docstring.

    `source` names the data in errors (a batch may name its own). The state carried between
    batches (the columns, the last time and counters, recent times for resends) advances only
    when a batch is accepted.
    """

    def __init__(
        self, spec: LineSpec, source: str = "plant data", remember_rows: int = REMEMBER_ROWS
    ) -> None:
        self.spec = spec
        self.source = source
        self.remember_rows = remember_rows
        self.layout: Layout | None = None
        self._converter: _RowConverter | None = None
        self._received: set[float] = set()
        self._received_batches: deque[np.ndarray] = deque()
        self._remembered = 0
        self._forgotten = -math.inf  # rows up to this time are no longer remembered
        self.rows = 0
        """Rows accepted so far."""
        self.duplicates = 0
        """Resent rows ignored so far."""

    @property
    def last_time_s(self) -> float | None:
        """Time of the last accepted row, s (None before the first)."""
        return None if self._converter is None else self._converter.last_time

    @property
    def start_timestamp(self) -> str | None:
        """The first `timestamp` cell (time 0) of a log with timestamps, else None."""
        return None if self._converter is None else self._converter.start_timestamp

    # ------------------------------------------------------------------ the batch

    def check(self, data: PlantRowsInput, source: str | None = None) -> RowBatch:
        """Check one batch and return its new rows; raise PlantDataError (nothing kept)."""
        src = self.source if source is None else source
        if isinstance(data, str | bytes):
            batch, layout = self._from_csv(data, src)
        else:
            batch, layout = self._from_json(data, src)
        converter = self._converter if self._converter is not None else _RowConverter(layout)
        converter.source = src
        times = converter.peek_times(batch)
        dup = self._resends(times, layout.time_column, src)
        keep = np.flatnonzero(~dup)
        if keep.size == 0:
            self.duplicates += int(dup.size)
            return RowBatch(np.empty(0), {}, int(dup.size), int(dup.size))
        sub = batch.take(pa.array(keep)) if dup.any() else batch
        converter.rows_index = keep
        try:
            t, columns = converter.convert(sub)
        finally:
            converter.rows_index = None
        self.layout, self._converter = layout, converter
        self._remember(t)
        self.rows += int(t.shape[0])
        self.duplicates += int(dup.sum())
        return RowBatch(t, columns, int(dup.size), int(dup.sum()))

    def _resends(self, times: np.ndarray, column: str, source: str) -> np.ndarray:
        """Mark rows `(k,)` whose time was received before; fail on any other row at or before
        the last received time."""
        last = self.last_time_s
        dup = np.zeros(times.shape, dtype=bool)
        if last is None:
            return dup
        for r in np.flatnonzero(times <= last):
            t = float(times[r])
            if t in self._received or t <= self._forgotten:
                dup[r] = True
            else:
                raise plant_error(
                    source,
                    int(r) + 1,
                    column,
                    f"time goes back: {t!r} s is before the last received row's {last!r} s "
                    "and is not a resend of a received row",
                )
        return dup

    def _remember(self, t: np.ndarray) -> None:
        self._received.update(t.tolist())
        self._received_batches.append(t)
        self._remembered += int(t.shape[0])
        while self._remembered > self.remember_rows and len(self._received_batches) > 1:
            old = self._received_batches.popleft()
            self._received.difference_update(old.tolist())
            self._forgotten = float(old[-1])
            self._remembered -= int(old.shape[0])

    # ------------------------------------------------------------------ columns

    def _layout(self, names: Sequence[str], source: str) -> Layout:
        """Check the columns of a batch; the first accepted batch fixes them."""
        try:
            layout = parse_header(names, self.spec, source)
        except ImportCsvError as exc:
            raise plant_error(source, None, exc.column, _problem(exc, source)) from None
        if self.layout is None:
            return layout
        fixed = set(self.layout.names)
        extra = [n for n in names if n not in fixed]
        missing = [n for n in self.layout.names if n not in set(names)]
        if extra or missing:
            column, what = (extra[0], "not") if extra else (missing[0], "missing, but")
            raise plant_error(
                source,
                None,
                column,
                f"column {what} in the first accepted batch (a plant's columns are fixed by "
                "its first batch)",
            )
        return self.layout

    def _from_json(
        self, data: Sequence[Mapping[str, Any]], source: str
    ) -> tuple[pa.RecordBatch, Layout]:
        """Build the record batch of JSON rows (missing keys are empty cells)."""
        if not isinstance(data, Sequence):
            raise plant_error(source, None, None, "expected a list of rows (JSON objects)")
        if len(data) == 0:
            raise plant_error(source, None, None, "no rows in the batch")
        for r, row in enumerate(data):
            if not isinstance(row, Mapping):
                raise plant_error(source, r + 1, None, f"expected an object, got {row!r:.80}")
        width = len(data[0])
        same = all(len(row) == width for row in data)
        names = list(data[0]) if same else list(dict.fromkeys(k for row in data for k in row))
        bad = next((k for k in names if not isinstance(k, str)), None)
        if bad is not None:
            raise plant_error(source, None, None, f"column names must be text, got {bad!r}")
        layout = self._layout(names, source)
        types = layout.column_types()
        cells: list[Sequence[Any]] = []
        if same and len(layout.names) > 1:
            try:  # every row has the first row's keys (as many, none missing)
                cells = _columns(data, layout.names)
            except KeyError:
                names = list(dict.fromkeys(k for row in data for k in row))
                layout = self._layout(names, source)
        if not cells:
            cells = [tuple(row.get(n) for row in data) for n in layout.names]
        arrays = [
            _json_column(col, types[n], n, source)
            for n, col in zip(layout.names, cells, strict=True)
        ]
        return pa.RecordBatch.from_arrays(arrays, names=list(layout.names)), layout

    def _from_csv(self, data: str | bytes, source: str) -> tuple[pa.RecordBatch, Layout]:
        """Build the record batch of CSV text (a header line, then rows)."""
        if isinstance(data, bytes):
            try:
                text = data.decode("utf-8-sig")
            except UnicodeDecodeError as exc:
                raise plant_error(source, None, None, f"not UTF-8 text ({exc.reason})") from None
        else:
            text = data.removeprefix("\ufeff")
        first, _, body = text.partition("\n")
        header = [name.strip() for name in next(csv.reader([first]), [])]
        if not header or header == [""]:
            raise plant_error(source, None, None, "no header line (the text is empty)")
        if body.strip("\r\n") == "":
            raise plant_error(source, None, None, "no rows in the batch")
        now = self._layout(header, source)
        read = parse_header(header, self.spec, source)  # this batch's order of columns
        parse, convert = csv_options(read)
        convert.column_types = now.column_types()
        try:
            table = pacsv.read_csv(
                io.BytesIO(body.encode()),
                read_options=pacsv.ReadOptions(column_names=list(read.names), use_threads=False),
                parse_options=parse,
                convert_options=convert,
            )
        except pa.ArrowInvalid as exc:
            found = diagnose_lines(source, io.StringIO(text), read, 0, exc)
            row = None if found.line is None else found.line - 1
            raise plant_error(source, row, found.column, _problem(found, source)) from None
        table = table.select(list(now.names)).unify_dictionaries().combine_chunks()
        batches = table.to_batches()
        if not batches or table.num_rows == 0:
            raise plant_error(source, None, None, "no rows in the batch")
        return batches[0], now
