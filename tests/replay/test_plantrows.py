"""Checks of the plant-data validator: the importer's every error through JSON rows and CSV
text (row within the batch and column named, nothing kept), idempotent resends, time going
back, counters going back across batches, and a 50-station hour in one batch."""

from __future__ import annotations

import csv
import io
import itertools
import math
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_importer import CASES, set_cell

from linetwin.replay.csv_blocks import BlockConverter
from linetwin.replay.csv_export import export_csv, rows_from_snapshot
from linetwin.replay.csv_layout import STATION_FIELDS, parse_header
from linetwin.replay.errors import ImportCsvError, PlantDataError
from linetwin.replay.importer import csv_options
from linetwin.replay.plantrows import PlantRows
from linetwin.twin import SensorFault, Twin, bundled_spec
from linetwin.twin.recorder import Recorder

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.lines import fifty_station_line  # noqa: E402

SRC = "gateway"


@pytest.fixture(scope="module")
def example_rows(tmp_path_factory: pytest.TempPathFactory) -> list[list[str]]:
    """The 40 rows (and header) of test_importer's `example_rows`, which its CASES break."""
    spec = bundled_spec("example")
    faults = [
        SensorFault("press", "power", "dropout", 100.0, 300.0),
        SensorFault("coat", "vibration", "nan", 200.0, 400.0),
    ]
    twin = Twin(spec, 2, seed=3, faults=faults)
    path = tmp_path_factory.mktemp("run") / "run.parquet"
    with Recorder(path, spec, seed=3) as rec:
        twin.run(200.0, tick_s=5.0, on_tick=rec.write)
    export_csv(path, path.with_suffix(".csv"))
    with open(path.with_suffix(".csv"), newline="") as fh:
        return list(csv.reader(fh))[:41]


JSON_SKIP = {  # CSV syntax JSON objects cannot have
    "too many cells",
    "too few cells",
    "repeated column",
}
JSON_CASES = {  # name: (cell value to use instead, words of the JSON message)
    "not an integer": ("3.5", "expected an integer (got 3.5)"),
    "not a flag": (None, "expected true or false (got 'yes')"),
}


def csv_text(rows: list[list[str]]) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(rows)
    return out.getvalue()


def json_value(name: str, text: str) -> Any:
    """The JSON value a gateway sends for CSV cell `text` of column `name` (text that does
    not read as the column's type stays text)."""
    if text == "":
        return None
    field = name.rpartition(".")[2]
    kind = STATION_FIELDS.get(field)
    if name in ("released", "good_out", "scrap_total") or kind == pa.int64():
        kind_name = "int"
    elif field == "status":
        return int(text) if text.isdigit() else text
    elif field.endswith("_valid"):
        return {"true": True, "1": True, "false": False, "0": False}.get(text, text)
    elif name == "timestamp":
        return text
    else:
        kind_name = "float"
    try:
        return int(text) if kind_name == "int" else float(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            return text


def json_rows(rows: list[list[str]]) -> list[dict[str, Any]]:
    header = rows[0]
    return [
        {n: json_value(n, c) for n, c in zip(header, row, strict=True)} if row else {}
        for row in rows[1:]
    ]


def assert_same(got: np.ndarray, want: np.ndarray, name: str) -> None:
    """Equal; floats to rounding (energy integrated over a split sums in another order)."""
    if want.dtype.kind == "f":
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15, err_msg=name)
    else:
        np.testing.assert_array_equal(got, want, err_msg=name)


def check_error(info: pytest.ExceptionInfo[PlantDataError], row, column, words) -> None:
    err = info.value
    message = str(err)
    assert (err.row, err.column) == (row, column), message
    where = [f"row {row}"] if row is not None else []
    where += [f"column {column!r}"] if column is not None else []
    assert message.startswith(f"{SRC}: " + ", ".join(where)), message
    assert words in message, message


ERROR_CASES = [
    pytest.param(case, body, id=f"{case}-{body}")
    for case in CASES
    for body in ("csv", "json")
    if not (body == "json" and case in JSON_SKIP)
]


@pytest.mark.parametrize(("case", "body"), ERROR_CASES)
def test_each_importer_error_names_row_and_column_and_keeps_nothing(example_rows, case, body):
    mutate, line, column, words = CASES[case]
    bad = mutate(example_rows)
    row = None if line == 1 else line - 1
    if case == "no data rows":
        row, words = None, "no rows in the batch"
    if case == "blank line":
        words = "empty row"
    if body == "json" and case in JSON_CASES:
        value, words = JSON_CASES[case]
        if value is not None:
            bad = set_cell(bad, line, column, value)
    rows = PlantRows(bundled_spec("example"), SRC)
    data = csv_text(bad) if body == "csv" else json_rows(bad)
    with pytest.raises(PlantDataError) as info:
        rows.check(data)
    check_error(info, row, column, words)
    # Nothing of the bad batch was kept: the good rows all go in, from the first.
    good = csv_text(example_rows) if body == "csv" else json_rows(example_rows)
    batch = rows.check(good)
    assert (batch.accepted, batch.duplicates, rows.rows) == (40, 0, 40)


def test_json_and_csv_give_the_importers_arrays(example_rows):
    spec = bundled_spec("example")
    layout = parse_header(example_rows[0], spec, "x")
    parse, convert = csv_options(layout)
    table = pacsv.read_csv(
        io.BytesIO(csv_text(example_rows).encode()),
        parse_options=parse,
        convert_options=convert,
    )
    want_t, want = BlockConverter(layout).convert(table.combine_chunks().to_batches()[0])
    for data in (csv_text(example_rows), json_rows(example_rows)):
        got = PlantRows(spec).check(data)
        np.testing.assert_array_equal(got.time_s, want_t)
        assert got.columns.keys() == want.keys()
        for name, values in want.items():
            np.testing.assert_array_equal(got.columns[name], values, err_msg=name)


def test_resends_are_ignored_and_counted(example_rows):
    rows = json_rows(example_rows)
    plant = PlantRows(bundled_spec("example"), SRC)
    first = plant.check(rows[:20])
    again = plant.check(rows[10:30])
    assert (again.accepted, again.duplicates) == (10, 10)
    np.testing.assert_array_equal(again.time_s, [float(r["time_s"]) for r in rows[20:30]])
    same = plant.check(rows[10:30])
    assert (same.accepted, same.duplicates, same.received) == (0, 20, 20)
    assert (plant.rows, plant.duplicates, plant.last_time_s) == (30, 30, rows[29]["time_s"])
    whole = PlantRows(bundled_spec("example")).check(rows[:30])
    for name, values in whole.columns.items():
        parts = np.concatenate([first.columns[name], again.columns[name]])
        assert_same(parts, values, name)


def test_a_time_before_the_last_that_was_never_received_is_an_error(example_rows):
    rows = json_rows(example_rows)
    plant = PlantRows(bundled_spec("example"), SRC)
    plant.check(rows[:20])
    late = dict(rows[5], time_s=rows[5]["time_s"] + 0.5)
    with pytest.raises(PlantDataError) as info:
        plant.check([rows[20], late])
    check_error(info, 2, "time_s", "time goes back: 30.5 s is before the last received")
    assert plant.rows == 20 and plant.last_time_s == rows[19]["time_s"]
    assert plant.check(rows[20:]).accepted == 20


def test_counters_going_back_across_batches_are_refused_and_state_does_not_advance(
    example_rows,
):
    """The minimal layout derives failures and energy: a failed batch leaves the derived
    counters where they were, so the final arrays equal those of one clean batch."""
    optional = (".failures", ".energy_kwh", ".wear", "released", "good_out", "scrap_total")
    keep = [i for i, n in enumerate(example_rows[0]) if not n.endswith(optional)]
    minimal = [[r[i] for i in keep] for r in example_rows]
    rows = json_rows(minimal)
    spec = bundled_spec("example")
    plant = PlantRows(spec, SRC)
    first = plant.check(rows[:20])
    bad = [dict(r) for r in rows[20:]]
    bad[3]["press.completed"] = rows[19]["press.completed"] - 1
    with pytest.raises(PlantDataError) as info:
        plant.check(bad)
    check_error(info, 4, "press.completed", "cumulative value decreases")
    second = plant.check(rows[20:])
    whole = PlantRows(spec).check(rows)
    for name, values in whole.columns.items():
        parts = np.concatenate([first.columns[name], second.columns[name]])
        assert_same(parts, values, name)


def test_a_failed_block_leaves_the_converters_state_as_it_was(example_rows):
    layout = parse_header(example_rows[0], bundled_spec("example"), "x")
    parse, convert = csv_options(layout)

    def batch(rows: list[list[str]]) -> Any:
        text = csv_text([example_rows[0], *rows]).encode()
        table = pacsv.read_csv(io.BytesIO(text), parse_options=parse, convert_options=convert)
        return table.combine_chunks().to_batches()[0]

    conv = BlockConverter(layout)
    conv.convert(batch(example_rows[1:21]))
    before = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in vars(conv).items()}
    prev = {k: v.copy() for k, v in conv._prev.items()}
    bad = set_cell(example_rows, 40, "cure.energy_kwh", "0")  # the last row fails
    with pytest.raises(ImportCsvError):
        conv.convert(batch(bad[21:]))
    for name, value in before.items():
        if isinstance(value, np.ndarray):
            np.testing.assert_array_equal(getattr(conv, name), value, err_msg=name)
    assert conv.rows == 20 and conv.last_time == before["last_time"]
    assert conv._prev.keys() == prev.keys()
    for k, v in prev.items():
        np.testing.assert_array_equal(conv._prev[k], v)


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_any_split_with_resends_gives_the_one_batch_arrays(example_rows, data):
    """Property: splitting the rows into batches, each resending some rows already sent,
    gives exactly the arrays of one batch; resends are counted."""
    rows = json_rows(example_rows)
    cuts = sorted(data.draw(st.sets(st.integers(1, 39), max_size=5)))
    bounds = [0, *cuts, 40]
    plant = PlantRows(bundled_spec("example"))
    parts, resent = [], 0
    for a, b in itertools.pairwise(bounds):
        back = data.draw(st.integers(0, a))
        batch = plant.check(rows[a - back : b])
        assert batch.duplicates == back
        resent += back
        parts.append(batch)
    whole = PlantRows(bundled_spec("example")).check(rows)
    assert plant.duplicates == resent and plant.rows == 40
    for name, values in whole.columns.items():
        got = np.concatenate([p.columns[name] for p in parts])
        assert_same(got, values, name)


def test_rows_older_than_the_remembered_times_count_as_resends(example_rows):
    rows = json_rows(example_rows)
    plant = PlantRows(bundled_spec("example"), SRC, remember_rows=10)
    for a in range(0, 30, 5):
        plant.check(rows[a : a + 5])
    assert plant.check(rows[:3]).duplicates == 3  # forgotten: taken as resends
    late = dict(rows[25], time_s=rows[25]["time_s"] + 0.5)  # remembered span: an error
    with pytest.raises(PlantDataError, match="time goes back"):
        plant.check([late])


def test_later_batches_may_reorder_columns_but_not_change_them(example_rows):
    plant = PlantRows(bundled_spec("example"), SRC)
    plant.check(csv_text(example_rows[:11]))
    order = [0, *range(len(example_rows[0]) - 1, 0, -1)]
    reordered = [[r[i] for i in order] for r in [example_rows[0], *example_rows[11:21]]]
    assert plant.check(csv_text(reordered)).accepted == 10
    fewer = [r[:-1] for r in [example_rows[0], *example_rows[21:]]]
    with pytest.raises(PlantDataError) as info:
        plant.check(csv_text(fewer))
    check_error(info, None, example_rows[0][-1], "missing, but in the first accepted batch")


def test_timestamps_resend_and_go_back_in_json(example_rows):
    rows = json_rows(example_rows)
    for i, r in enumerate(rows):
        del r["time_s"]
        r["timestamp"] = f"2025-03-03T06:{i // 60:02d}:{i % 60:02d}+01:00"
    plant = PlantRows(bundled_spec("example"), SRC)
    plant.check(rows[:10])
    assert plant.check(rows[5:15]).duplicates == 5
    assert plant.last_time_s == 14.0 and plant.start_timestamp == "2025-03-03T06:00:00+01:00"
    back = dict(rows[15], timestamp="2025-03-03T05:59:59+01:00")
    with pytest.raises(PlantDataError) as info:
        plant.check([back])
    check_error(info, 1, "timestamp", "time goes back: -1.0 s")


def test_json_strictness_and_shapes():
    spec = bundled_spec("two-station")
    plant = PlantRows(spec, SRC)
    row = {
        "time_s": 0,
        "a.status": 1,
        "a.speed": 1.0,
        "a.completed": 0,
        "a.scrapped": 0,
        "a.energy_kwh": 0.0,
        "a.buffer_level": 0,
        "b.status": "starved",
        "b.speed": 1,
        "b.completed": 0.0,  # an integral number is a count
        "b.scrapped": 0,
        "b.energy_kwh": 0,
    }
    with pytest.raises(PlantDataError) as info:
        plant.check({"rows": [row]})  # type: ignore[arg-type]
    check_error(info, None, None, "expected a list of rows")
    with pytest.raises(PlantDataError) as info:
        plant.check([row, 5])  # type: ignore[list-item]
    check_error(info, 2, None, "expected an object, got 5")
    with pytest.raises(PlantDataError) as info:
        plant.check([dict(row, **{"a.completed": True})])
    check_error(info, 1, "a.completed", "expected an integer (got True)")
    with pytest.raises(PlantDataError) as info:
        plant.check([dict(row, **{"a.status": 1.5})])
    check_error(info, 1, "a.status", "expected a status name or code 0-3 (got 1.5)")
    with pytest.raises(PlantDataError) as info:
        plant.check([dict(row, **{"a.scrapped": 2**70})])
    check_error(info, 1, "a.scrapped", "expected an integer")
    with pytest.raises(PlantDataError) as info:
        plant.check([row, dict(row, time_s=1, **{"b.speed": [1, 2]})])
    check_error(info, 2, "b.speed", "expected a number (got [1, 2])")
    with pytest.raises(PlantDataError) as info:
        plant.check([row, dict(row, time_s=1, **{"a.status": {"busy": 1}})])
    check_error(info, 2, "a.status", "status name or code 0-3 (got {'busy': 1})")
    sparse = {k: v for k, v in row.items() if k != "b.speed"}
    with pytest.raises(PlantDataError) as info:  # a key missing in one row: an empty cell
        plant.check([row, dict(sparse, time_s=1)])
    check_error(info, 2, "b.speed", "missing value")
    batch = plant.check([row, dict(row, time_s=1)])
    assert batch.accepted == 2 and batch.columns["status"][:, 0].tolist() == [[1, 0], [1, 0]]
    assert math.isnan(batch.columns["temperature_setpoint_c"][0, 0, 0])


def test_a_50_station_hour_in_one_batch_json_and_csv():
    spec = fifty_station_line()
    twin = Twin(spec, 1, seed=5)
    snaps = [twin.step(1.0) for _ in range(3600)]
    rows = [r for s in snaps for r in rows_from_snapshot(s, spec)]
    text = csv_text(
        [list(rows[0]), *([str(v) if v is not None else "" for v in r.values()] for r in rows)]
    )
    last = snaps[-1]
    for data in (rows, text):
        batch = PlantRows(spec).check(data)
        assert batch.accepted == 3600 and batch.duplicates == 0
        np.testing.assert_array_equal(batch.columns["completed"][-1], last.completed)
        np.testing.assert_array_equal(batch.columns["buffer_level"][-1], last.buffer_level)
        np.testing.assert_array_equal(batch.columns["status"][-1], last.status)
        np.testing.assert_array_equal(batch.time_s, np.arange(1.0, 3601.0))


def test_csv_bytes_with_a_byte_order_mark_and_crlf_and_timestamps():
    text = (ROOT / "docs" / "recordings.md").read_text(encoding="utf-8")
    (block,) = re.findall(r"```csv\n(.*?)```", text, flags=re.S)
    body = ("\ufeff" + block.replace("\n", "\r\n")).encode()
    plant = PlantRows(bundled_spec("two-station"), SRC)
    batch = plant.check(body)
    assert batch.accepted == 3 and plant.start_timestamp == "2025-03-03T06:00:00+01:00"
    np.testing.assert_array_equal(batch.time_s, [0.0, 10.0, 20.0])
    assert plant.check(body).duplicates == 3
    with pytest.raises(PlantDataError) as info:
        plant.check(b"time_s,a.st\xe4tus\n")
    check_error(info, None, None, "not UTF-8 text")
