"""Behaviour of the real-time wrapper: pacing against a clock, subscriptions, setpoints, thread."""

from __future__ import annotations

import math
import threading
import time

import numpy as np
import pytest

from linetwin.twin import SetpointError, Snapshot, Twin, TwinError, bundled_spec
from linetwin.twin import layout as L
from linetwin.twin.realtime import RealtimeTwin, Subscription

WAIT_S = 10.0  # generous bound for anything that should happen at once


class FakeClock:
    """A wall clock that only moves when slept on (or jumped); it records every sleep."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0.0
        self.sleeps.append(seconds)
        self.now += seconds


def make_twin(n_scenarios: int = 2, seed: int = 1) -> Twin:
    return Twin(bundled_spec("two-station"), n_scenarios, seed=seed)


def fake_rt(
    tick_s: float = 60.0, acceleration: float = 600.0, **twin_kw: int
) -> tuple[RealtimeTwin, FakeClock]:
    clock = FakeClock()
    rt = RealtimeTwin(make_twin(**twin_kw), tick_s, acceleration, clock=clock, sleep=clock.sleep)
    return rt, clock


def record_tick_times(rt: RealtimeTwin, clock: FakeClock, work_s: dict[int, float]) -> list[float]:
    """Record the wall time each tick starts at; tick k takes `work_s.get(k, 0)` wall s."""
    times: list[float] = []
    step = rt.twin.step

    def timed_step(dt: float) -> Snapshot:
        times.append(clock.now)
        clock.now += work_s.get(len(times) - 1, 0.0)
        return step(dt)

    rt.twin.step = timed_step  # type: ignore[method-assign]
    return times


def drain(sub: Subscription) -> list[Snapshot]:
    out = []
    while (snap := sub.get(timeout=0)) is not None:
        out.append(snap)
    return out


# --------------------------------------------------------------------------- pacing


def test_ticks_are_paced_at_tick_s_over_acceleration() -> None:
    rt, clock = fake_rt(tick_s=60.0, acceleration=600.0)  # 0.1 wall s per tick
    start = clock.now
    times = record_tick_times(rt, clock, {})
    rt.run(n_ticks=20)
    assert rt.stats.ticks == 20
    assert rt.twin.time_s == pytest.approx(20 * 60.0)
    assert math.fsum(clock.sleeps) == pytest.approx(19 * 0.1)
    np.testing.assert_allclose(times, start + 0.1 * np.arange(20), rtol=0, atol=1e-9)
    assert rt.stats.late_ticks == 0
    assert rt.stats.max_lag_s == 0.0


def test_time_spent_ticking_is_taken_off_the_sleep() -> None:
    rt, clock = fake_rt(tick_s=10.0, acceleration=50.0)  # 0.2 wall s per tick
    start = clock.now
    times = record_tick_times(rt, clock, dict.fromkeys(range(10), 0.05))
    rt.run(n_ticks=10)
    np.testing.assert_allclose(times, start + 0.2 * np.arange(10), rtol=0, atol=1e-9)
    positive = [s for s in clock.sleeps if s > 0]
    np.testing.assert_allclose(positive, 0.15, rtol=1e-9)
    assert len(positive) == 9
    assert rt.stats.late_ticks == 0


def test_late_ticks_are_counted_when_the_clock_jumps() -> None:
    rt, clock = fake_rt(tick_s=60.0, acceleration=600.0)  # period 0.1 s
    start = clock.now
    times = record_tick_times(rt, clock, {2: 0.35})  # tick 2 stalls 3.5 periods
    rt.run(n_ticks=8)
    # Ticks 3 and 4 start more than a period late (by 0.25 s and 0.15 s), tick 5 by 0.05 s
    # (late, but within a period), tick 6 is on time again: the twin catches up, skips none.
    expect = [0.0, 0.1, 0.2, 0.55, 0.55, 0.55, 0.6, 0.7]
    np.testing.assert_allclose(times, start + np.array(expect), rtol=0, atol=1e-9)
    assert rt.stats.ticks == 8
    assert rt.stats.late_ticks == 2
    assert rt.stats.max_lag_s == pytest.approx(0.25)
    assert rt.twin.time_s == pytest.approx(8 * 60.0)


@pytest.mark.parametrize(
    ("tick_s", "acceleration"),
    [(0.0, 1.0), (-1.0, 1.0), (math.nan, 1.0), (1.0, 0.0), (1.0, -5.0), (1.0, math.nan)],
)
def test_bad_tick_or_acceleration_raise_twin_error(tick_s: float, acceleration: float) -> None:
    with pytest.raises(TwinError):
        RealtimeTwin(make_twin(), tick_s, acceleration)


def test_infinite_tick_raises_twin_error() -> None:
    with pytest.raises(TwinError):
        RealtimeTwin(make_twin(), math.inf, 1.0)


# --------------------------------------------------------------------------- subscriptions


def test_each_subscriber_receives_every_snapshot_in_order() -> None:
    rt, _ = fake_rt()
    subs = [rt.subscribe(maxsize=64) for _ in range(3)]
    rt.run(n_ticks=12)
    got = [drain(sub) for sub in subs]
    for snaps in got:
        assert [s.time_s for s in snaps] == pytest.approx([60.0 * k for k in range(1, 13)])
        assert all(a is b for a, b in zip(snaps, got[0], strict=True))  # the same snapshots
    assert rt.latest is got[0][-1]
    assert all(sub.dropped == 0 for sub in subs)


def test_a_late_subscriber_gets_snapshots_from_then_on() -> None:
    rt, _ = fake_rt()
    rt.run(n_ticks=3)
    sub = rt.subscribe()
    rt.run(n_ticks=2)
    assert [s.time_s for s in drain(sub)] == pytest.approx([240.0, 300.0])


def test_a_slow_subscriber_keeps_the_newest_and_never_blocks_the_twin() -> None:
    rt, _ = fake_rt()
    slow = rt.subscribe(maxsize=3)
    fast = rt.subscribe(maxsize=100)
    thread = threading.Thread(target=rt.run, kwargs={"n_ticks": 10}, daemon=True)
    thread.start()
    thread.join(WAIT_S)
    assert not thread.is_alive()  # never waited for the slow subscriber
    assert rt.stats.ticks == 10
    assert len(slow) == 3
    assert slow.dropped == 7
    assert [s.time_s for s in drain(slow)] == pytest.approx([480.0, 540.0, 600.0])
    assert [s.time_s for s in drain(fast)] == pytest.approx([60.0 * k for k in range(1, 11)])
    assert fast.dropped == 0


def test_latest_returns_the_newest_and_counts_the_rest_as_dropped() -> None:
    rt, _ = fake_rt()
    sub = rt.subscribe(maxsize=10)
    assert sub.latest() is None
    rt.run(n_ticks=4)
    snap = sub.latest()
    assert snap is not None and snap.time_s == pytest.approx(240.0)
    assert snap is rt.latest
    assert sub.dropped == 3
    assert len(sub) == 0
    assert sub.latest() is None
    rt.run(n_ticks=1)
    assert sub.latest().time_s == pytest.approx(300.0)  # type: ignore[union-attr]
    assert sub.dropped == 3


def test_subscription_size_must_be_positive() -> None:
    rt, _ = fake_rt()
    with pytest.raises(TwinError):
        rt.subscribe(maxsize=0)


def test_unsubscribe_stops_delivery_and_closes() -> None:
    rt, _ = fake_rt()
    sub = rt.subscribe()
    rt.run(n_ticks=1)
    rt.unsubscribe(sub)
    rt.run(n_ticks=2)
    assert sub.closed
    assert [s.time_s for s in drain(sub)] == pytest.approx([60.0])
    assert sub.get(timeout=None) is None  # closed and drained: returns at once


# --------------------------------------------------------------------------- setpoints


def test_set_setpoints_applies_from_the_next_tick() -> None:
    rt, _ = fake_rt(n_scenarios=3)
    sub = rt.subscribe()
    first = rt.tick()
    np.testing.assert_array_equal(first.setpoints[:, 0, L.S_SPEED], 1.0)
    rt.set_setpoints({"a": {"speed": 1.3}, "b": {"speed": 0.7}})
    np.testing.assert_array_equal(first.setpoints[:, 0, L.S_SPEED], 1.0)  # already published
    assert first.state.fstate[0, 0, L.F_SPEED] == 1.0
    second = rt.tick()
    np.testing.assert_array_equal(second.setpoints[:, :, L.S_SPEED], [[1.3, 0.7]] * 3)
    np.testing.assert_array_equal(second.state.fstate[:, :, L.F_SPEED], [[1.3, 0.7]] * 3)
    assert [s.setpoints[0, 0, L.S_SPEED] for s in drain(sub)] == [1.0, 1.3]


@pytest.mark.parametrize(
    "bad",
    [
        {"a": {"speed": 9.0}},
        {"a": {"speed": 0.1}},
        {"a": {"speed": math.nan}},
        {"a": {"speed": "fast"}},
        {"zz": {"speed": 1.0}},
        {"a": {"temperature": 100.0}},  # no thermal dynamics on 'a'
        {"b": {"speed": 1.2}, "a": {"speed": 2.0}},  # one good, one bad: nothing applies
    ],
)
def test_bad_setpoints_raise_and_leave_the_setpoints_in_force(bad: dict) -> None:
    rt, _ = fake_rt()
    rt.set_setpoints({"a": {"speed": 1.2}})
    before = rt.twin.setpoints
    with pytest.raises(SetpointError):
        rt.set_setpoints(bad, source="operator")
    np.testing.assert_array_equal(rt.twin.setpoints, before)
    snap = rt.tick()
    np.testing.assert_array_equal(snap.setpoints, before)
    assert snap.state.fstate[0, 0, L.F_SPEED] == 1.2


def test_setpoint_error_names_the_source() -> None:
    rt, _ = fake_rt()
    with pytest.raises(SetpointError, match=r"operator: a\.speed"):
        rt.set_setpoints({"a": {"speed": 9.0}}, source="operator")


# --------------------------------------------------------------------------- background thread


def running_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "linetwin-realtime"]


def test_background_start_runs_ticks_and_stop_closes_subscriptions() -> None:
    rt = RealtimeTwin(make_twin(), tick_s=60.0, acceleration=60_000.0)  # 1 ms per tick
    sub = rt.subscribe(maxsize=1000)
    got: list[Snapshot] = []
    enough = threading.Event()

    def consume() -> None:
        for snap in sub:  # ends once the subscription is closed and drained
            got.append(snap)
            if len(got) >= 25:
                enough.set()

    reader = threading.Thread(target=consume, daemon=True)
    reader.start()
    t0 = time.monotonic()
    rt.start()
    try:
        assert enough.wait(WAIT_S)
    finally:
        rt.stop()
    elapsed = time.monotonic() - t0
    reader.join(WAIT_S)
    assert not reader.is_alive()
    assert sub.closed
    assert rt.error is None
    assert not running_threads()
    ticks = rt.stats.ticks
    assert ticks >= 25
    assert len(got) == ticks  # everything published reached the reader, in order
    np.testing.assert_allclose([s.time_s for s in got], 60.0 * np.arange(1, ticks + 1))
    assert elapsed >= (25 - 1) * 0.001  # paced, not free-running
    assert rt.twin.time_s == pytest.approx(ticks * 60.0)


def test_stop_wakes_a_blocked_get() -> None:
    rt = RealtimeTwin(make_twin(), tick_s=60.0, acceleration=60_000.0)
    sub = rt.subscribe()
    result: list[Snapshot | None] = []
    getter = threading.Thread(target=lambda: result.append(sub.get()), daemon=True)
    getter.start()
    deadline = time.monotonic() + WAIT_S
    while not sub._cond._waiters and time.monotonic() < deadline:  # type: ignore[attr-defined]
        threading.Event().wait(0.001)  # wait until the getter is blocked in `get`
    assert sub._cond._waiters  # type: ignore[attr-defined]
    rt.stop()
    getter.join(WAIT_S)
    assert not getter.is_alive()
    assert result == [None]


def test_starting_twice_raises_and_a_stopped_twin_can_start_again() -> None:
    rt = RealtimeTwin(make_twin(), tick_s=60.0, acceleration=60_000.0)
    sub = rt.subscribe()
    rt.start()
    try:
        with pytest.raises(TwinError, match="already running"):
            rt.start()
        assert sub.get(timeout=WAIT_S) is not None
    finally:
        rt.stop()
    assert not running_threads()
    ticks = rt.stats.ticks
    again = rt.subscribe()
    rt.start()
    try:
        assert again.get(timeout=WAIT_S) is not None
    finally:
        rt.stop()
    assert rt.stats.ticks > ticks
    assert rt.error is None


def test_stop_wakes_a_slow_paced_run_at_once() -> None:
    import time as _time

    rt = RealtimeTwin(make_twin(), tick_s=60.0, acceleration=0.01)  # 6000 s between ticks
    rt.start()
    t0 = _time.monotonic()
    while rt.stats.ticks < 1 and _time.monotonic() - t0 < 30:
        _time.sleep(0.01)
    rt.stop(timeout=5.0)
    assert _time.monotonic() - t0 < 10.0
    assert rt.stats.ticks == 1


def test_running_reports_the_background_thread() -> None:
    rt = RealtimeTwin(make_twin(), tick_s=60.0, acceleration=60_000.0)
    assert not rt.running
    rt.start()
    assert rt.running
    rt.stop()
    assert not rt.running


def test_drain_returns_everything_queued_in_order_and_drops_nothing() -> None:
    rt, _ = fake_rt()
    sub = rt.subscribe(maxsize=10)
    assert sub.drain() == []
    rt.run(n_ticks=4)
    assert [s.time_s for s in sub.drain()] == pytest.approx([60.0, 120.0, 180.0, 240.0])
    assert len(sub) == 0 and sub.dropped == 0
