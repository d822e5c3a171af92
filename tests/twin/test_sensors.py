"""Behaviour of the sensor model: noise, NaN on non-thermal stations, faults, power, vibration,
the thermal response and heating energy (docs/line-spec.md, section `stations.sensors`)."""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np
import pytest

from linetwin.twin import SensorFault, Snapshot, SpecError, Twin
from linetwin.twin import layout as L
from linetwin.twin.sensors import CHANNELS, true_values
from linetwin.twin.spec import LineSpec, parse_spec

QUIET = {"temperature_noise_c": 0.0, "power_noise_kw": 0.0, "vibration_noise_mm_s": 0.0}

SPEED = {"min": 0.5, "max": 1.5, "nominal": 1.0, "max_step": 0.1}


def press(sensors: dict[str, float] | None = None, **extra: Any) -> dict[str, Any]:
    """A non-thermal station with its own energy and vibration numbers."""
    st: dict[str, Any] = {
        "name": "press",
        "cycle_time_s": 20.0,
        "processing": "exponential",
        "buffer_after": 3,
        "setpoints": {"speed": SPEED},
        "energy": {"idle_kw": 2.0, "run_kw": 6.0, "speed_exponent": 1.5},
        "sensors": {"vibration_mm_s": 3.0, "vibration_wear_gain": 0.2, **(sensors or {})},
    }
    st.update(extra)
    return st


def oven(sensors: dict[str, float] | None = None, **extra: Any) -> dict[str, Any]:
    """A thermal station: ambient 25 °C, heater 30 kW at the 225 °C maximum, tau 600 s."""
    st: dict[str, Any] = {
        "name": "oven",
        "cycle_time_s": 25.0,
        "processing": "exponential",
        "setpoints": {
            "speed": SPEED,
            "temperature": {"min": 100.0, "max": 225.0, "nominal": 150.0, "max_step": 5.0},
        },
        "thermal": {
            "ideal_min_c": 140.0,
            "ideal_max_c": 160.0,
            "ambient_c": 25.0,
            "time_constant_s": 600.0,
            "heater_kw": 30.0,
        },
        "energy": {"idle_kw": 1.0, "run_kw": 4.0, "speed_exponent": 2.0},
        "sensors": {"vibration_mm_s": 1.5, "vibration_wear_gain": 0.1, **(sensors or {})},
    }
    st.update(extra)
    return st


def line(*stations: dict[str, Any]) -> LineSpec:
    return parse_spec({"name": "sensor-test", "stations": list(stations)}, "<test>")


def quiet_line(**oven_extra: Any) -> LineSpec:
    """press -> oven with noise-free sensors."""
    return line(press(QUIET), oven(QUIET, **oven_extra))


def truth(twin: Twin, snap: Snapshot) -> np.ndarray:
    """Noise-free values `(n_scenarios, n_stations, 3)` in the order of CHANNELS."""
    values = true_values(twin.params, snap.state.fstate, snap.state.istate, twin.sensors.vib)
    return np.stack(values, axis=-1)


def readings(snap: Snapshot) -> np.ndarray:
    r = snap.readings
    return np.stack([r.channel(c) for c in CHANNELS], axis=-1)


# --------------------------------------------------------------------------- noise


NOISE = {
    "press": {"temperature_noise_c": 0.7, "power_noise_kw": 0.2, "vibration_noise_mm_s": 0.3},
    "oven": {"temperature_noise_c": 0.8, "power_noise_kw": 0.25, "vibration_noise_mm_s": 0.15},
}


def test_noise_scatters_around_the_true_value_with_the_spec_std() -> None:
    n = 20_000
    spec = line(press(NOISE["press"]), oven(NOISE["oven"]))
    twin = Twin(spec, n, seed=11)
    snap = twin.step(900.0)
    resid = readings(snap) - truth(twin, snap)
    # Standard errors for n independent N(0, sigma²) draws: mean sigma/sqrt(n), sample std
    # sigma/sqrt(2(n-1)), share within one sigma sqrt(p(1-p)/n). Allow 5 standard errors.
    checked = 0
    for i, st in enumerate(spec.stations):
        for c, key in enumerate(("temperature_noise_c", "power_noise_kw", "vibration_noise_mm_s")):
            x = resid[:, i, c]
            if not st.is_thermal and c == 0:
                assert np.isnan(x).all()
                continue
            sigma = NOISE[st.name][key]
            assert np.isfinite(x).all()
            assert abs(x.mean()) < 5 * sigma / math.sqrt(n), (st.name, key)
            assert abs(x.std(ddof=1) - sigma) < 5 * sigma / math.sqrt(2 * (n - 1)), (st.name, key)
            p = 0.682689492137
            share = np.mean(np.abs(x) < sigma)
            assert abs(share - p) < 5 * math.sqrt(p * (1 - p) / n), (st.name, key)
            checked += 1
    assert checked == 5
    # Independent across channels and stations: correlations within 5/sqrt(n) of 0.
    cols = [resid[:, 0, 1], resid[:, 0, 2], resid[:, 1, 0], resid[:, 1, 1], resid[:, 1, 2]]
    corr = np.corrcoef(np.stack(cols))
    off = corr[~np.eye(len(cols), dtype=bool)]
    assert np.abs(off).max() < 5 / math.sqrt(n)


def test_noise_is_redrawn_for_every_reading_and_reproducible_from_the_seed() -> None:
    spec = line(press(NOISE["press"]), oven(NOISE["oven"]))
    a, b = Twin(spec, 50, seed=3), Twin(spec, 50, seed=3)
    sa, sb = a.step(300.0), b.step(300.0)
    np.testing.assert_array_equal(readings(sa), readings(sb))
    again = a.snapshot()  # same state, new noise
    np.testing.assert_array_equal(again.state.fstate, sa.state.fstate)
    assert not np.array_equal(readings(again)[:, :, 1:], readings(sa)[:, :, 1:])
    other = Twin(spec, 50, seed=4).step(300.0)
    assert not np.array_equal(readings(other)[:, :, 1:], readings(sa)[:, :, 1:])


def test_zero_noise_reads_the_true_values_exactly() -> None:
    spec = quiet_line()
    twin = Twin(spec, 20, seed=5)
    for _ in range(5):
        snap = twin.step(120.0)
        np.testing.assert_array_equal(readings(snap), truth(twin, snap))
        assert snap.readings.valid.all()


def test_temperature_is_nan_on_non_thermal_stations_only() -> None:
    spec = line(press(), oven())
    snap = Twin(spec, 30, seed=2).step(600.0)
    r = snap.readings
    assert r.temperature_c.shape == (30, 2)
    assert np.isnan(r.temperature_c[:, 0]).all()
    assert np.isfinite(r.temperature_c[:, 1]).all()
    assert abs(r.temperature_c[:, 1].mean() - 150.0) < 1.0  # nominal, noise 0.5
    assert r.valid.all()  # a NaN on a non-thermal station is not a dropout
    assert np.isfinite(r.power_kw).all() and np.isfinite(r.vibration_mm_s).all()
    assert np.isnan(snap.temperature_true_c[:, 0]).all()


# --------------------------------------------------------------------------- faults


def run_ticks(twin: Twin, tick_s: float, n: int) -> list[Snapshot]:
    return [twin.step(tick_s) for _ in range(n)]


def test_stuck_holds_the_value_read_when_the_fault_began_and_releases_after_end() -> None:
    # Cold start: the oven heats from ambient, so its true temperature changes every tick.
    spec = quiet_line(thermal={**oven()["thermal"], "initial_c": 25.0})
    fault = SensorFault("oven", "temperature", "stuck", start_s=300.0, end_s=900.0)
    twin = Twin(spec, 3, seed=1, faults=[fault])
    snaps = run_ticks(twin, 100.0, 12)  # t = 100 ... 1200
    held = snaps[2].readings.temperature_c[:, 1]  # t = 300, the first reading in the fault
    assert snaps[2].time_s == 300.0
    np.testing.assert_array_equal(held, snaps[2].temperature_true_c[:, 1])
    for snap in snaps:
        r, true = readings(snap), truth(twin, snap)
        if 300.0 <= snap.time_s < 900.0:
            np.testing.assert_array_equal(r[:, 1, 0], held)
            if snap.time_s > 300.0:  # the true temperature moved on
                assert (snap.temperature_true_c[:, 1] > held + 1.0).all()
            r[:, 1, 0] = true[:, 1, 0]
        np.testing.assert_array_equal(r, true)  # everything else reads the truth
        assert snap.readings.valid.all()
    assert snaps[8].time_s == 900.0  # released at end_s
    assert snaps[8].readings.temperature_c[0, 1] > held[0] + 40.0


def test_stuck_holds_the_noisy_reading_then_noise_returns() -> None:
    spec = line(press({"power_noise_kw": 0.2}), oven())
    faults = [SensorFault("press", "power", "stuck", start_s=120.0, end_s=360.0)]
    twin = Twin(spec, 4, seed=9, faults=faults)
    snaps = run_ticks(twin, 60.0, 8)  # t = 60 ... 480
    held = snaps[1].readings.power_kw[:, 0]
    assert not np.array_equal(held, truth(twin, snaps[1])[:, 0, 1])  # a noisy value is held
    for snap in snaps[1:5]:  # t = 120 ... 300
        np.testing.assert_array_equal(snap.readings.power_kw[:, 0], held)
    for snap in (snaps[0], *snaps[5:]):  # t = 60 and 360 ... 480: noisy again
        assert not np.array_equal(snap.readings.power_kw[:, 0], held)
    assert len({float(s.readings.power_kw[0, 0]) for s in snaps[5:]}) == 3


def test_nan_fault_reads_nan_with_valid_true() -> None:
    spec = quiet_line()
    fault = SensorFault("press", "vibration", "nan", start_s=200.0, end_s=500.0)
    twin = Twin(spec, 3, seed=4, faults=[fault])
    seen = 0
    for snap in run_ticks(twin, 100.0, 7):  # t = 100 ... 700
        r, true = readings(snap), truth(twin, snap)
        assert snap.readings.valid.all()
        if 200.0 <= snap.time_s < 500.0:
            assert np.isnan(r[:, 0, 2]).all()
            r[:, 0, 2] = true[:, 0, 2]
            seen += 1
        np.testing.assert_array_equal(r, true)
    assert seen == 3


def test_dropout_reads_nan_with_valid_false() -> None:
    spec = quiet_line()
    fault = SensorFault("oven", "power", "dropout", start_s=200.0, end_s=500.0)
    twin = Twin(spec, 3, seed=4, faults=[fault])
    seen = 0
    for snap in run_ticks(twin, 100.0, 7):
        r, true = readings(snap), truth(twin, snap)
        valid = snap.readings.valid
        if 200.0 <= snap.time_s < 500.0:
            assert np.isnan(r[:, 1, 1]).all()
            assert not valid[:, 1, 1].any()
            valid = valid.copy()
            valid[:, 1, 1] = True
            r[:, 1, 1] = true[:, 1, 1]
            seen += 1
        assert valid.all()
        np.testing.assert_array_equal(r, true)
    assert seen == 3


def test_drift_adds_rate_per_hour_since_the_start() -> None:
    spec = quiet_line()
    faults = [
        SensorFault("oven", "temperature", "drift", start_s=600.0, rate_per_h=6.0),
        SensorFault("press", "vibration", "drift", start_s=300.0, end_s=1500.0, rate_per_h=-0.9),
    ]
    twin = Twin(spec, 3, seed=8, faults=faults)
    for snap in run_ticks(twin, 150.0, 14):  # t = 150 ... 2100
        t = snap.time_s
        diff = readings(snap) - truth(twin, snap)
        expect = np.zeros_like(diff)
        expect[:, 0, 0] = np.nan  # no temperature on the press
        if t >= 600.0:
            expect[:, 1, 0] = 6.0 * (t - 600.0) / 3600.0
        if 300.0 <= t < 1500.0:
            expect[:, 0, 2] = -0.9 * (t - 300.0) / 3600.0
        np.testing.assert_allclose(diff, expect, rtol=1e-12, atol=1e-12)
    assert diff[0, 1, 0] == pytest.approx(2.5)  # 1500 s of drift at 6 °C/h


def test_scenarios_limit_the_fault() -> None:
    spec = quiet_line()
    faults = [
        SensorFault("press", "power", "nan", scenarios=(1,)),
        SensorFault("oven", "vibration", "dropout", scenarios=(0, 2)),
        SensorFault("oven", "temperature", "drift", rate_per_h=3600.0, scenarios=(2,)),
    ]
    twin = Twin(spec, 4, seed=6, faults=faults)
    snap = twin.step(60.0)
    r, true, valid = readings(snap), truth(twin, snap), snap.readings.valid
    assert np.isnan(r[1, 0, 1])
    assert np.isnan(r[[0, 2], 1, 2]).all()
    assert not valid[[0, 2], 1, 2].any()
    assert r[2, 1, 0] == pytest.approx(true[2, 1, 0] + 60.0)
    r[1, 0, 1] = true[1, 0, 1]
    r[[0, 2], 1, 2] = true[[0, 2], 1, 2]
    r[2, 1, 0] = true[2, 1, 0]
    np.testing.assert_array_equal(r, true)  # every other scenario is untouched
    assert valid.sum() == valid.size - 2


@pytest.mark.parametrize("kind", ["stuck", "nan", "dropout", "drift"])
def test_faults_outside_their_window_do_nothing(kind: str) -> None:
    spec = quiet_line()
    fault = SensorFault("oven", "power", kind, start_s=1000.0, end_s=2000.0, rate_per_h=50.0)
    twin = Twin(spec, 3, seed=12, faults=[fault])
    affected = 0
    for snap in run_ticks(twin, 250.0, 12):  # t = 250 ... 3000
        r, true = readings(snap), truth(twin, snap)
        inside = 1000.0 <= snap.time_s < 2000.0
        if inside:
            affected += 1
            if kind in ("nan", "dropout"):
                assert np.isnan(r[:, 1, 1]).all()
            elif kind == "drift":
                drift = 50.0 * (snap.time_s - 1000.0) / 3600.0
                np.testing.assert_allclose(r[:, 1, 1] - true[:, 1, 1], drift, atol=1e-12)
        else:
            np.testing.assert_array_equal(r, true)
            assert snap.readings.valid.all()
    assert affected == 4


@pytest.mark.parametrize(
    ("fault", "words"),
    [
        (SensorFault("kiln", "power", "nan"), ["'kiln'", "unknown station"]),
        (SensorFault("oven", "pressure", "nan"), ["'oven'", "pressure"]),
        (SensorFault("oven", "power", "flaky"), ["'oven'", "flaky"]),
        (SensorFault("press", "power", "nan", start_s=500.0, end_s=100.0), ["'press'", "end_s"]),
        (SensorFault("press", "power", "nan", start_s=500.0, end_s=500.0), ["'press'", "end_s"]),
    ],
)
def test_bad_faults_raise_spec_error_naming_the_station(
    fault: SensorFault, words: list[str]
) -> None:
    with pytest.raises(SpecError) as info:
        Twin(quiet_line(), 2, seed=0, faults=[fault])
    for word in words:
        assert word in str(info.value)


# --------------------------------------------------------------------------- power, vibration


def test_power_reading_is_electrical_power_plus_heating() -> None:
    spec = line(
        press(QUIET, mtbf_s=900.0, mttr_s=300.0),
        oven(QUIET, processing="deterministic"),
    )
    heat_per_c = 30.0 / (225.0 - 25.0)
    twin = Twin(spec, 8, seed=21, setpoints={"press": {"speed": 1.3}, "oven": {"speed": 0.8}})
    seen: set[tuple[int, int]] = set()
    for k in range(60):
        if k == 30:  # new speeds and a new temperature midway
            twin.set_setpoints({"press": {"speed": 0.7}, "oven": {"temperature": 200.0}})
        snap = twin.step(60.0)
        status = snap.status
        speed = snap.setpoints[:, :, L.S_SPEED]
        busy = status == L.BUSY
        press_kw = np.where(busy[:, 0], 6.0 * speed[:, 0] ** 1.5, 2.0)
        oven_kw = np.where(busy[:, 1], 4.0 * speed[:, 1] ** 2.0, 1.0)
        oven_kw = oven_kw + heat_per_c * np.maximum(snap.temperature_true_c[:, 1] - 25.0, 0.0)
        np.testing.assert_allclose(snap.readings.power_kw[:, 0], press_kw, rtol=1e-12)
        np.testing.assert_allclose(snap.readings.power_kw[:, 1], oven_kw, rtol=1e-12)
        seen |= {(i, int(s)) for i in range(2) for s in np.unique(status[:, i])}
    # The check covered busy and idle statuses on both stations, and the press going down.
    assert {(0, L.BUSY), (0, L.DOWN), (1, L.BUSY), (1, L.STARVED)} <= seen


def test_vibration_rises_with_speed_and_matches_the_model_while_busy() -> None:
    one = press({**QUIET, "vibration_wear_gain": 0.0})
    del one["buffer_after"]
    spec = line(one)  # a single station is never starved or blocked: always busy
    values = []
    for speed in (0.6, 0.9, 1.0, 1.2, 1.5):
        snap = Twin(spec, 2, seed=0, setpoints={"press": {"speed": speed}}).step(100.0)
        assert (snap.status == L.BUSY).all()
        np.testing.assert_allclose(snap.readings.vibration_mm_s, 3.0 * speed**2, rtol=1e-12)
        values.append(snap.readings.vibration_mm_s[0, 0])
    assert all(a < b for a, b in itertools.pairwise(values))


def test_vibration_by_status_and_wear() -> None:
    spec = line(press(QUIET, mtbf_s=600.0, mttr_s=1200.0), oven(QUIET, cycle_time_s=40.0))
    twin = Twin(spec, 16, seed=5, setpoints={"press": {"speed": 1.2}})
    seen: set[int] = set()
    for _ in range(40):
        snap = twin.step(90.0)
        vib, status, wear = snap.readings.vibration_mm_s, snap.status, snap.wear
        nominal = np.array([3.0, 1.5])
        gain = np.array([0.2, 0.1])
        speed = snap.setpoints[:, :, L.S_SPEED]
        running = nominal * speed**2 * (1.0 + gain * wear)
        expect = np.where(status == L.BUSY, running, np.where(status == L.DOWN, 0.0, 0.1 * nominal))
        np.testing.assert_allclose(vib, expect, rtol=1e-12)
        assert (vib[status == L.DOWN] == 0.0).all()
        seen |= set(np.unique(status).tolist())
    assert {L.BUSY, L.DOWN, L.BLOCKED, L.STARVED} <= seen
    assert snap.wear.max() > 0.0  # wear entered the check


# --------------------------------------------------------------------------- thermal


def test_temperature_follows_the_first_order_response_after_a_setpoint_change() -> None:
    spec = quiet_line()
    tau = 600.0
    twin = Twin(spec, 2, seed=3)
    for snap in run_ticks(twin, 100.0, 3):  # held at the nominal 150 °C
        np.testing.assert_array_equal(snap.temperature_true_c[:, 1], 150.0)
    t_change = twin.time_s
    twin.set_setpoints({"oven": {"temperature": 210.0}})
    T0, Ts = 150.0, 210.0
    for k, dt in enumerate([1.0, 59.0, 240.0, 300.0, 600.0, 1200.0]):
        snap = twin.step(dt)
        expect = Ts + (T0 - Ts) * math.exp(-(snap.time_s - t_change) / tau)
        np.testing.assert_allclose(snap.temperature_true_c[:, 1], expect, rtol=1e-12)
        np.testing.assert_allclose(snap.readings.temperature_c[:, 1], expect, rtol=1e-12)
        if k == 4:  # 1200 s = two time constants in: 86.5 % of the way
            assert expect == pytest.approx(Ts - 60.0 * math.exp(-2.0))
    # A second change re-anchors at the temperature reached, now cooling toward 120 °C.
    T1, t1 = float(snap.temperature_true_c[0, 1]), twin.time_s
    twin.set_setpoints({"oven": {"temperature": 120.0}})
    for _ in range(4):
        snap = twin.step(450.0)
        expect = 120.0 + (T1 - 120.0) * math.exp(-(snap.time_s - t1) / tau)
        np.testing.assert_allclose(snap.temperature_true_c[:, 1], expect, rtol=1e-12)


def test_cold_start_heats_from_initial_c() -> None:
    spec = quiet_line(thermal={**oven()["thermal"], "initial_c": 25.0})
    twin = Twin(spec, 1, seed=0)
    assert twin.snapshot().temperature_true_c[0, 1] == 25.0
    for snap in run_ticks(twin, 300.0, 6):
        expect = 150.0 + (25.0 - 150.0) * math.exp(-snap.time_s / 600.0)
        assert snap.temperature_true_c[0, 1] == pytest.approx(expect, rel=1e-12)


def heater_line(nominal_c: float, **thermal: float) -> LineSpec:
    """One deterministic thermal station that draws no electrical power: all energy is heat."""
    st = {
        "name": "oven",
        "cycle_time_s": 30.0,
        "processing": "deterministic",
        "energy": {"idle_kw": 0.0, "run_kw": 0.0},
        "thermal": {
            "ideal_min_c": 100.0,
            "ideal_max_c": 140.0,
            "ambient_c": 20.0,
            "heater_kw": 40.0,
            "time_constant_s": 600.0,
            **thermal,
        },
        "setpoints": {
            "temperature": {"min": 10.0, "max": 220.0, "nominal": nominal_c, "max_step": 5.0}
        },
        "sensors": QUIET,
    }
    return line(st)


@pytest.mark.parametrize("steps", [1, 60])
def test_heating_energy_at_a_steady_temperature(steps: int) -> None:
    # heater_kw * (T - ambient) / (Tmax - ambient) = 40 * 100 / 200 = 20 kW for one hour.
    twin = Twin(heater_line(120.0), 3, seed=0)
    snaps = run_ticks(twin, 3600.0 / steps, steps)
    snap = snaps[-1]
    np.testing.assert_array_equal(snap.temperature_true_c, 120.0)
    np.testing.assert_allclose(snap.energy_kwh, 20.0, rtol=1e-12)
    np.testing.assert_allclose(snap.readings.power_kw, 20.0, rtol=1e-12)
    assert snap.completed[0, 0] == 120  # it processed (deterministic 30 s) at zero power


def test_heating_energy_while_the_temperature_moves() -> None:
    twin = Twin(heater_line(120.0), 1, seed=0)
    twin.set_setpoints({"oven": {"temperature": 170.0}})
    snap = twin.step(3600.0)
    tau, T0, Ts, amb = 600.0, 120.0, 170.0, 20.0
    integral = Ts * 3600.0 + (T0 - Ts) * tau * (1.0 - math.exp(-3600.0 / tau))
    expect = 40.0 / 200.0 * (integral - amb * 3600.0) / 3600.0
    assert snap.energy_kwh[0, 0] == pytest.approx(expect, rel=1e-12)
    assert 20.0 < expect < 30.0


def test_no_heating_at_or_below_ambient() -> None:
    twin = Twin(heater_line(15.0), 1, seed=0)
    snap = twin.step(3600.0)
    assert snap.temperature_true_c[0, 0] == 15.0
    assert snap.energy_kwh[0, 0] == 0.0
    assert snap.readings.power_kw[0, 0] == 0.0


def test_fault_on_scenarios_that_do_not_exist_is_refused():
    from linetwin.twin import SensorFault, SpecError, Twin, bundled_spec

    fault = SensorFault("press", "power", "nan", scenarios=(0, 5))
    with pytest.raises(SpecError, match=r"scenarios \[5\] are not in 0..2"):
        Twin(bundled_spec(), 3, seed=0, faults=[fault])
    drift = SensorFault("press", "power", "drift", rate_per_h=float("nan"))
    with pytest.raises(SpecError, match="must be finite"):
        Twin(bundled_spec(), 3, seed=0, faults=[drift])
