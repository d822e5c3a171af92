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
import os
import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from linetwin.replay.csv_layout import LINE_COUNTERS, csv_header, station_fields
from linetwin.replay.errors import ReplayError
from linetwin.twin.layout import STATUS_NAMES
from linetwin.twin.recorder import Recording, iter_recording

_STATUS = np.array(STATUS_NAMES)


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
    spec = chunk.spec
    columns: list[pa.Array] = [pa.array(chunk.time_s)]
    columns += [pa.array(getattr(chunk, name)[:, sc]) for name in LINE_COUNTERS]
    for i in range(spec.n_stations):
        for field in station_fields(spec, i):
            values = getattr(chunk, field)[:, sc, i]
            if field == "status":
                values = _STATUS[values]
            columns.append(pa.array(values))
    return pa.Table.from_arrays(columns, names=csv_header(spec))
