"""Checks of the plant seam: the external plant publishes a snapshot per measured row in plant
time (the newest restored exactly, the others with their measured values), keeps published and
in-force setpoints apart, says when its data are stale or bad, records what it takes, and takes
rows from several threads at once."""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from linetwin.api.errors import ApiError
from linetwin.api.plant import ExternalPlant, Plant, TwinPlant
from linetwin.replay.csv_export import rows_from_snapshot
from linetwin.replay.errors import PlantDataError
from linetwin.twin import Twin, bundled_spec
from linetwin.twin.errors import SetpointError
from linetwin.twin.kpi import window_kpis
from linetwin.twin.realtime import RealtimeTwin
from linetwin.twin.recorder import Recorder, read_recording
from linetwin.twin.snapshot import Snapshot

MEASURED = ("status", "completed", "scrapped", "failures", "buffer_level", "released")
MEASURED += ("good_out", "scrap_total", "energy_kwh", "wear", "setpoints")


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def run_line(n: int, seed: int = 4, tick_s: float = 1.0) -> tuple[list[Snapshot], list[dict]]:
    spec = bundled_spec("example")
    twin = Twin(spec, 1, seed=seed)
    snaps = [twin.step(tick_s) for _ in range(n)]
    return snaps, [r for s in snaps for r in rows_from_snapshot(s, spec)]


@pytest.fixture(scope="module")
def line() -> tuple[list[Snapshot], list[dict]]:
    return run_line(900)


def test_both_plants_are_plants():
    spec = bundled_spec("example")
    assert isinstance(ExternalPlant(spec, seed=0), Plant)
    twin_plant = TwinPlant(RealtimeTwin(Twin(spec, 1, seed=0)))
    assert isinstance(twin_plant, Plant)
    assert twin_plant.first_snapshot() is not None and twin_plant.stale_reason() is None


def test_every_row_becomes_a_snapshot_with_its_measured_values(line):
    snaps, rows = line
    plant = ExternalPlant(bundled_spec("example"), seed=1)
    sub = plant.subscribe(maxsize=1000)
    first = plant.ingest(rows[:600], "gw")
    second = plant.ingest(rows[500:], "gw")
    assert (first.accepted, first.duplicates) == (600, 0)
    assert (second.accepted, second.duplicates, second.last_time_s) == (300, 100, 900.0)
    got = sub.drain()
    assert [s.time_s for s in got] == [s.time_s for s in snaps]
    for want, have in zip(snaps, got, strict=True):
        for name in MEASURED:
            np.testing.assert_array_equal(getattr(have, name), getattr(want, name), err_msg=name)
        np.testing.assert_array_equal(have.readings.valid, want.readings.valid)
    assert plant.latest is got[-1] and plant.rows == 900 and plant.duplicates == 100
    # Status times are integrated from the reported statuses: they add up to the time.
    total = got[-1].status_time_s.sum(axis=-1) - got[0].status_time_s.sum(axis=-1)
    np.testing.assert_allclose(total, 899.0)
    kpi, ref = window_kpis(got[0], got[-1]), window_kpis(snaps[0], snaps[-1])
    np.testing.assert_allclose(kpi.throughput_per_hour, ref.throughput_per_hour)
    np.testing.assert_allclose(kpi.energy_kwh_per_hour, ref.energy_kwh_per_hour)
    np.testing.assert_allclose(kpi.utilisation, ref.utilisation, atol=0.01)


def test_the_newest_row_restores_a_line_the_twin_can_run_on(line):
    _snaps, rows = line
    spec = bundled_spec("example")
    plant = ExternalPlant(spec, seed=2)
    plant.ingest(rows[:300])
    snap = plant.latest
    assert snap is not None and snap.time_s == 300.0
    twin = Twin(spec, 1, state=snap.state.copy(), time_s=snap.time_s, setpoints=snap.setpoints)
    later = twin.step(600.0)
    assert (later.completed >= snap.completed).all() and later.good_out[0] > snap.good_out[0]


def test_a_bad_batch_is_refused_whole_and_marks_the_data_bad(line):
    _, rows = line
    plant = ExternalPlant(bundled_spec("example"), seed=0)
    sub = plant.subscribe()
    plant.ingest(rows[:10])
    bad = [dict(r) for r in rows[10:20]]
    bad[4]["press.completed"] = -1
    with pytest.raises(PlantDataError) as info:
        plant.ingest(bad, "gw")
    assert (info.value.row, info.value.column) == (5, "press.completed")
    assert len(sub.drain()) == 10 and plant.rows == 10
    reason = plant.stale_reason()
    assert reason is not None and "rejected" in reason and "row 5" in reason
    plant.ingest(rows[10:20])
    assert plant.stale_reason() is None and plant.rows == 20


def test_stale_after_wall_seconds_a_gap_in_plant_time_and_readings_out_of_range():
    _snaps, rows = run_line(20)
    clock = FakeClock()
    plant = ExternalPlant(bundled_spec("example"), seed=0, stale_after_s=30.0, clock=clock)
    assert plant.stale_reason() == "no plant data received yet"
    plant.ingest(rows[:10])
    assert plant.stale_reason() is None
    clock.now += 31.0
    assert "no new plant data for 31.0 s" in (plant.stale_reason() or "")
    assert plant.stale_reason(now_wall=clock.now - 10.0) is None
    jump = dict(rows[10], time_s=100.0)
    plant.ingest([jump])
    assert "a gap of 90 plant s before the newest row" in (plant.stale_reason() or "")
    hot = dict(rows[11], time_s=101.0)
    hot["cure.temperature_c"], hot["cure.temperature_valid"] = 5000.0, True
    plant.ingest([hot])
    assert "cure.temperature_c = 5000" in (plant.stale_reason() or "")
    hot["cure.temperature_valid"], hot["time_s"] = False, 102.0
    hot["cure.temperature_c"] = None
    plant.ingest([hot])
    assert plant.stale_reason() is None


def test_published_and_in_force_setpoints_and_running_by_hand():
    spec = bundled_spec("example")
    twin = Twin(spec, 1, seed=3)
    plant = ExternalPlant(spec, seed=0, hand_after_s=20.0)

    def send(seconds: int) -> None:
        rows = [r for _ in range(seconds) for r in rows_from_snapshot(twin.step(1.0), spec)]
        plant.ingest(rows, "gw")

    np.testing.assert_array_equal(plant.setpoints, twin.setpoints)  # nominal before data
    send(10)
    assert plant.published is None and plant.hand_reason() is None
    wanted = twin.setpoints[0].copy()
    wanted[0, 0] = 1.1
    plant.set_setpoints(wanted[None], "controller")
    np.testing.assert_array_equal(plant.published, wanted)
    assert plant.published_source == "controller"
    send(10)  # the plant has not applied them yet: within hand_after_s
    assert plant.hand_reason() is None
    send(15)  # still not applied after 25 s: run by hand
    assert plant.hand_reason() == (
        "the plant runs other setpoints than published: feed.speed runs 1 (published 1.1)"
    )
    np.testing.assert_array_equal(plant.setpoints, twin.setpoints)  # in force: reported
    twin.set_setpoints(wanted[None])
    send(1)
    assert plant.hand_reason() is None
    with pytest.raises(SetpointError, match="controller"):
        plant.set_setpoints({"feed": {"speed": 9.0}}, "controller")
    plant.set_setpoints({"feed": {"speed": 1.05}}, "engineer")
    assert plant.published is not None and plant.published[0, 0] == 1.05


def test_recording_what_is_ingested(tmp_path, line):
    snaps, rows = line
    spec = bundled_spec("example")
    path = tmp_path / "plant.parquet"
    plant = ExternalPlant(spec, seed=0, recorder=Recorder(path, spec, seed=None, note="plant"))
    plant.ingest(rows[:500])
    plant.ingest(rows[400:])
    plant.stop()
    rec = read_recording(path)
    assert rec.n_ticks == 900 and rec.meta["note"] == "plant"
    np.testing.assert_array_equal(rec.time_s, [s.time_s for s in snaps])
    np.testing.assert_array_equal(rec.completed[:, 0], np.stack([s.completed[0] for s in snaps]))
    np.testing.assert_array_equal(rec.good_out[-1], snaps[-1].good_out)


def test_many_feeders_at_once_keep_time_order(line):
    """Four threads send overlapping batches: each row is taken once, in time order."""
    _, rows = line
    plant = ExternalPlant(bundled_spec("example"), seed=0)
    sub = plant.subscribe(maxsize=2000)
    errors: list[BaseException] = []

    def feed(offset: int) -> None:
        for a in range(offset, 900, 40):
            try:
                plant.ingest(rows[max(0, a - 30) : a + 10], f"feeder {offset}")
            except PlantDataError as exc:  # a batch that arrives late goes back in time
                if "time goes back" not in str(exc):
                    errors.append(exc)

    threads = [threading.Thread(target=feed, args=(o,)) for o in (0, 10, 20, 30)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    times = [s.time_s for s in sub.drain()]
    assert times == sorted(set(times)) and len(times) == plant.rows
    assert plant.rows + plant.duplicates >= 900 and plant.latest is not None


def test_first_snapshot_waits_and_stop_ends_everything(line):
    _, rows = line
    plant = ExternalPlant(bundled_spec("example"), seed=0)
    assert plant.first_snapshot(timeout=0.01) is None
    timer = threading.Timer(0.05, plant.ingest, args=(rows[:3],))
    timer.start()
    first = plant.first_snapshot(timeout=10.0)
    timer.join()
    assert first is not None and first.time_s == 3.0
    plant.start()
    assert plant.running
    sub = plant.subscribe()
    plant.stop()
    assert not plant.running and sub.closed
    with pytest.raises(ApiError, match="stopped"):
        plant.ingest(rows[3:5])
    with pytest.raises(ApiError, match="stale_after_s"):
        ExternalPlant(bundled_spec("example"), stale_after_s=0.0)


def test_the_documented_example_runs():
    text = (Path(__file__).resolve().parents[2] / "docs" / "plant.md").read_text()
    (block,) = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    exec(compile(block, "docs/plant.md", "exec"), {})


def test_readers_do_not_wait_for_a_batch_in_progress(line, monkeypatch):
    _, rows = line
    plant = ExternalPlant(bundled_spec("example"), seed=0)
    plant.ingest(rows[:10])
    entered, release = threading.Event(), threading.Event()
    build = plant._measured.snapshots

    def slow(batch):
        entered.set()
        release.wait(10.0)
        return build(batch)

    monkeypatch.setattr(plant._measured, "snapshots", slow)
    feeder = threading.Thread(target=plant.ingest, args=(rows[10:20],))
    feeder.start()
    try:
        assert entered.wait(10.0)
        start = time.monotonic()
        assert plant.stale_reason() is None and plant.hand_reason() is None
        plant.set_setpoints(plant.setpoints, "controller")
        assert plant.published is not None and plant.latest is not None
        assert plant.latest.time_s == 10.0 and time.monotonic() - start < 1.0
    finally:
        release.set()
        feeder.join(10.0)
    assert plant.rows == 20 and plant.latest.time_s == 20.0
