"""Record runs of the twin to Parquet and read them back, whole or streamed in chunks of ticks.

A recording holds one row per tick per scenario (rows ordered by tick, then scenario), the
per-station values as fixed-size list columns, and the run's provenance (spec, spec hash, seed,
package version, initial setpoints) as JSON-encoded Parquet key-value metadata. The schema is
documented in `docs/recordings.md`.

    with Recorder("run.parquet", spec, seed=7) as rec:
        Twin(spec, 4, seed=7).run(3600.0, tick_s=1.0, on_tick=rec.write)
    rec = read_recording("run.parquet")          # arrays (n_ticks, n_scenarios, n_stations)
    for chunk in iter_recording("run.parquet"):  # the same, a bounded number of ticks at a time
        ...

`Recorder.write_block` appends many ticks at once from arrays (importers use it). Writing
buffers at most `rows_per_group` rows (plus one tick) before it flushes a Parquet row group, and
reading streams record batches, so both directions run in bounded memory.
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata as importlib_metadata
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from linetwin.twin.errors import RecordingError, SpecError
from linetwin.twin.snapshot import Snapshot
from linetwin.twin.spec import LineSpec, parse_spec

FORMAT_VERSION = "1"
"""Version of the recording layout; readers refuse files of any other version."""

META_PREFIX = "linetwin."
"""Prefix of every key-value metadata key the recorder writes."""

META_KEYS = (
    "format_version",
    "spec_hash",
    "spec",
    "seed",
    "package_version",
    "station_names",
    "n_scenarios",
    "initial_setpoints",
    "note",
    "created_utc",
)
"""Metadata keys (after `META_PREFIX`); every value is JSON text."""

DEFAULT_ROWS_PER_GROUP = 4096
MAX_WHOLE_GROUP_ROWS = 65536
"""Readers decode row groups of up to this many rows whole (larger ones in batches)."""
"""Rows (ticks x scenarios) per Parquet row group: ~25 MB of buffer for 50 stations."""

DEFAULT_BATCH_TICKS = 1024
"""Ticks per chunk yielded by `iter_recording`."""

# Per-station columns: name -> (Arrow value type, numpy dtype).
STATION_COLUMNS: dict[str, tuple[pa.DataType, type[np.generic]]] = {
    "status": (pa.int8(), np.int8),
    "temperature_c": (pa.float64(), np.float64),
    "power_kw": (pa.float64(), np.float64),
    "vibration_mm_s": (pa.float64(), np.float64),
    "temperature_valid": (pa.bool_(), np.bool_),
    "power_valid": (pa.bool_(), np.bool_),
    "vibration_valid": (pa.bool_(), np.bool_),
    "completed": (pa.int64(), np.int64),
    "scrapped": (pa.int64(), np.int64),
    "failures": (pa.int64(), np.int64),
    "energy_kwh": (pa.float64(), np.float64),
    "wear": (pa.float64(), np.float64),
    "speed": (pa.float64(), np.float64),
    "temperature_setpoint_c": (pa.float64(), np.float64),
}
BUFFER_COLUMN = "buffer_level"
SCALAR_COLUMNS = ("released", "good_out", "scrap_total")


def _package_version() -> str:
    """Return the installed version of the `linetwin` distribution, or 'unknown'."""
    try:
        return importlib_metadata.version("linetwin")
    except importlib_metadata.PackageNotFoundError:
        return "unknown"


def recording_schema(spec: LineSpec) -> pa.Schema:
    """Return the Arrow schema (without metadata) of a recording of `spec`.

    `buffer_level` is left out of one-station lines: they have no buffer, and Arrow has no
    fixed-size list of size 0 that Parquet can store.
    """
    n = spec.n_stations
    fields = [
        pa.field("tick", pa.int64(), nullable=False),
        pa.field("time_s", pa.float64(), nullable=False),
        pa.field("scenario", pa.int32(), nullable=False),
    ]
    fields += [
        pa.field(name, pa.list_(pa.field("item", t, nullable=False), n), nullable=False)
        for name, (t, _) in STATION_COLUMNS.items()
    ]
    if n > 1:
        item = pa.field("item", pa.int64(), nullable=False)
        fields.append(pa.field(BUFFER_COLUMN, pa.list_(item, n - 1), nullable=False))
    fields += [pa.field(name, pa.int64(), nullable=False) for name in SCALAR_COLUMNS]
    return pa.schema(fields)


def _setpoint_dict(spec: LineSpec, setpoints: np.ndarray) -> dict[str, dict[str, float]]:
    """Render one scenario's setpoints `(n_stations, 2)` as `{station: {speed, temperature}}`."""
    out: dict[str, dict[str, float]] = {}
    for i, st in enumerate(spec.stations):
        entry = {"speed": float(setpoints[i, 0])}
        if st.setpoints.temperature is not None:
            entry["temperature"] = float(setpoints[i, 1])
        out[st.name] = entry
    return out


class Recorder:
    """Write snapshots of a run to a Parquet file, one row per tick per scenario.

    Use as a context manager (or call `close()`); pass `write` as the twin's `on_tick`. Rows are
    buffered and flushed as a row group every `rows_per_group` rows (a group always holds whole
    ticks). The file is written under a temporary name in the same folder and renamed into place
    by `close()`, so `path` never holds a partial recording; leaving the `with` block by an
    exception discards the temporary file. An existing `path` is refused unless `overwrite`.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        spec: LineSpec,
        *,
        seed: int | None,
        note: str = "",
        rows_per_group: int = DEFAULT_ROWS_PER_GROUP,
        overwrite: bool = False,
        compression: str = "zstd",
    ) -> None:
        self.path = Path(path)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int | np.integer)):
            raise RecordingError(f"{self.path}: seed must be an integer or None, got {seed!r}")
        if isinstance(rows_per_group, bool) or not isinstance(rows_per_group, int):
            raise RecordingError(f"{self.path}: rows_per_group must be an integer")
        if rows_per_group < 1:
            raise RecordingError(f"{self.path}: rows_per_group must be >= 1, got {rows_per_group}")
        if not self.path.parent.is_dir():
            raise RecordingError(f"{self.path}: folder {self.path.parent} does not exist")
        if self.path.is_dir():
            raise RecordingError(f"{self.path}: is a folder, not a file")
        if self.path.exists() and not overwrite:
            raise RecordingError(
                f"{self.path}: file exists; refusing to overwrite a recording "
                "(allow it with overwrite=True, or --overwrite on the command line)"
            )
        self.spec = spec
        self.seed = None if seed is None else int(seed)
        self.note = str(note)
        self.rows_per_group = rows_per_group
        self.overwrite = overwrite
        self.compression = compression
        self.n_ticks = 0
        self.n_scenarios: int | None = None
        self._spec_hash = spec.spec_hash()
        self._schema = recording_schema(spec)
        self._temperature_present = np.array(
            [st.setpoints.temperature is not None for st in spec.stations]
        )
        self._tmp = self.path.with_name(f".{self.path.name}.{uuid.uuid4().hex[:12]}.tmp")
        self._writer: pq.ParquetWriter | None = None
        self._buffer: dict[str, list[np.ndarray]] = {}
        self._buffer_ticks: list[tuple[int, float]] = []
        self._buffered_rows = 0
        self._closed = False

    # ------------------------------------------------------------------ context manager

    def __enter__(self) -> Recorder:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    # ------------------------------------------------------------------ writing

    def write(self, snapshot: Snapshot) -> None:
        """Append one row per scenario for the tick `snapshot` (its time and values).

        Every snapshot must come from the recorder's line and have the same number of
        scenarios as the first. The values are copied, so the snapshot may change afterwards.
        """
        if self._closed:
            raise RecordingError(f"{self.path}: recorder is closed")
        if snapshot.spec is not self.spec and snapshot.spec.spec_hash() != self._spec_hash:
            raise RecordingError(
                f"{self.path}: snapshot of line {snapshot.spec.name!r} does not match the "
                f"recorded line {self.spec.name!r} (spec hashes differ)"
            )
        n_sc = snapshot.n_scenarios
        if self.n_scenarios is None:
            self.n_scenarios = n_sc
            self._open_writer(snapshot.setpoints[0])
        elif n_sc != self.n_scenarios:
            raise RecordingError(
                f"{self.path}: snapshot has {n_sc} scenarios, the recording has {self.n_scenarios}"
            )
        r = snapshot.readings
        sp = snapshot.setpoints
        temp_sp = np.where(self._temperature_present, sp[:, :, 1], np.nan)
        values: dict[str, np.ndarray] = {
            "status": snapshot.status,
            "temperature_c": r.temperature_c,
            "power_kw": r.power_kw,
            "vibration_mm_s": r.vibration_mm_s,
            "temperature_valid": r.valid[:, :, 0],
            "power_valid": r.valid[:, :, 1],
            "vibration_valid": r.valid[:, :, 2],
            "completed": snapshot.completed,
            "scrapped": snapshot.scrapped,
            "failures": snapshot.failures,
            "energy_kwh": snapshot.energy_kwh,
            "wear": snapshot.wear,
            "speed": sp[:, :, 0],
            "temperature_setpoint_c": temp_sp,
        }
        for name, (_, dtype) in STATION_COLUMNS.items():
            self._buffer.setdefault(name, []).append(np.array(values[name], dtype=dtype))
        if self.spec.n_stations > 1:
            level = np.array(snapshot.buffer_level, dtype=np.int64)
            self._buffer.setdefault(BUFFER_COLUMN, []).append(level)
        for name in SCALAR_COLUMNS:
            value = np.array(getattr(snapshot, name), dtype=np.int64)
            self._buffer.setdefault(name, []).append(value)
        self._buffer_ticks.append((self.n_ticks, float(snapshot.time_s)))
        self.n_ticks += 1
        self._buffered_rows += n_sc
        if self._buffered_rows >= self.rows_per_group:
            self.flush()

    def write_block(self, time_s: np.ndarray, columns: Mapping[str, np.ndarray]) -> None:
        """Append `len(time_s)` ticks at once from arrays, for writers that have no `Snapshot`.

        `time_s (n_ticks,)` is the line time of each tick, s. `columns` holds every column of
        the recording after `tick`, `time_s` and `scenario` (`recording_schema(spec).names[3:]`)
        as arrays `(n_ticks, n_scenarios)` for the line counters, `(n_ticks, n_scenarios,
        n_stations)` per station and `(n_ticks, n_scenarios, n_stations - 1)` for
        `buffer_level`, in the units of `docs/recordings.md`; they are cast to the column's
        dtype. The caller puts NaN in `temperature_setpoint_c` of stations without one. The
        first tick of scenario 0 gives the `initial_setpoints` metadata of a new recording.
        """
        if self._closed:
            raise RecordingError(f"{self.path}: recorder is closed")
        times = np.asarray(time_s, dtype=np.float64)
        if times.ndim != 1:
            raise RecordingError(f"{self.path}: time_s must be 1-D, got shape {times.shape}")
        names = self._schema.names[3:]
        unknown = sorted(set(columns) - set(names))
        missing = [n for n in names if n not in columns]
        if unknown or missing:
            raise RecordingError(
                f"{self.path}: write_block needs exactly the columns {', '.join(names)} "
                f"(missing: {', '.join(missing) or '-'}; unknown: {', '.join(unknown) or '-'})"
            )
        n_ticks = times.shape[0]
        if n_ticks == 0:
            return
        released_shape = np.shape(columns["released"])
        if len(released_shape) != 2 or released_shape[1] < 1:
            raise RecordingError(
                f"{self.path}: column released has shape {released_shape}, "
                "expected (n_ticks, n_scenarios)"
            )
        n_sc = released_shape[1]
        if self.n_scenarios is not None and n_sc != self.n_scenarios:
            raise RecordingError(
                f"{self.path}: block has {n_sc} scenarios, the recording has {self.n_scenarios}"
            )
        arrays: dict[str, np.ndarray] = {}
        for field in list(self._schema)[3:]:
            dtype = STATION_COLUMNS[field.name][1] if field.name in STATION_COLUMNS else np.int64
            arr = np.asarray(columns[field.name], dtype=dtype)
            want: tuple[int, ...] = (n_ticks, n_sc)
            if pa.types.is_fixed_size_list(field.type):
                want += (field.type.list_size,)
            if arr.shape != want:
                raise RecordingError(
                    f"{self.path}: column {field.name} has shape {arr.shape}, expected {want}"
                )
            arrays[field.name] = arr
        if self.n_scenarios is None:
            self.n_scenarios = n_sc
            first = np.stack([arrays["speed"][0, 0], arrays["temperature_setpoint_c"][0, 0]], -1)
            self._open_writer(first)
        self.flush()
        ticks = np.arange(self.n_ticks, self.n_ticks + n_ticks, dtype=np.int64)
        step = max(1, self.rows_per_group // n_sc)
        for a in range(0, n_ticks, step):
            part = {name: arr[a : a + step] for name, arr in arrays.items()}
            self._write_rows(ticks[a : a + step], times[a : a + step], part)
        self.n_ticks += n_ticks

    def flush(self) -> None:
        """Write the buffered rows as one Parquet row group (nothing if the buffer is empty)."""
        if not self._buffer_ticks or self._writer is None or self.n_scenarios is None:
            return
        ticks = np.array([t for t, _ in self._buffer_ticks], dtype=np.int64)
        times = np.array([s for _, s in self._buffer_ticks], dtype=np.float64)
        stacked = {f.name: np.stack(self._buffer[f.name]) for f in list(self._schema)[3:]}
        self._write_rows(ticks, times, stacked)
        self._buffer.clear()
        self._buffer_ticks.clear()
        self._buffered_rows = 0

    def _write_rows(
        self, ticks: np.ndarray, times: np.ndarray, arrays: dict[str, np.ndarray]
    ) -> None:
        """Write ticks `(k,)`, times `(k,)` and arrays `(k, n_sc[, width])` as one row group."""
        if self._writer is None or self.n_scenarios is None:
            raise RecordingError(f"{self.path}: recorder has no open file")
        n_sc = self.n_scenarios
        columns: list[pa.Array] = [
            pa.array(np.repeat(ticks, n_sc), type=pa.int64()),
            pa.array(np.repeat(times, n_sc), type=pa.float64()),
            pa.array(np.tile(np.arange(n_sc, dtype=np.int32), len(ticks)), type=pa.int32()),
        ]
        for field in list(self._schema)[3:]:
            stacked = arrays[field.name]  # (ticks, n_sc[, width])
            if pa.types.is_fixed_size_list(field.type):
                width = field.type.list_size
                if stacked.shape[2:] != (width,):
                    raise RecordingError(
                        f"{self.path}: column {field.name} has {stacked.shape[2:]} values per "
                        f"row, expected {width}"
                    )
                values = pa.array(stacked.reshape(-1), type=field.type.value_type)
                columns.append(pa.FixedSizeListArray.from_arrays(values, type=field.type))
            else:
                columns.append(pa.array(stacked.reshape(-1), type=field.type))
        batch = pa.RecordBatch.from_arrays(columns, schema=self._writer.schema)
        try:
            self._writer.write_batch(batch, row_group_size=batch.num_rows)
        except (OSError, pa.ArrowException) as exc:
            raise RecordingError(f"{self.path}: cannot write recording: {exc}") from exc

    def close(self) -> None:
        """Flush, finish the Parquet file and move it to `path` (idempotent).

        A recording closed without any `write` holds no rows; its `n_scenarios` metadata is
        null and its initial setpoints are the line's nominal ones.
        """
        if self._closed:
            return
        try:
            if self._writer is None:
                nominal = np.array(
                    [
                        [
                            st.setpoints.speed.nominal,
                            np.nan
                            if st.setpoints.temperature is None
                            else st.setpoints.temperature.nominal,
                        ]
                        for st in self.spec.stations
                    ]
                )
                self._open_writer(nominal)
            self.flush()
            if self._writer is not None:
                self._writer.close()
                self._writer = None
            with open(self._tmp, "rb+") as fh:
                os.fsync(fh.fileno())
            if self.path.exists() and not self.overwrite:
                raise RecordingError(
                    f"{self.path}: file appeared while recording (pass overwrite=True to replace)"
                )
            os.replace(self._tmp, self.path)
        except BaseException:
            self.abort()
            raise
        self._closed = True

    def abort(self) -> None:
        """Discard the recording: close the writer and delete the temporary file."""
        self._closed = True
        self._buffer.clear()
        self._buffer_ticks.clear()
        if self._writer is not None:
            with contextlib.suppress(OSError, pa.ArrowException):
                self._writer.close()
            self._writer = None
        with contextlib.suppress(OSError):
            self._tmp.unlink(missing_ok=True)

    def _open_writer(self, initial_setpoints: np.ndarray) -> None:
        """Create the Parquet writer on the temporary file, with the run's metadata."""
        meta: dict[str, Any] = {
            "format_version": FORMAT_VERSION,
            "spec_hash": self._spec_hash,
            "spec": self.spec.model_dump(mode="json"),
            "seed": self.seed,
            "package_version": _package_version(),
            "station_names": [st.name for st in self.spec.stations],
            "n_scenarios": self.n_scenarios,
            "initial_setpoints": _setpoint_dict(self.spec, initial_setpoints),
            "note": self.note,
            "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        encoded = {f"{META_PREFIX}{k}": json.dumps(meta[k]) for k in META_KEYS}
        schema = self._schema.with_metadata(encoded)
        try:
            self._writer = pq.ParquetWriter(
                str(self._tmp), schema, compression=self.compression, store_schema=True
            )
        except (OSError, pa.ArrowException) as exc:
            raise RecordingError(f"{self.path}: cannot create recording: {exc}") from exc


# ---------------------------------------------------------------------- reading


@dataclass(frozen=True, eq=False)
class Recording:
    """A recording (or a chunk of consecutive ticks of one), as numpy arrays.

    `tick (n_ticks,)` int64 tick indices, `time_s (n_ticks,)` line time in s. Per-station
    arrays are `(n_ticks, n_scenarios, n_stations)`: status int8 codes (`twin.layout`),
    temperature_c °C, power_kw kW, vibration_mm_s mm/s (noisy readings), *_valid bool,
    completed / scrapped / failures int64 cumulative counts, energy_kwh cumulative kWh, wear
    equivalent busy hours, speed (multiplier of nominal), temperature_setpoint_c °C (NaN where
    a station has none). `buffer_level (n_ticks, n_scenarios, n_stations - 1)` int64 parts.
    released / good_out / scrap_total `(n_ticks, n_scenarios)` int64 cumulative parts.
    `meta` holds the decoded metadata without the `linetwin.` prefix.
    """

    spec: LineSpec
    meta: dict[str, Any]
    tick: np.ndarray
    time_s: np.ndarray
    status: np.ndarray
    temperature_c: np.ndarray
    power_kw: np.ndarray
    vibration_mm_s: np.ndarray
    temperature_valid: np.ndarray
    power_valid: np.ndarray
    vibration_valid: np.ndarray
    completed: np.ndarray
    scrapped: np.ndarray
    failures: np.ndarray
    energy_kwh: np.ndarray
    wear: np.ndarray
    speed: np.ndarray
    temperature_setpoint_c: np.ndarray
    buffer_level: np.ndarray
    released: np.ndarray
    good_out: np.ndarray
    scrap_total: np.ndarray

    @property
    def n_ticks(self) -> int:
        """Number of ticks held."""
        return int(self.tick.shape[0])

    @property
    def n_scenarios(self) -> int:
        """Number of scenarios."""
        return int(self.status.shape[1])

    @property
    def n_stations(self) -> int:
        """Number of stations."""
        return self.spec.n_stations

    @property
    def seed(self) -> int | None:
        """Seed the run was recorded with (None if not given)."""
        seed = self.meta.get("seed")
        return None if seed is None else int(seed)

    @property
    def station_names(self) -> list[str]:
        """Station names in flow order."""
        return [st.name for st in self.spec.stations]

    @property
    def setpoints(self) -> np.ndarray:
        """Setpoints in force `(n_ticks, n_scenarios, n_stations, 2)`: speed, temperature °C."""
        return np.stack([self.speed, self.temperature_setpoint_c], axis=-1)


@dataclass(frozen=True)
class _Header:
    """What the reader learned from a file's footer."""

    path: Path
    file: pq.ParquetFile
    spec: LineSpec
    meta: dict[str, Any]
    n_scenarios: int


def _loose_type(t: pa.DataType) -> tuple[Any, ...]:
    """Describe a column type ignoring nullability: (kind, value type, list size)."""
    if pa.types.is_fixed_size_list(t):
        return ("fixed_size_list", str(t.value_type), t.list_size)
    return ("scalar", str(t), 0)


def _open(path: str | os.PathLike[str]) -> _Header:
    """Open a recording, check its metadata, spec hash and schema; raise RecordingError."""
    p = Path(path)
    if not p.exists():
        raise RecordingError(f"{p}: no such recording")
    if not p.is_file():
        raise RecordingError(f"{p}: not a file")
    try:
        pf = pq.ParquetFile(str(p))
        schema = pf.schema_arrow
    except (OSError, pa.ArrowException) as exc:
        raise RecordingError(f"{p}: not a readable Parquet file ({exc})") from None
    raw = schema.metadata or {}
    meta: dict[str, Any] = {}
    prefix = META_PREFIX.encode()
    for key, value in raw.items():
        if key.startswith(prefix):
            name = key[len(prefix) :].decode("utf-8", "replace")
            try:
                meta[name] = json.loads(value)
            except (ValueError, UnicodeDecodeError):
                raise RecordingError(
                    f"{p}: metadata {META_PREFIX}{name} is not valid JSON"
                ) from None
    if not meta:
        raise RecordingError(f"{p}: not a linetwin recording (no {META_PREFIX}* metadata)")
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise RecordingError(
            f"{p}: recording format version {version!r} is not supported "
            f"(this reader reads version {FORMAT_VERSION!r})"
        )
    missing = [k for k in META_KEYS if k not in meta]
    if missing:
        raise RecordingError(
            f"{p}: metadata incomplete (missing: {', '.join(META_PREFIX + k for k in missing)})"
        )
    if not isinstance(meta["spec"], dict):
        raise RecordingError(f"{p}: metadata {META_PREFIX}spec is not a JSON object")
    try:
        spec = parse_spec(meta["spec"], source=str(p))
    except SpecError as exc:
        raise RecordingError(f"{p}: the stored line spec is invalid:\n{exc}") from None
    if spec.spec_hash() != meta["spec_hash"]:
        raise RecordingError(
            f"{p}: the stored spec does not match its hash {meta['spec_hash']!r} "
            f"(it hashes to {spec.spec_hash()!r}); the metadata is damaged"
        )
    n_sc = meta["n_scenarios"]
    if n_sc is None:
        n_sc = 0
    if isinstance(n_sc, bool) or not isinstance(n_sc, int) or n_sc < 0:
        raise RecordingError(f"{p}: metadata {META_PREFIX}n_scenarios is invalid: {n_sc!r}")
    expected = recording_schema(spec)
    for field in expected:
        idx = schema.get_field_index(field.name)
        if idx < 0:
            raise RecordingError(f"{p}: column {field.name!r} is missing")
        got = schema.field(idx).type
        if _loose_type(got) != _loose_type(field.type):
            raise RecordingError(
                f"{p}: column {field.name!r} has type {got}, expected {field.type}"
            )
    if n_sc == 0 and pf.metadata.num_rows != 0:
        raise RecordingError(f"{p}: holds {pf.metadata.num_rows} rows but no scenarios")
    if n_sc and pf.metadata.num_rows % n_sc:
        raise RecordingError(
            f"{p}: {pf.metadata.num_rows} rows is not a whole number of ticks of "
            f"{n_sc} scenarios; the recording is not rectangular"
        )
    return _Header(p, pf, spec, meta, n_sc)


def _to_numpy(p: Path, name: str, col: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """Convert a column without nulls to a flat numpy array (list columns are flattened)."""
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    if arr.null_count:
        raise RecordingError(f"{p}: column {name!r} holds nulls")
    if pa.types.is_fixed_size_list(arr.type):
        arr = arr.flatten()
        if arr.null_count:
            raise RecordingError(f"{p}: column {name!r} holds null values")
    return arr.to_numpy(zero_copy_only=False)


def _convert(h: _Header, table: pa.Table, first_tick: int) -> Recording:
    """Turn rows of whole ticks starting at `first_tick` into a `Recording` of arrays."""
    p, n_sc, n_st = h.path, h.n_scenarios, h.spec.n_stations
    n_rows = table.num_rows
    n_ticks = n_rows // n_sc if n_sc else 0
    tick = _to_numpy(p, "tick", table.column("tick")).reshape(n_ticks, n_sc)
    scenario = _to_numpy(p, "scenario", table.column("scenario")).reshape(n_ticks, n_sc)
    time_s = _to_numpy(p, "time_s", table.column("time_s")).reshape(n_ticks, n_sc)
    want_tick = np.arange(first_tick, first_tick + n_ticks, dtype=np.int64)
    if not (
        np.array_equal(tick, np.broadcast_to(want_tick[:, None], tick.shape))
        and np.array_equal(scenario, np.broadcast_to(np.arange(n_sc), scenario.shape))
    ):
        raise RecordingError(
            f"{p}: rows are not ordered by tick then scenario (ticks from 0, scenarios "
            f"0..{n_sc - 1} each); the recording is not rectangular"
        )
    if not np.array_equal(time_s, np.broadcast_to(time_s[:, :1], time_s.shape), equal_nan=True):
        raise RecordingError(f"{p}: scenarios of one tick have different time_s")
    arrays: dict[str, np.ndarray] = {}
    for name, (_, dtype) in STATION_COLUMNS.items():
        values = _to_numpy(p, name, table.column(name))
        arrays[name] = values.astype(dtype, copy=False).reshape(n_ticks, n_sc, n_st)
    if n_st > 1:
        values = _to_numpy(p, BUFFER_COLUMN, table.column(BUFFER_COLUMN))
        arrays[BUFFER_COLUMN] = values.reshape(n_ticks, n_sc, n_st - 1)
    else:
        arrays[BUFFER_COLUMN] = np.zeros((n_ticks, n_sc, 0), dtype=np.int64)
    for name in SCALAR_COLUMNS:
        arrays[name] = _to_numpy(p, name, table.column(name)).reshape(n_ticks, n_sc)
    return Recording(
        spec=h.spec,
        meta=h.meta,
        tick=want_tick,
        time_s=time_s[:, 0].copy() if n_sc else np.zeros(n_ticks),
        **arrays,
    )


def _columns(spec: LineSpec) -> list[str]:
    """Names of the columns the reader needs."""
    return recording_schema(spec).names


def read_spec(path: str | os.PathLike[str]) -> LineSpec:
    """Return the line spec a recording was made on, from its footer alone (checked as
    `read_recording` checks it: metadata, format version, spec hash, columns)."""
    return _open(path).spec


def read_recording(path: str | os.PathLike[str]) -> Recording:
    """Read a whole recording into numpy arrays (see `Recording` for shapes and units).

    Raises RecordingError (naming the path) for a missing, damaged or foreign file, an
    unsupported format version, a stored spec that does not match its hash, or rows that are
    not ordered by tick then scenario.
    """
    h = _open(path)
    try:
        table = h.file.read(columns=_columns(h.spec))
    except (OSError, pa.ArrowException) as exc:
        raise RecordingError(f"{h.path}: cannot read recording data ({exc})") from None
    return _convert(h, table, 0)


def iter_recording(
    path: str | os.PathLike[str], batch_ticks: int = DEFAULT_BATCH_TICKS
) -> Iterator[Recording]:
    """Stream a recording as consecutive chunks of at most `batch_ticks` ticks each.

    Each chunk is a `Recording` whose arrays cover its ticks only (`chunk.tick` gives their
    indices); concatenating the chunks along axis 0 gives `read_recording(path)`. Memory stays
    bounded by about one chunk plus one Parquet row group (recorders write 4,096 rows a group;
    row groups of other writers above 65,536 rows are streamed in batches). The file's
    metadata is checked when this function is called; damaged data raises RecordingError
    while iterating.
    """
    if isinstance(batch_ticks, bool) or not isinstance(batch_ticks, int) or batch_ticks < 1:
        raise RecordingError(f"{path}: batch_ticks must be a positive integer, got {batch_ticks}")
    h = _open(path)
    return _iter_chunks(h, batch_ticks)


def _batches(h: _Header, columns: list[str], rows: int) -> Iterator[pa.RecordBatch]:
    """The file's rows in order: whole row groups, one per core at a time, decoded with
    threads (as fast as `pq.read_table`; `iter_batches` decodes on one thread, 2-3x slower),
    except row groups much larger than `rows` (other writers), streamed in batches."""
    meta = h.file.metadata
    limit = max(4 * rows, MAX_WHOLE_GROUP_ROWS)
    together = max(1, os.cpu_count() or 1)  # row groups decoded at once, in parallel
    i = 0
    while i < meta.num_row_groups:
        if meta.row_group(i).num_rows > limit:
            yield from h.file.iter_batches(batch_size=rows, row_groups=[i], columns=columns)
            i += 1
            continue
        group = [i]
        while (
            len(group) < together
            and group[-1] + 1 < meta.num_row_groups
            and meta.row_group(group[-1] + 1).num_rows <= limit
        ):
            group.append(group[-1] + 1)
        yield from h.file.read_row_groups(group, columns=columns, use_threads=True).to_batches()
        i = group[-1] + 1


def _iter_chunks(h: _Header, batch_ticks: int) -> Iterator[Recording]:
    """Yield chunks of whole ticks from the file's record batches."""
    if h.n_scenarios == 0:
        return
    rows = batch_ticks * h.n_scenarios
    pending: list[pa.RecordBatch] = []
    n_pending = 0
    next_tick = 0
    columns = _columns(h.spec)
    try:
        for batch in _batches(h, columns, rows):
            pending.append(batch)
            n_pending += batch.num_rows
            while n_pending >= rows:
                table = pa.Table.from_batches(pending)
                yield _convert(h, table.slice(0, rows), next_tick)
                next_tick += batch_ticks
                rest = table.slice(rows)
                pending = rest.to_batches() if rest.num_rows else []
                n_pending = rest.num_rows
    except (OSError, pa.ArrowException) as exc:
        raise RecordingError(f"{h.path}: cannot read recording data ({exc})") from None
    if n_pending:
        yield _convert(h, pa.Table.from_batches(pending), next_tick)
