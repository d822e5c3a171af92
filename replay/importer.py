"""Import plant logs (CSV in the documented layout) as recordings, streaming block by block.

    spec = load_spec("line.toml")
    summary = import_csv("plant.csv", spec, "plant.parquet", note="press line, week 12")
    rec = read_recording("plant.parquet")  # every recording reader works on the result

The CSV is read by pyarrow's streaming reader in blocks of about `block_bytes` bytes with an
explicit type per column; each block is checked, its missing values derived or filled, and
written as Parquet row groups through `twin.recorder.Recorder`, so memory is bounded by a few
blocks whatever the length of the log, and a failed import leaves no output file. The layout
and its rules are in `replay.csv_layout` and `docs/recordings.md`.
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from linetwin.replay.csv_blocks import BlockConverter
from linetwin.replay.csv_layout import FALSE_VALUES, TRUE_VALUES, Layout, csv_error, parse_header
from linetwin.replay.errors import ImportCsvError
from linetwin.twin.errors import RecordingError
from linetwin.twin.recorder import Recorder
from linetwin.twin.spec import LineSpec

DEFAULT_BLOCK_BYTES = 1 << 20
"""Bytes of CSV text per block: about 800 rows of a 50-station log at full precision."""


@dataclass(frozen=True)
class ImportSummary:
    """What `import_csv` wrote: paths, row count, time span (s) and the values it derived.

    `start_timestamp` is the first row's `timestamp` cell (time 0) when the log has one.
    `derived` names the recorded values the CSV lacked (`released`, `press.wear`, ...).
    """

    csv_path: Path
    out_path: Path
    line: str
    n_rows: int
    n_stations: int
    first_time_s: float
    last_time_s: float
    start_timestamp: str | None
    derived: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        """Return the summary as JSON-ready values."""
        out = asdict(self)
        out.update(csv_path=str(self.csv_path), out_path=str(self.out_path))
        out["derived"] = list(self.derived)
        return out


def read_header(path: Path) -> list[str]:
    """Read the header line of a CSV file (names stripped of blanks); raise ImportCsvError if
    there is none."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            header = next(csv.reader(fh), None)
    except FileNotFoundError:
        raise ImportCsvError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ImportCsvError(f"{path}: is a folder, not a CSV file") from None
    except UnicodeDecodeError as exc:
        raise csv_error(str(path), 1, None, f"not UTF-8 text ({exc.reason})") from None
    except (OSError, csv.Error) as exc:
        raise ImportCsvError(f"{path}: cannot read the header: {exc}") from None
    if not header:
        raise csv_error(str(path), 1, None, "no header line (the file is empty or starts blank)")
    return [name.strip() for name in header]


def import_csv(
    csv_path: str | os.PathLike[str],
    spec: LineSpec,
    out_path: str | os.PathLike[str],
    *,
    note: str = "",
    overwrite: bool = False,
    block_bytes: int = DEFAULT_BLOCK_BYTES,
) -> ImportSummary:
    """Convert plant log `csv_path` of line `spec` into the recording `out_path`.

    The recording has one scenario and one tick per CSV row, `seed` null, and the note
    `note` (default `imported from NAME.csv`), followed by `; time 0 = TIMESTAMP` when the
    log has a `timestamp` column. Raises ImportCsvError naming the file, the 1-based line
    (the header is line 1), the column and the bad value for data that breaks the layout,
    and RecordingError for an output path that exists (unless `overwrite`) or cannot be
    written. On any error no file is left at `out_path`.
    """
    src = Path(csv_path)
    if isinstance(block_bytes, bool) or not isinstance(block_bytes, int) or block_bytes < 1:
        raise ImportCsvError(f"{src}: block_bytes must be a positive integer, got {block_bytes}")
    header = read_header(src)
    layout = parse_header(header, spec, str(src))
    converter = BlockConverter(layout)
    with Recorder(out_path, spec, seed=None, overwrite=overwrite) as rec:
        base_note = note or f"imported from {src.name}"
        pending: list[tuple[np.ndarray, dict[str, np.ndarray]]] = []
        try:
            reader = _open_reader(src, layout, block_bytes, len(",".join(header)))
            for batch in reader:
                pending.append(converter.convert(batch))
                if converter.rows - rec.n_ticks >= rec.rows_per_group:
                    _write(rec, pending, base_note, converter.start_timestamp)
        except pa.ArrowInvalid as exc:
            raise diagnose(src, layout, converter.rows, exc) from None
        except (OSError, pa.ArrowException) as exc:
            raise ImportCsvError(f"{src}: cannot read the CSV file: {exc}") from None
        _write(rec, pending, base_note, converter.start_timestamp)
        if rec.n_ticks == 0:
            raise csv_error(str(src), 2, None, "no data rows after the header")
    if converter.first_time is None or converter.last_time is None:  # pragma: no cover
        raise RecordingError(f"{src}: no rows were converted")
    return ImportSummary(
        csv_path=src,
        out_path=Path(out_path),
        line=spec.name,
        n_rows=converter.rows,
        n_stations=spec.n_stations,
        first_time_s=converter.first_time,
        last_time_s=converter.last_time,
        start_timestamp=converter.start_timestamp,
        derived=layout.derived(),
    )


def _write(
    rec: Recorder,
    pending: list[tuple[np.ndarray, dict[str, np.ndarray]]],
    note: str,
    start_timestamp: str | None,
) -> None:
    """Write the converted blocks in `pending` as one block of ticks, and empty the list.

    Blocks are gathered up to the recorder's `rows_per_group` so that row groups are not as
    small as the CSV blocks. The note, with the log's time 0, is set before the first write.
    """
    if not pending:
        return
    if rec.n_ticks == 0:
        rec.note = note + (f"; time 0 = {start_timestamp}" if start_timestamp else "")
    time_s = np.concatenate([t for t, _ in pending])
    columns = {name: np.concatenate([c[name] for _, c in pending]) for name in pending[0][1]}
    pending.clear()
    rec.write_block(time_s, columns)


def _open_reader(
    path: Path, layout: Layout, block_bytes: int, header_chars: int
) -> pacsv.CSVStreamingReader:
    """Open pyarrow's streaming CSV reader with the layout's types (header skipped).

    Blocks hold at least a few rows' worth of text (a row is about as long as the header),
    since pyarrow refuses a row longer than a block.
    """
    parse, convert = csv_options(layout)
    return pacsv.open_csv(
        str(path),
        read_options=pacsv.ReadOptions(
            block_size=max(block_bytes, 4 * header_chars + 4096),
            skip_rows=1,
            column_names=list(layout.names),
            use_threads=True,
        ),
        parse_options=parse,
        convert_options=convert,
    )


def csv_options(layout: Layout) -> tuple[pacsv.ParseOptions, pacsv.ConvertOptions]:
    """Return pyarrow's CSV parse and convert options for the layout (types, empty cells,
    flags): the CSV importer's and the plant-data route's."""
    return (
        pacsv.ParseOptions(ignore_empty_lines=False, newlines_in_values=False),
        pacsv.ConvertOptions(
            column_types=layout.column_types(),
            null_values=[""],
            strings_can_be_null=True,
            quoted_strings_can_be_null=True,
            true_values=list(TRUE_VALUES),
            false_values=list(FALSE_VALUES),
        ),
    )


def diagnose(path: Path, layout: Layout, rows_before: int, exc: pa.ArrowInvalid) -> ImportCsvError:
    """Find the cell behind pyarrow's parse error `exc`, at or after data row `rows_before`.

    pyarrow names the column index but not the row; this rescans the file with the `csv`
    module (slow, but only on the error path) and checks that column's cells.
    """
    with open(path, newline="", encoding="utf-8-sig", errors="replace") as fh:
        return diagnose_lines(str(path), fh, layout, rows_before, exc)


def diagnose_lines(
    source: str, lines: Iterable[str], layout: Layout, rows_before: int, exc: pa.ArrowInvalid
) -> ImportCsvError:
    """`diagnose` on CSV text given as lines (header first), named `source` in the error."""
    n = len(layout.names)
    m = re.search(r"CSV column #(\d+)", str(exc))
    col = layout.names[int(m.group(1))] if m else None
    types = layout.column_types()
    reader = csv.reader(lines)
    next(reader, None)
    end = 1
    for row_no, row in enumerate(reader):
        line, end = end + 1, reader.line_num
        if row_no < rows_before or not row:
            continue
        if end != line:
            return csv_error(
                source,
                line,
                None,
                "a quoted value spans lines; values must not hold line breaks",
            )
        if len(row) != n:
            return csv_error(source, line, None, f"row has {len(row)} cells, the header {n}")
        if col is not None and not _parses(row[layout.names.index(col)], types[col]):
            value = row[layout.names.index(col)]
            kind = {"double": "a number", "int64": "an integer", "bool": "true, false, 1 or 0"}
            want = kind.get(str(types[col]), "UTF-8 text")
            return csv_error(source, line, col, f"expected {want} (got {value!r})")
    return ImportCsvError(f"{source}: cannot parse the CSV file: {exc}", column=col)


def _parses(text: str, t: pa.DataType) -> bool:
    """Whether pyarrow's CSV reader accepts `text` as a cell of type `t`."""
    text = text.strip()
    if text == "":
        return True
    if t == pa.bool_():
        return text in TRUE_VALUES or text in FALSE_VALUES
    if t == pa.string() or pa.types.is_dictionary(t):
        return "\ufffd" not in text
    try:
        pa.array([text]).cast(t)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return False
    return True
