"""Rebuilding the twin from a recorded row: exact where the recording is, right in law elsewhere."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from linetwin.twin import Twin, bundled_spec, window_kpis
from linetwin.twin import layout as L
from linetwin.twin.errors import TwinError
from linetwin.twin.recorder import Recorder, read_recording
from linetwin.twin.restore import restore
from linetwin.twin.snapshot import Snapshot


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Snapshot]]:
    """Two hours of the example line, a row a minute, with the exact snapshots kept."""
    spec = bundled_spec("example")
    path = tmp_path_factory.mktemp("rec") / "run.parquet"
    snaps: list[Snapshot] = []
    twin = Twin(spec, 1, seed=3)
    twin.set_setpoints({"press": {"speed": 1.1}})

    def keep(s: Snapshot) -> None:
        rec.write(s)
        snaps.append(s)

    with Recorder(path, spec, seed=3) as rec:
        twin.run(2 * 3600.0, tick_s=60.0, on_tick=keep)
    return path, snaps


def test_recorded_values_are_restored_exactly(recorded: tuple[Path, list[Snapshot]]) -> None:
    path, snaps = recorded
    rec = read_recording(path)
    for i in (0, 37, 119):
        exact = snaps[i]
        snap = restore(rec, i, 0, np.random.default_rng(1), copies=3)
        assert snap.n_scenarios == 3 and snap.time_s == exact.time_s
        for name in ("status", "buffer_level", "completed", "scrapped", "failures", "wear"):
            got, want = getattr(snap, name), getattr(exact, name)[0]
            np.testing.assert_array_equal(got, np.broadcast_to(want, got.shape), err_msg=name)
        np.testing.assert_array_equal(snap.energy_kwh[1], exact.energy_kwh[0])
        np.testing.assert_array_equal(snap.good_out, exact.good_out[0])
        np.testing.assert_array_equal(snap.setpoints[2], exact.setpoints[0])


def test_restored_forks_continue_like_forks_of_the_exact_state(
    recorded: tuple[Path, list[Snapshot]],
) -> None:
    """Throughput over the next hour: 256 forks of the restored row against 256 forks of the
    exact state agree within 4 standard errors of their difference."""
    path, snaps = recorded
    rec = read_recording(path)
    i = 60
    snap = restore(rec, i, 0, np.random.default_rng(5), copies=256)
    spec = snap.spec
    a = Twin(spec, 256, rng=np.random.default_rng(6), state=snap.state.copy(),
             time_s=snap.time_s, setpoints=snap.setpoints)  # fmt: skip
    start = a.snapshot()
    ka = window_kpis(start, a.step(3600.0)).throughput_per_hour
    b = Twin.fork(snaps[i], 256, seed=7)
    start = b.snapshot()
    kb = window_kpis(start, b.step(3600.0)).throughput_per_hour
    se = np.sqrt(ka.var(ddof=1) / ka.size + kb.var(ddof=1) / kb.size)
    assert abs(ka.mean() - kb.mean()) < 4 * se, (ka.mean(), kb.mean(), se)
    assert ka.std() > 0  # the copies drew their own clocks


def test_same_rng_same_state_and_time_shift(recorded: tuple[Path, list[Snapshot]]) -> None:
    path, _ = recorded
    rec = read_recording(path)
    one = restore(rec, 10, 0, np.random.default_rng(9), copies=2)
    two = restore(rec, 10, 0, np.random.default_rng(9), copies=2, time_s=0.0)
    np.testing.assert_array_equal(one.state.rng, two.state.rng)
    assert two.time_s == 0.0
    shift = one.time_s
    finite = np.isfinite(one.state.tnext)
    np.testing.assert_allclose(one.state.tnext[finite] - shift, two.state.tnext[finite])


def test_rows_and_scenarios_outside_the_recording_are_refused(
    recorded: tuple[Path, list[Snapshot]],
) -> None:
    rec = read_recording(recorded[0])
    with pytest.raises(TwinError, match="row 120"):
        restore(rec, 120, 0, np.random.default_rng(0))
    with pytest.raises(TwinError, match="scenario 1"):
        restore(rec, 0, 1, np.random.default_rng(0))


def test_restored_rows_of_non_memoryless_laws_continue_in_law(
    tmp_path: Path,
) -> None:
    """The varied line (gamma and lognormal parts, Weibull failures, lognormal repairs):
    restored rows recover each Weibull station's busy age from its wear, and 512 forks of a
    restored row run the next hour like 512 forks of the exact state."""
    spec = bundled_spec("varied")
    path = tmp_path / "varied.parquet"
    snaps: list[Snapshot] = []
    twin = Twin(spec, 1, seed=12)

    def keep(s: Snapshot) -> None:
        rec.write(s)
        snaps.append(s)

    with Recorder(path, spec, seed=12) as rec:
        twin.run(3 * 3600.0, tick_s=300.0, on_tick=keep)
    data = read_recording(path)
    i = len(snaps) - 1
    snap = restore(data, i, 0, np.random.default_rng(5), copies=512)
    lp = twin.params.params
    weibull = lp[:, L.P_FAIL_LAW] == L.LAW_WEIBULL
    np.testing.assert_allclose(
        snap.state.fstate[0, weibull, L.F_AGE], snaps[i].state.fstate[0, weibull, L.F_AGE]
    )
    a = Twin(spec, 512, rng=np.random.default_rng(6), state=snap.state.copy(),
             time_s=snap.time_s, setpoints=snap.setpoints)  # fmt: skip
    start = a.snapshot()
    ka = window_kpis(start, a.step(3600.0)).throughput_per_hour
    b = Twin.fork(snaps[i], 512, seed=7)
    start = b.snapshot()
    kb = window_kpis(start, b.step(3600.0)).throughput_per_hour
    se = np.sqrt(ka.var(ddof=1) / ka.size + kb.var(ddof=1) / kb.size)
    assert abs(ka.mean() - kb.mean()) < 4 * se, (ka.mean(), kb.mean(), se)
    busy = snap.status[0] == L.BUSY
    assert np.ptp(snap.state.fstate[:, busy, L.F_TDONE], axis=0).min() > 0  # drawn per copy
