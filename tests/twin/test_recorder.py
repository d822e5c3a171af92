"""Checks of the run recorder: Parquet round trips, metadata, streaming and damaged files."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from linetwin.twin import RecordingError, Snapshot, Twin, bundled_spec, loads_spec
from linetwin.twin.recorder import (
    FORMAT_VERSION,
    Recorder,
    Recording,
    _package_version,
    iter_recording,
    read_recording,
    read_spec,
)
from linetwin.twin.spec import LineSpec

STATION_FIELDS = (
    "status",
    "temperature_c",
    "power_kw",
    "vibration_mm_s",
    "temperature_valid",
    "power_valid",
    "vibration_valid",
    "completed",
    "scrapped",
    "failures",
    "energy_kwh",
    "wear",
    "speed",
    "temperature_setpoint_c",
    "buffer_level",
    "released",
    "good_out",
    "scrap_total",
)

ONE_STATION = """
name = "solo"
[[stations]]
name = "only"
cycle_time_s = 30.0
mtbf_s = 3000.0
mttr_s = 200.0
thermal = { ideal_min_c = 60.0, ideal_max_c = 80.0 }
"""


@dataclass
class Run:
    """A recorded run and the snapshots the recorder was handed."""

    path: Path
    spec: LineSpec
    snaps: list[Snapshot]


def record(
    path: Path,
    spec: LineSpec,
    n_scenarios: int = 3,
    *,
    seed: int = 7,
    n_ticks: int = 20,
    tick_s: float = 60.0,
    **kwargs: object,
) -> Run:
    """Record `n_ticks` ticks of a fresh twin and keep the snapshots it produced."""
    snaps: list[Snapshot] = []
    twin = Twin(spec, n_scenarios, seed=seed)
    with Recorder(path, spec, seed=seed, **kwargs) as rec:  # type: ignore[arg-type]

        def on_tick(snap: Snapshot) -> None:
            snaps.append(snap)
            rec.write(snap)

        twin.run(n_ticks * tick_s, tick_s=tick_s, on_tick=on_tick)
    return Run(path, spec, snaps)


def expected(spec: LineSpec, snaps: list[Snapshot]) -> dict[str, np.ndarray]:
    """The arrays a recording of `snaps` must hold, stacked from the snapshots."""
    thermal = np.array([s.setpoints.temperature is not None for s in spec.stations])

    def stack(f: object) -> np.ndarray:
        return np.stack([f(s) for s in snaps])  # type: ignore[operator]

    return {
        "status": stack(lambda s: s.status),
        "temperature_c": stack(lambda s: s.readings.temperature_c),
        "power_kw": stack(lambda s: s.readings.power_kw),
        "vibration_mm_s": stack(lambda s: s.readings.vibration_mm_s),
        "temperature_valid": stack(lambda s: s.readings.valid[..., 0]),
        "power_valid": stack(lambda s: s.readings.valid[..., 1]),
        "vibration_valid": stack(lambda s: s.readings.valid[..., 2]),
        "completed": stack(lambda s: s.completed),
        "scrapped": stack(lambda s: s.scrapped),
        "failures": stack(lambda s: s.failures),
        "energy_kwh": stack(lambda s: s.energy_kwh),
        "wear": stack(lambda s: s.wear),
        "speed": stack(lambda s: s.setpoints[..., 0]),
        "temperature_setpoint_c": stack(lambda s: np.where(thermal, s.setpoints[..., 1], np.nan)),
        "buffer_level": stack(lambda s: s.buffer_level),
        "released": stack(lambda s: s.released),
        "good_out": stack(lambda s: s.good_out),
        "scrap_total": stack(lambda s: s.scrap_total),
    }


def assert_matches(rec: Recording, run: Run) -> None:
    """Every array of `rec` equals what the snapshots held (NaN where they had NaN)."""
    want = expected(run.spec, run.snaps)
    n_ticks, n_sc, n_st = len(run.snaps), run.snaps[0].n_scenarios, run.spec.n_stations
    assert rec.n_ticks == n_ticks
    assert rec.n_scenarios == n_sc
    np.testing.assert_array_equal(rec.tick, np.arange(n_ticks))
    np.testing.assert_array_equal(rec.time_s, [s.time_s for s in run.snaps])
    for name in STATION_FIELDS:
        got = getattr(rec, name)
        if name == "buffer_level":
            assert got.shape == (n_ticks, n_sc, n_st - 1)
        elif name in ("released", "good_out", "scrap_total"):
            assert got.shape == (n_ticks, n_sc)
        else:
            assert got.shape == (n_ticks, n_sc, n_st), name
        assert np.can_cast(want[name].dtype, got.dtype) or name == "status", name
        np.testing.assert_array_equal(got, want[name], err_msg=name)
    assert rec.status.dtype == np.int8
    assert rec.temperature_valid.dtype == np.bool_
    assert rec.completed.dtype == np.int64


@pytest.fixture(scope="module")
def example_run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    """20 ticks of 60 s of the bundled example line, 3 scenarios, several row groups."""
    path = tmp_path_factory.mktemp("rec") / "example.parquet"
    return record(path, bundled_spec(), note="test run", rows_per_group=10)


# ------------------------------------------------------------------ round trip


def test_round_trip_equals_snapshots(example_run: Run) -> None:
    rec = read_recording(example_run.path)
    assert_matches(rec, example_run)
    assert rec.spec == example_run.spec
    assert pq.ParquetFile(example_run.path).metadata.num_row_groups > 1


def test_metadata(example_run: Run) -> None:
    spec = example_run.spec
    rec = read_recording(example_run.path)
    assert rec.meta["format_version"] == FORMAT_VERSION == "1"
    assert rec.meta["spec_hash"] == spec.spec_hash()
    assert rec.meta["seed"] == 7 and rec.seed == 7
    assert rec.meta["package_version"] == _package_version()
    assert rec.meta["station_names"] == [s.name for s in spec.stations] == rec.station_names
    assert rec.meta["n_scenarios"] == 3
    assert rec.meta["note"] == "test run"
    assert rec.meta["created_utc"].endswith("+00:00")
    initial = rec.meta["initial_setpoints"]
    assert initial["press"] == {"speed": 1.0}
    assert initial["cure"] == {"speed": 1.0, "temperature": 190.0}
    # Plain pyarrow sees the same JSON-encoded key-value metadata.
    raw = pq.read_schema(example_run.path).metadata
    assert json.loads(raw[b"linetwin.spec_hash"]) == spec.spec_hash()
    assert json.loads(raw[b"linetwin.spec"]) == spec.model_dump(mode="json")


def test_plain_pyarrow_reads_rows_in_order(example_run: Run) -> None:
    table = pq.read_table(example_run.path)
    assert table.num_rows == 20 * 3
    np.testing.assert_array_equal(table["tick"].to_numpy(), np.repeat(np.arange(20), 3))
    np.testing.assert_array_equal(table["scenario"].to_numpy(), np.tile(np.arange(3), 20))
    assert table.schema.field("status").type.list_size == 10
    assert table.schema.field("buffer_level").type.list_size == 9
    first = table.slice(0, 1).to_pylist()[0]
    np.testing.assert_array_equal(first["completed"], example_run.snaps[0].completed[0])


@pytest.mark.parametrize("batch_ticks", [1, 3, 7, 20, 1000])
def test_streaming_equals_whole_read(example_run: Run, batch_ticks: int) -> None:
    whole = read_recording(example_run.path)
    chunks = list(iter_recording(example_run.path, batch_ticks=batch_ticks))
    assert [c.n_ticks for c in chunks[:-1]] == [batch_ticks] * (len(chunks) - 1)
    assert sum(c.n_ticks for c in chunks) == whole.n_ticks
    np.testing.assert_array_equal(np.concatenate([c.tick for c in chunks]), whole.tick)
    np.testing.assert_array_equal(np.concatenate([c.time_s for c in chunks]), whole.time_s)
    for name in STATION_FIELDS:
        joined = np.concatenate([getattr(c, name) for c in chunks])
        np.testing.assert_array_equal(joined, getattr(whole, name), err_msg=name)


def test_two_station_line(tmp_path: Path) -> None:
    run = record(tmp_path / "two.parquet", bundled_spec("two-station"), 2, n_ticks=15)
    rec = read_recording(run.path)
    assert_matches(rec, run)
    assert rec.buffer_level.shape == (15, 2, 1)
    assert np.isnan(rec.temperature_setpoint_c).all()  # no thermal station


def test_one_station_line_has_no_buffer_column(tmp_path: Path) -> None:
    spec = loads_spec(ONE_STATION)
    run = record(tmp_path / "one.parquet", spec, 2, n_ticks=12, rows_per_group=5)
    assert "buffer_level" not in pq.read_schema(run.path).names
    rec = read_recording(run.path)
    assert_matches(rec, run)
    assert rec.buffer_level.shape == (12, 2, 0) and rec.buffer_level.dtype == np.int64
    chunks = list(iter_recording(run.path, batch_ticks=5))
    assert [c.buffer_level.shape for c in chunks] == [(5, 2, 0), (5, 2, 0), (2, 2, 0)]


def test_setpoint_changes_show_up_in_rows(tmp_path: Path) -> None:
    spec = bundled_spec()
    twin = Twin(spec, 2, seed=3)
    press, cure, feed = (spec.station_index(n) for n in ("press", "cure", "feed"))
    path = tmp_path / "setpoints.parquet"
    with Recorder(path, spec, seed=3) as rec:
        twin.run(5 * 60.0, tick_s=60.0, on_tick=rec.write)
        twin.set_setpoints({"press": {"speed": 1.2}, "cure": {"temperature": 200.0}})
        twin.run(5 * 60.0, tick_s=60.0, on_tick=rec.write)
    got = read_recording(path)
    assert got.n_ticks == 10
    np.testing.assert_array_equal(got.speed[:5, :, press], 1.0)
    np.testing.assert_array_equal(got.speed[5:, :, press], 1.2)
    np.testing.assert_array_equal(got.temperature_setpoint_c[:5, :, cure], 190.0)
    np.testing.assert_array_equal(got.temperature_setpoint_c[5:, :, cure], 200.0)
    np.testing.assert_array_equal(got.speed[:, :, feed], 1.0)
    assert np.isnan(got.temperature_setpoint_c[:, :, press]).all()
    assert got.setpoints.shape == (10, 2, spec.n_stations, 2)
    assert got.meta["initial_setpoints"]["press"] == {"speed": 1.0}


def test_empty_recording(tmp_path: Path) -> None:
    spec = bundled_spec("two-station")
    path = tmp_path / "empty.parquet"
    with Recorder(path, spec, seed=None):
        pass
    rec = read_recording(path)
    assert rec.n_ticks == 0 and rec.seed is None
    assert rec.meta["initial_setpoints"] == {"a": {"speed": 1.0}, "b": {"speed": 1.0}}
    assert list(iter_recording(path)) == []


# ------------------------------------------------------------------ writing guarantees


def test_refuses_to_overwrite(example_run: Run, tmp_path: Path) -> None:
    spec = example_run.spec
    before = example_run.path.read_bytes()
    with pytest.raises(RecordingError, match=str(example_run.path)):
        Recorder(example_run.path, spec, seed=1)
    assert example_run.path.read_bytes() == before
    target = tmp_path / "again.parquet"
    target.write_bytes(before)
    run = record(target, bundled_spec("two-station"), 1, n_ticks=3, overwrite=True)
    assert read_recording(target).spec == run.spec


def test_crash_leaves_no_file(tmp_path: Path) -> None:
    spec = bundled_spec("two-station")
    path = tmp_path / "crash.parquet"
    twin = Twin(spec, 2, seed=1)
    with pytest.raises(RuntimeError, match="boom"), Recorder(path, spec, seed=1) as rec:
        twin.run(600.0, tick_s=60.0, on_tick=rec.write)
        rec.flush()
        assert list(tmp_path.iterdir())  # the temporary file exists meanwhile
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_file_appears_only_on_close(tmp_path: Path) -> None:
    spec = bundled_spec("two-station")
    path = tmp_path / "late.parquet"
    rec = Recorder(path, spec, seed=1, rows_per_group=2)
    Twin(spec, 2, seed=1).run(300.0, tick_s=60.0, on_tick=rec.write)
    assert not path.exists()
    rec.close()
    assert path.exists() and [p.name for p in tmp_path.iterdir()] == ["late.parquet"]
    with pytest.raises(RecordingError, match="closed"):
        rec.write(Twin(spec, 2, seed=1).snapshot())


def test_write_checks_scenarios_and_line(tmp_path: Path) -> None:
    spec = bundled_spec("two-station")
    with Recorder(tmp_path / "x.parquet", spec, seed=1) as rec:
        rec.write(Twin(spec, 2, seed=1).step(10.0))
        with pytest.raises(RecordingError, match="3 scenarios"):
            rec.write(Twin(spec, 3, seed=1).step(10.0))
        with pytest.raises(RecordingError, match="does not match"):
            rec.write(Twin(loads_spec(ONE_STATION), 2, seed=1).step(10.0))


def test_bad_arguments(tmp_path: Path) -> None:
    spec = bundled_spec("two-station")
    with pytest.raises(RecordingError, match="does not exist"):
        Recorder(tmp_path / "nope" / "x.parquet", spec, seed=1)
    with pytest.raises(RecordingError, match="rows_per_group"):
        Recorder(tmp_path / "x.parquet", spec, seed=1, rows_per_group=0)
    with pytest.raises(RecordingError, match="seed"):
        Recorder(tmp_path / "x.parquet", spec, seed="7")  # type: ignore[arg-type]


# ------------------------------------------------------------------ damaged and foreign files


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "missing.parquet"
    with pytest.raises(RecordingError, match="no such recording") as err:
        read_recording(path)
    assert str(path) in str(err.value)
    with pytest.raises(RecordingError, match="no such recording"):
        iter_recording(path)
    with pytest.raises(RecordingError, match="no such recording"):
        read_spec(path)


def test_read_spec_reads_the_footer_only(example_run: Run) -> None:
    assert read_spec(example_run.path) == bundled_spec()
    assert read_spec(example_run.path) == read_recording(example_run.path).spec


def test_garbage_file(tmp_path: Path) -> None:
    path = tmp_path / "garbage.parquet"
    path.write_bytes(b"this is not parquet at all\n" * 100)
    with pytest.raises(RecordingError, match="not a readable Parquet file") as err:
        read_recording(path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize("keep", [0.0, 0.3, 0.9, 0.999])
def test_truncated_file(example_run: Run, tmp_path: Path, keep: float) -> None:
    data = example_run.path.read_bytes()
    path = tmp_path / "truncated.parquet"
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(RecordingError, match=str(path)):
        read_recording(path)
    with pytest.raises(RecordingError, match=str(path)):
        list(iter_recording(path))


def test_parquet_without_our_metadata(tmp_path: Path) -> None:
    path = tmp_path / "foreign.parquet"
    pq.write_table(pa.table({"tick": [0, 1], "x": [1.0, 2.0]}), path)
    with pytest.raises(RecordingError, match="not a linetwin recording") as err:
        read_recording(path)
    assert str(path) in str(err.value)


def rewrite(src: Path, dst: Path, meta: dict[str, object] | None = None, table=None) -> None:
    """Copy a recording to `dst`, replacing some metadata keys (JSON-encoded) or the rows."""
    table = pq.read_table(src) if table is None else table
    raw = dict(table.schema.metadata)
    for k, v in (meta or {}).items():
        raw[f"linetwin.{k}".encode()] = json.dumps(v).encode()
    pq.write_table(table.replace_schema_metadata(raw), dst)


def test_other_format_version(example_run: Run, tmp_path: Path) -> None:
    path = tmp_path / "v2.parquet"
    rewrite(example_run.path, path, {"format_version": "2"})
    with pytest.raises(RecordingError, match="format version '2' is not supported"):
        read_recording(path)


def test_spec_hash_mismatch(example_run: Run, tmp_path: Path) -> None:
    path = tmp_path / "hash.parquet"
    rewrite(example_run.path, path, {"spec_hash": "0" * 64})
    with pytest.raises(RecordingError, match="does not match its hash"):
        read_recording(path)


def test_missing_column(example_run: Run, tmp_path: Path) -> None:
    path = tmp_path / "column.parquet"
    table = pq.read_table(example_run.path)
    rewrite(example_run.path, path, table=table.drop_columns(["wear"]))
    with pytest.raises(RecordingError, match="column 'wear' is missing"):
        read_recording(path)


def test_rows_out_of_order(example_run: Run, tmp_path: Path) -> None:
    table = pq.read_table(example_run.path)
    order = np.arange(table.num_rows)
    order[[3, 4]] = order[[4, 3]]
    path = tmp_path / "shuffled.parquet"
    rewrite(example_run.path, path, table=table.take(pa.array(order)))
    with pytest.raises(RecordingError, match="not ordered by tick then scenario"):
        read_recording(path)
    with pytest.raises(RecordingError, match="not ordered by tick then scenario"):
        list(iter_recording(path, batch_ticks=2))
    path2 = tmp_path / "ragged.parquet"
    rewrite(example_run.path, path2, table=table.slice(0, table.num_rows - 1))
    with pytest.raises(RecordingError, match="not rectangular"):
        read_recording(path2)
