"""Export one scenario of a recording as a CSV plant log in the documented layout.

    export_csv("run.parquet", "run.csv")              # scenario 0, every column
    import_csv("run.csv", spec, "again.parquet")      # gives the same arrays back

Every column of the layout is written (`csv_layout.csv_header`), validity flags included,
floats in their shortest round-trip form (`nan` for NaN) and status as names, so an import
of the export reproduces the recording's arrays exactly. The recording is streamed in chunks
of ticks and the CSV written under a temporary name and renamed into place.
"""

from __future__ import annotations

import contextlib
import math
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from linetwin.replay.csv_layout import LINE_COUNTERS, STATION_FIELDS, csv_header, station_fields
from linetwin.replay.errors import ReplayError
from linetwin.twin.layout import STATUS_NAMES
from linetwin.twin.recorder import Recording, iter_recording
from linetwin.twin.snapshot import Snapshot
from linetwin.twin.spec import LineSpec

STATUS_TEXT = np.array(STATUS_NAMES)
"""Status names by code: `STATUS_TEXT[codes]`."""


def export_csv(
    recording_path: str | os.PathLike[str],
    csv_path: str | os.PathLike[str],
    *,
    scenario: int = 0,
    overwrite: bool = False,
    batch_ticks: int = 4096,
) -> int:
    """Write scenario `scenario` of a recording to `csv_path`; return the rows written.

    Raises RecordingError for an unreadable recording and ReplayError for a scenario it
    does not hold or an output path that exists (unless `overwrite`) or cannot be written;
    on error no file is left at `csv_path`.
    """
    out = Path(csv_path)
    if out.exists() and not overwrite:
        raise ReplayError(f"{out}: file exists; refusing to overwrite (pass overwrite=True)")
    chunks = iter_recording(recording_path, batch_ticks=batch_ticks)
    tmp = out.with_name(f".{out.name}.{uuid.uuid4().hex[:12]}.tmp")
    rows = 0
    try:
        with open(tmp, "wb") as fh:
            writer: pacsv.CSVWriter | None = None
            for chunk in chunks:
                if not 0 <= scenario < chunk.n_scenarios:
                    raise ReplayError(
                        f"{recording_path}: no scenario {scenario} "
                        f"(the recording has {chunk.n_scenarios})"
                    )
                table = _table(chunk, scenario)
                if writer is None:
                    fh.write((",".join(table.column_names) + "\n").encode())
                    options = pacsv.WriteOptions(include_header=False)
                    writer = pacsv.CSVWriter(fh, table.schema, write_options=options)
                writer.write_table(table)
                rows += table.num_rows
            if writer is None:
                fh.write(b"time_s\n")  # a recording without rows: header of the time column
            else:
                writer.close()
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, out)
    except OSError as exc:
        raise ReplayError(f"{out}: cannot write CSV: {exc.strerror or exc}") from None
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
    return rows


def _table(chunk: Recording, sc: int) -> pa.Table:
    """Lay out one scenario of a chunk of ticks as the CSV's columns, in header order."""
    columns = plant_log_columns(chunk.spec, chunk.time_s, lambda name: getattr(chunk, name)[:, sc])
    arrays = [pa.array(STATUS_TEXT[c] if n.endswith(".status") else c) for n, c in columns]
    return pa.Table.from_arrays(arrays, names=[n for n, _ in columns])


def plant_log_columns(
    spec: LineSpec, time_s: np.ndarray, values: Callable[[str], np.ndarray]
) -> list[tuple[str, np.ndarray]]:
    """Return `(column, values)` for every column of the plant-log layout, in header order.

    `time_s (k,)` is the time column; `values(name)` gives a recording field of `k` rows:
    `(k,)` for the line counters, `(k, n_stations)` per station (`(k, n_stations - 1)` for
    `buffer_level`). Status stays as codes (`STATUS_TEXT[codes]` gives the names). The CSV
    exporter and `api.emulator.rows_from_snapshot` both lay rows out with it.
    """
    out: list[tuple[str, np.ndarray]] = [("time_s", time_s)]
    out += [(name, values(name)) for name in LINE_COUNTERS]
    names = iter(csv_header(spec)[1 + len(LINE_COUNTERS) :])
    fields = {f: values(f) for f in STATION_FIELDS}
    for i in range(spec.n_stations):
        for field in station_fields(spec, i):
            out.append((next(names), fields[field][:, i]))
    return out


def snapshot_values(snap: Snapshot) -> dict[str, np.ndarray]:
    """Return the recording fields of a snapshot `(n_scenarios, ...)`, as `Recorder.write`
    records them (NaN temperature setpoints on stations without one)."""
    r, sp = snap.readings, snap.setpoints
    present = np.array([st.setpoints.temperature is not None for st in snap.spec.stations])
    return {
        "status": snap.status,
        "speed": sp[:, :, 0],
        "temperature_setpoint_c": np.where(present, sp[:, :, 1], np.nan),
        "temperature_c": r.temperature_c,
        "temperature_valid": r.valid[:, :, 0],
        "power_kw": r.power_kw,
        "power_valid": r.valid[:, :, 1],
        "vibration_mm_s": r.vibration_mm_s,
        "vibration_valid": r.valid[:, :, 2],
        "completed": snap.completed,
        "scrapped": snap.scrapped,
        "failures": snap.failures,
        "energy_kwh": snap.energy_kwh,
        "wear": snap.wear,
        "buffer_level": snap.buffer_level,
        "released": snap.released,
        "good_out": snap.good_out,
        "scrap_total": snap.scrap_total,
    }


def rows_from_snapshot(snap: Snapshot, spec: LineSpec) -> list[dict[str, Any]]:
    """Lay out a snapshot as plant-log rows, one per scenario: `{column: value}` in the CSV
    exporter's column order (`plant_log_columns`), JSON-ready (status as
    names, NaN readings as null with their validity flag kept, integers as ints).

    `spec` names the columns: the service's spec (the emulated line has the same stations).
    """
    values = snapshot_values(snap)
    n_sc = snap.n_scenarios
    columns = plant_log_columns(spec, np.full(n_sc, snap.time_s), values.__getitem__)
    names, cells = [], []
    for name, col in columns:
        names.append(name)
        if name.endswith(".status"):
            cells.append(STATUS_TEXT[col].tolist())
        elif col.dtype.kind == "f":
            cells.append([None if math.isnan(v) else v for v in col.tolist()])
        else:
            cells.append(col.tolist())
    return [dict(zip(names, row, strict=True)) for row in zip(*cells, strict=True)]
