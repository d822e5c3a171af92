"""Checks of the plant log importer: exact round trips, derivation rules, every error naming
its line and column with no file left behind, streaming in bounded blocks, and the CLI."""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from linetwin.replay.csv_export import export_csv
from linetwin.replay.csv_layout import csv_header
from linetwin.replay.errors import ImportCsvError
from linetwin.replay.importer import import_csv
from linetwin.twin import RecordingError, SensorFault, Twin, bundled_spec, loads_spec
from linetwin.twin.recorder import Recorder, Recording, read_recording, recording_schema

ROOT = Path(__file__).resolve().parents[2]
ARRAYS = tuple(f.name for f in fields(Recording) if f.name not in ("spec", "meta", "tick"))
TINY = 1  # block_bytes: the reader's smallest blocks, a few rows each


def assert_same(a: Recording, b: Recording, scenario: int, fields: tuple[str, ...] = ARRAYS):
    """`b` (one scenario) holds exactly scenario `scenario` of `a`, NaN where NaN."""
    for name in fields:
        x, y = getattr(a, name), getattr(b, name)
        if name != "time_s":
            x = x[:, scenario : scenario + 1]
        assert x.dtype == y.dtype, name
        assert np.array_equal(x, y, equal_nan=x.dtype.kind == "f"), name


@pytest.fixture(scope="module")
def example_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two scenarios of the example line, 5 s ticks, a setpoint change and sensor faults."""
    spec = bundled_spec("example")
    faults = [
        SensorFault("press", "power", "dropout", 100.0, 300.0),
        SensorFault("coat", "vibration", "nan", 200.0, 400.0),
    ]
    twin = Twin(spec, 2, seed=3, faults=faults)
    path = tmp_path_factory.mktemp("run") / "run.parquet"
    with Recorder(path, spec, seed=3) as rec:
        twin.run(3000.0, tick_s=5.0, on_tick=rec.write)
        twin.set_setpoints({"press": {"speed": 1.2}, "cure": {"temperature": 200.0}})
        twin.run(3000.0, tick_s=5.0, on_tick=rec.write)
    return path


@pytest.fixture(scope="module")
def example_rows(example_run: Path, tmp_path_factory: pytest.TempPathFactory) -> list[list[str]]:
    """The first 40 rows of scenario 0 of the example run, exported, header first."""
    path = tmp_path_factory.mktemp("csv") / "run.csv"
    export_csv(example_run, path)
    with open(path, newline="") as fh:
        return list(csv.reader(fh))[:41]


def write_rows(path: Path, rows: list[list[str]]) -> Path:
    with open(path, "w", newline="") as fh:
        csv.writer(fh, lineterminator="\n").writerows(rows)
    return path


def drop_columns(rows: list[list[str]], drop: Callable[[str], bool]) -> list[list[str]]:
    keep = [i for i, name in enumerate(rows[0]) if not drop(name)]
    return [[row[i] for i in keep] for row in rows]


# ---------------------------------------------------------------------- round trips


@pytest.mark.parametrize("scenario", [0, 1])
def test_export_then_import_gives_the_recorded_arrays(example_run, tmp_path, scenario):
    csv_path = tmp_path / "plant.csv"
    assert export_csv(example_run, csv_path, scenario=scenario) == 1200
    out = tmp_path / "plant.parquet"
    summary = import_csv(csv_path, bundled_spec("example"), out, block_bytes=TINY)
    a, b = read_recording(example_run), read_recording(out)
    assert_same(a, b, scenario)
    assert (summary.n_rows, summary.first_time_s, summary.last_time_s) == (1200, 5.0, 6000.0)
    assert summary.derived == () and summary.start_timestamp is None
    assert b.meta["seed"] is None and b.meta["n_scenarios"] == 1
    assert b.meta["note"] == "imported from plant.csv"
    assert b.meta["spec_hash"] == a.meta["spec_hash"]
    assert b.meta["initial_setpoints"]["cure"] == {"speed": 1.0, "temperature": 190.0}
    assert not a.power_valid.all() and np.isnan(a.vibration_mm_s).any()  # faults came through
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plant.csv", "plant.parquet"]


def test_minimal_log_derives_line_counters_failures_energy_and_wear(example_run, tmp_path):
    """Without the optional counters, the derived ones equal the twin's (failures: none were
    repaired within a tick here) and the integrated energy is within 3% of the exact one."""
    csv_path = tmp_path / "full.csv"
    export_csv(example_run, csv_path)
    with open(csv_path, newline="") as fh:
        rows = list(csv.reader(fh))
    optional = (".failures", ".energy_kwh", ".wear")
    rows = drop_columns(rows, lambda n: n in ("released", "good_out", "scrap_total"))
    rows = drop_columns(rows, lambda n: n.endswith(optional))
    summary = import_csv(
        write_rows(tmp_path / "min.csv", rows), bundled_spec("example"), tmp_path / "m.parquet"
    )
    a, b = read_recording(example_run), read_recording(tmp_path / "m.parquet")
    assert_same(a, b, 0, ("released", "good_out", "scrap_total", "failures", "status"))
    assert a.failures[-1, 0].sum() > 0
    np.testing.assert_allclose(b.energy_kwh[-1, 0], a.energy_kwh[-1, 0], rtol=0.03)
    assert (np.diff(b.energy_kwh, axis=0) >= 0).all() and (b.energy_kwh[0] == 0).all()
    assert (b.wear == 0).all()
    assert summary.derived[:3] == ("released", "good_out", "scrap_total")
    assert "press.failures" in summary.derived and "feed.temperature_c" not in summary.derived


def docs_example() -> str:
    text = (ROOT / "docs" / "recordings.md").read_text(encoding="utf-8")
    (block,) = re.findall(r"```csv\n(.*?)```", text, flags=re.S)
    return block


def test_the_documented_example_imports_with_its_fill_rules(tmp_path):
    src = tmp_path / "log.csv"
    src.write_text(docs_example(), encoding="utf-8")
    summary = import_csv(src, bundled_spec("two-station"), tmp_path / "log.parquet")
    rec = read_recording(tmp_path / "log.parquet")
    assert summary.start_timestamp == "2025-03-03T06:00:00+01:00"
    assert rec.meta["note"] == "imported from log.csv; time 0 = 2025-03-03T06:00:00+01:00"
    np.testing.assert_array_equal(rec.time_s, [0.0, 10.0, 20.0])
    np.testing.assert_array_equal(rec.released[:, 0], [1, 2, 3])  # busy first station: +1
    np.testing.assert_array_equal(rec.good_out[:, 0], [0, 0, 1])
    np.testing.assert_array_equal(rec.power_valid[:, 0, 1], [True, False, True])
    assert np.isnan(rec.power_kw[1, 0, 1]) and np.isnan(rec.vibration_mm_s).all()
    assert not rec.vibration_valid.any() and (rec.failures == 0).all()
    # b's reading dropped out on the second row: 0.5 kW is held over both intervals.
    want_b = np.array([0.0, 0.5 * 10 / 3600, 1.0 * 10 / 3600])
    np.testing.assert_allclose(rec.energy_kwh[:, 0, 1], want_b)
    np.testing.assert_allclose(rec.energy_kwh[-1, 0, 0], (2.1 + 2.2) * 10 / 3600)


def test_status_codes_blanks_case_crlf_and_a_byte_order_mark_are_accepted(tmp_path):
    lines = docs_example().splitlines()
    lines[0] = lines[0].replace(",", " , ")
    lines[1] = lines[1].replace(",busy,", ", BUSY ,").replace(",starved,", ",0,")
    src = tmp_path / "bom.csv"
    src.write_bytes(("\ufeff" + "\r\n".join(lines) + "\r\n").encode("utf-8"))
    import_csv(src, bundled_spec("two-station"), tmp_path / "bom.parquet")
    rec = read_recording(tmp_path / "bom.parquet")
    np.testing.assert_array_equal(rec.status[0, 0], [1, 0])


ONE_DOTTED_STATION = """
name = "solo"
[[stations]]
name = "oven.1"
cycle_time_s = 30.0
mtbf_s = 3000.0
mttr_s = 200.0
thermal = { ideal_min_c = 60.0, ideal_max_c = 80.0 }
"""


def test_one_station_line_with_a_dotted_name_round_trips(tmp_path):
    """No buffer column on a one-station line; `oven.1.speed` is field speed of `oven.1`."""
    spec = loads_spec(ONE_DOTTED_STATION)
    with Recorder(tmp_path / "solo.parquet", spec, seed=2) as rec:
        Twin(spec, 1, seed=2).run(4 * 3600.0, tick_s=10.0, on_tick=rec.write)
    export_csv(tmp_path / "solo.parquet", tmp_path / "solo.csv")
    header = (tmp_path / "solo.csv").read_text().splitlines()[0].split(",")
    assert "oven.1.temperature_setpoint_c" in header and "oven.1.buffer_level" not in header
    import_csv(tmp_path / "solo.csv", spec, tmp_path / "again.parquet")
    a, b = read_recording(tmp_path / "solo.parquet"), read_recording(tmp_path / "again.parquet")
    assert_same(a, b, 0)
    assert b.buffer_level.shape == (1440, 1, 0) and a.failures[-1].sum() > 0


# ---------------------------------------------------------------------- errors


def set_cell(rows: list[list[str]], line: int, column: str, value: str) -> list[list[str]]:
    out = [list(r) for r in rows]
    out[line - 1][out[0].index(column)] = value
    return out


def with_timestamps(rows: list[list[str]]) -> list[list[str]]:
    out = [list(r) for r in rows]
    out[0][0] = "timestamp"
    for i, row in enumerate(out[1:]):
        row[0] = f"2025-03-03T06:{i // 60:02d}:{i % 60:02d}Z"
    return out


def first_line(rows: list[list[str]], column: str, test: Callable[[float, float], bool]) -> int:
    """First line (> 2) whose value in `column` relates to the line before's by `test`."""
    j = rows[0].index(column)
    for line in range(3, len(rows) + 1):
        if test(float(rows[line - 2][j]), float(rows[line - 1][j])):
            return line
    raise AssertionError(f"no such line for {column}")


def decreasing(rows):  # completed drops by one where the line before had more than 0
    line = first_line(rows, "press.completed", lambda before, now: before > 0)
    value = str(int(rows[line - 2][rows[0].index("press.completed")]) - 1)
    return set_cell(rows, line, "press.completed", value), line


def scrap_over(rows):
    completed = rows[-1][rows[0].index("feed.completed")]
    return set_cell(rows, len(rows), "feed.scrapped", str(int(completed) + 1))


def rename(old: str, new: str) -> Callable[[list[list[str]]], list[list[str]]]:
    return lambda rows: set_cell(rows, 1, old, new)


def drop(*names: str) -> Callable[[list[list[str]]], list[list[str]]]:
    return lambda rows: drop_columns(rows, lambda n: n in names)


def cell(line: int, column: str, value: str) -> Callable[[list[list[str]]], list[list[str]]]:
    return lambda rows: set_cell(rows, line, column, value)


def stamped(line: int, value: str) -> Callable[[list[list[str]]], list[list[str]]]:
    return lambda rows: set_cell(with_timestamps(rows), line, "timestamp", value)


# name: (how to break the 40-row log, line, column, words of the message)
CASES: dict[str, tuple[Callable[[list[list[str]]], list[list[str]]], int, str | None, str]] = {
    # header (line 1)
    "unknown column": (rename("released", "rate"), 1, "rate", "unknown column"),
    "unknown station": (rename("feed.speed", "oven.speed"), 1, "oven.speed", "station 'oven'"),
    "unknown field": (rename("feed.wear", "feed.psi"), 1, "feed.psi", "unknown field 'psi'"),
    "setpoint the station lacks": (
        rename("feed.wear", "feed.temperature_setpoint_c"),
        1,
        "feed.temperature_setpoint_c",
        "no temperature setpoint",
    ),
    "buffer on the last station": (
        rename("pack.wear", "pack.buffer_level"),
        1,
        "pack.buffer_level",
        "no buffer behind it",
    ),
    "repeated column": (rename("good_out", "released"), 1, "released", "appears twice"),
    "empty column name": (rename("good_out", " "), 1, None, "column 3 has no name"),
    "missing column": (drop("press.speed"), 1, "press.speed", "required column is missing"),
    "missing buffer": (drop("dry.buffer_level"), 1, "dry.buffer_level", "column is missing"),
    "no energy, no power": (
        drop("press.energy_kwh", "press.power_kw", "press.power_valid"),
        1,
        "press.energy_kwh",
        "required when power_kw is absent",
    ),
    "flag without reading": (drop("press.power_kw"), 1, "press.power_valid", "without its"),
    "no time column": (drop("time_s"), 1, None, "no time column"),
    "two time columns": (rename("released", "timestamp"), 1, None, "two time columns"),
    # data (line 2 is the first data row)
    "not a number": (cell(9, "press.speed", "fast"), 9, "press.speed", "a number (got 'fast')"),
    "not an integer": (cell(17, "coat.completed", "3.0"), 17, "coat.completed", "(got '3.0')"),
    "not a flag": (cell(30, "dry.power_valid", "yes"), 30, "dry.power_valid", "1 or 0 (got 'yes')"),
    "too many cells": (lambda r: [*r[:11], [*r[11], "1"], *r[12:]], 12, None, "has 146 cells"),
    "too few cells": (lambda r: [*r[:11], r[11][:-1], *r[12:]], 12, None, "the header 145"),
    "blank line": (lambda r: [*r[:20], [], *r[20:]], 21, None, "blank line"),
    "empty cell": (cell(6, "dry.speed", ""), 6, "dry.speed", "missing value"),
    "nan setpoint": (cell(7, "press.speed", "nan"), 7, "press.speed", "finite number (got nan)"),
    "inf reading": (cell(8, "cure.temperature_c", "inf"), 8, "cure.temperature_c", "(got inf)"),
    "speed above limit": (cell(25, "press.speed", "1.5"), 25, "press.speed", "1.5 outside"),
    "temperature below limit": (
        cell(4, "cure.temperature_setpoint_c", "140"),
        4,
        "cure.temperature_setpoint_c",
        "temperature setpoint 140.0 outside the line spec's limits [150, 230]",
    ),
    "unknown status": (cell(33, "wash.status", "running"), 33, "wash.status", "(got 'running')"),
    "status code 4": (cell(3, "wash.status", "4"), 3, "wash.status", "down or 0-3 (got '4')"),
    "empty status": (cell(5, "wash.status", ""), 5, "wash.status", "missing value"),
    "negative count": (cell(2, "inspect.failures", "-1"), 2, "inspect.failures", "(got -1)"),
    "scrapped > completed": (scrap_over, 41, "feed.scrapped", "exceeds the station's completed"),
    "buffer above capacity": (
        cell(14, "feed.buffer_level", "9"),
        14,
        "feed.buffer_level",
        "(got 9)",
    ),
    "negative buffer": (
        cell(15, "deburr.buffer_level", "-2"),
        15,
        "deburr.buffer_level",
        "(got -2)",
    ),
    "negative wear": (cell(16, "coat.wear", "-0.5"), 16, "coat.wear", "negative (got -0.5)"),
    "energy goes down": (cell(40, "cure.energy_kwh", "0"), 40, "cure.energy_kwh", "decreases"),
    "time repeats": (lambda r: set_cell(r, 35, "time_s", r[33][0]), 35, "time_s", "must increase"),
    "time goes back": (cell(2, "time_s", "10.0"), 3, "time_s", "10.0 s follows 10.0 s"),
    "nan time": (cell(10, "time_s", "nan"), 10, "time_s", "finite number (got nan)"),
    "false flag with a value": (
        cell(19, "inspect.vibration_valid", "false"),
        19,
        "inspect.vibration_valid",
        "flag is false but the reading holds a value",
    ),
    "timestamp without offset": (
        stamped(13, "2025-03-03T06:00:11"),
        13,
        "timestamp",
        "without a UTC offset",
    ),
    "not a timestamp": (stamped(23, "noon"), 23, "timestamp", "ISO 8601 date-time (got 'noon')"),
    "no data rows": (lambda r: r[:1], 2, None, "no data rows"),
}


@pytest.mark.parametrize("block_bytes", [TINY, 1 << 20], ids=["tiny-blocks", "one-block"])
@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_each_error_names_line_column_and_value_and_leaves_no_file(
    example_rows, tmp_path, case, block_bytes
):
    mutate, line, column, words = CASES[case]
    src = write_rows(tmp_path / "bad.csv", mutate(example_rows))
    out = tmp_path / "out.parquet"
    with pytest.raises(ImportCsvError) as info:
        import_csv(src, bundled_spec("example"), out, block_bytes=block_bytes)
    message = str(info.value)
    assert (info.value.line, info.value.column) == (line, column), message
    where = f"{src}: line {line}" + (f", column {column!r}" if column else "")
    assert message.startswith(where + ": "), message
    assert words in message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.csv"]


def test_a_decrease_names_the_line_also_across_block_boundaries(example_rows, tmp_path):
    rows, line = decreasing(example_rows)
    src = write_rows(tmp_path / "bad.csv", rows)
    for block_bytes in (TINY, 1 << 20):
        with pytest.raises(ImportCsvError, match=rf"line {line}, column 'press.completed'"):
            import_csv(
                src, bundled_spec("example"), tmp_path / "o.parquet", block_bytes=block_bytes
            )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.csv"]


def test_file_level_problems(tmp_path):
    spec = bundled_spec("two-station")
    with pytest.raises(ImportCsvError, match="no such file"):
        import_csv(tmp_path / "absent.csv", spec, tmp_path / "o.parquet")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(ImportCsvError, match="line 1: no header line"):
        import_csv(tmp_path / "empty.csv", spec, tmp_path / "o.parquet")
    (tmp_path / "latin.csv").write_bytes("time_s,a.st\xe4tus\n".encode("latin-1"))
    with pytest.raises(ImportCsvError, match="line 1: not UTF-8 text"):
        import_csv(tmp_path / "latin.csv", spec, tmp_path / "o.parquet")
    assert not (tmp_path / "o.parquet").exists()


def test_an_existing_output_is_kept_unless_overwrite(tmp_path):
    src = tmp_path / "log.csv"
    src.write_text(docs_example())
    out = tmp_path / "log.parquet"
    out.write_bytes(b"keep me")
    with pytest.raises(RecordingError, match="file exists"):
        import_csv(src, bundled_spec("two-station"), out)
    assert out.read_bytes() == b"keep me"
    import_csv(src, bundled_spec("two-station"), out, overwrite=True, note="shift 2")
    assert read_recording(out).meta["note"].startswith("shift 2; time 0 = 2025-03-03")


# ---------------------------------------------------------------------- streaming


def test_a_long_log_streams_in_bounded_blocks(tmp_path, monkeypatch):
    """20,000 rows of the 24-station line: many small blocks, row groups of at most 4096
    rows, Arrow memory far below the file's size, and the arrays of the source back."""
    spec = bundled_spec("long")
    run = tmp_path / "long.parquet"
    with Recorder(run, spec, seed=1) as rec:
        Twin(spec, 1, seed=1).run(20_000.0, tick_s=1.0, on_tick=rec.write)
    src = tmp_path / "long.csv"
    export_csv(run, src)
    written: list[tuple[int, int]] = []
    write_block = Recorder.write_block

    def spy(self: Recorder, time_s: Any, columns: Any) -> None:
        written.append((len(time_s), pa.total_allocated_bytes()))
        write_block(self, time_s, columns)

    monkeypatch.setattr(Recorder, "write_block", spy)
    import_csv(src, spec, tmp_path / "again.parquet", block_bytes=64 << 10)
    size = src.stat().st_size
    assert size > 40e6 and sum(n for n, _ in written) == 20_000
    assert len(written) >= 4 and max(n for n, _ in written) <= 4096 + 200
    assert max(b for _, b in written) < size / 4
    meta = pq.ParquetFile(tmp_path / "again.parquet").metadata
    assert meta.num_row_groups >= 5
    assert max(meta.row_group(i).num_rows for i in range(meta.num_row_groups)) <= 4096
    assert_same(read_recording(run), read_recording(tmp_path / "again.parquet"), 0)


def test_write_block_matches_per_snapshot_writes_and_checks_columns(tmp_path):
    spec = bundled_spec("example")
    twin = Twin(spec, 3, seed=9)
    snaps = [twin.step(30.0) for _ in range(7)]
    with Recorder(tmp_path / "a.parquet", spec, seed=9, rows_per_group=4) as rec:
        for s in snaps:
            rec.write(s)
    a = read_recording(tmp_path / "a.parquet")
    names = recording_schema(spec).names[3:]
    columns = {n: getattr(a, n) for n in names}
    with Recorder(tmp_path / "b.parquet", spec, seed=9, rows_per_group=4) as rec:
        rec.write_block(a.time_s[:2], {n: c[:2] for n, c in columns.items()})
        rec.write_block(a.time_s[2:], {n: c[2:] for n, c in columns.items()})
    b = read_recording(tmp_path / "b.parquet")
    for name in ARRAYS:
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype and np.array_equal(x, y, equal_nan=x.dtype.kind == "f"), name
    assert b.meta["initial_setpoints"] == a.meta["initial_setpoints"]
    with Recorder(tmp_path / "c.parquet", spec, seed=9) as rec:
        with pytest.raises(RecordingError, match="missing: wear"):
            rec.write_block(a.time_s, {n: c for n, c in columns.items() if n != "wear"})
        with pytest.raises(RecordingError, match=r"column speed has shape \(7, 3, 9\)"):
            rec.write_block(a.time_s, {**columns, "speed": columns["speed"][:, :, 1:]})


# ---------------------------------------------------------------------- command line


def test_cli_imports_exports_and_reports_errors(cli, example_run, tmp_path):
    exported = cli(
        "recording", "export", example_run, "--out", tmp_path / "r.csv", "--scenario", "1", "--json"
    )
    assert exported.code == 0, exported.err
    assert json.loads(exported.out)["n_rows"] == 1200
    assert (tmp_path / "r.csv").read_text().splitlines()[0].split(",") == csv_header(
        bundled_spec("example")
    )
    res = cli(
        "recording",
        "import",
        tmp_path / "r.csv",
        "--line",
        "example",
        "--out",
        tmp_path / "r.parquet",
        "--json",
    )
    assert res.code == 0, res.err
    summary = json.loads(res.out)
    assert (summary["n_rows"], summary["line"], summary["derived"]) == (1200, "bracket-line", [])
    assert_same(read_recording(example_run), read_recording(tmp_path / "r.parquet"), 1)

    again = cli(
        "recording",
        "import",
        tmp_path / "r.csv",
        "--line",
        "example",
        "--out",
        tmp_path / "r.parquet",
    )
    assert again.code == 2 and "file exists" in again.err

    (tmp_path / "doc.csv").write_text(docs_example())
    human = cli(
        "recording",
        "import",
        tmp_path / "doc.csv",
        "--line",
        "two-station",
        "--out",
        tmp_path / "d.parquet",
    )
    assert human.code == 0, human.err
    assert "3 rows of line 'two-station' (2 stations), time_s 0 .. 20" in human.out
    assert "derived or filled (not in the CSV): released, good_out, scrap_total, " in human.out
    assert "failures (2 stations)" in human.out

    wrong = cli(
        "recording",
        "import",
        tmp_path / "r.csv",
        "--line",
        "two-station",
        "--out",
        tmp_path / "w.parquet",
    )
    assert wrong.code == 2
    where = f"{tmp_path / 'r.csv'}: line 1, column 'feed.status'"
    assert wrong.err.startswith(f"linetwin: error: {where}: unknown station 'feed'")
    assert not (tmp_path / "w.parquet").exists()

    bad_scenario = cli(
        "recording", "export", example_run, "--out", tmp_path / "x.csv", "--scenario", "2"
    )
    assert bad_scenario.code == 2 and "no scenario 2 (the recording has 2)" in bad_scenario.err
    assert not (tmp_path / "x.csv").exists()
