"""OEE as ISO 22400 defines it: availability x performance x quality, never above 1."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from linefactory import station
from test_properties import lines, random_setpoints

from linetwin.twin import Twin, bundled_spec, window_kpis
from linetwin.twin.kpi import ideal_cycle_s, oee_parts
from linetwin.twin.spec import parse_spec


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None
)
@given(
    spec=lines(),
    seed=st.integers(0, 2**32 - 1),
    warmup=st.floats(0.0, 3000.0),
    window=st.floats(1.0, 5000.0),
)
def test_oee_and_its_factors_stay_in_0_1_over_random_lines_and_setpoints(
    spec, seed, warmup, window
):
    rng = np.random.default_rng(seed)
    twin = Twin(spec, 4, seed=seed)
    twin.set_setpoints(random_setpoints(spec, twin, rng))
    start = twin.step(warmup)
    twin.set_setpoints(random_setpoints(spec, twin, rng))
    k = window_kpis(start, twin.step(window))
    for name in ("oee", "oee_availability", "oee_performance", "oee_quality"):
        v = getattr(k, name)
        assert v.shape == (4,) and np.isfinite(v).all(), name
        assert ((v >= 0.0) & (v <= 1.0)).all(), (name, v)
    np.testing.assert_allclose(k.oee, k.oee_availability * k.oee_performance * k.oee_quality)


def _one_station(speed_max: float, **extra) -> Twin:
    sp = {"speed": {"min": 0.5, "max": speed_max, "nominal": 1.0, "max_step": 0.1}}
    spec = parse_spec(
        {
            "name": "one",
            "stations": [station("a", 10.0, processing="deterministic", setpoints=sp, **extra)],
        },
        "<test>",
    )
    return Twin(spec, 1, seed=0)


def test_a_perfect_station_at_its_maximum_speed_has_oee_one():
    twin = _one_station(1.5)
    twin.set_setpoints(np.array([[[1.5, 0.0]]]))
    start = twin.step(60.0)
    k = window_kpis(start, twin.step(3600.0))
    # 540 parts in the hour at 6.67 s each, give or take the part in process at each end
    assert k.oee[0] == pytest.approx(1.0, abs=2 / 540)
    assert k.oee_availability[0] == 1.0 and k.oee_quality[0] == 1.0


def test_performance_is_against_the_fastest_allowed_rate_not_the_rated_one():
    twin = _one_station(1.5)  # runs at nominal speed 1.0, allowed up to 1.5
    start = twin.step(60.0)
    k = window_kpis(start, twin.step(3600.0))
    assert k.throughput_per_hour[0] == pytest.approx(360.0, abs=1.0)
    assert k.oee_performance[0] == pytest.approx(1.0 / 1.5, abs=0.005)
    assert k.oee[0] == pytest.approx(1.0 / 1.5, abs=0.005)


def test_scrap_and_downtime_enter_as_quality_and_availability():
    spec = bundled_spec("example")
    twin = Twin(spec, 16, seed=4)
    start = twin.step(3600.0)
    k = window_kpis(start, twin.step(4 * 3600.0))
    np.testing.assert_allclose(k.oee_quality, 1.0 - k.scrap_rate)
    _, constraint = ideal_cycle_s(spec)
    assert spec.stations[constraint].name == "cure"  # 24 s at speed 1.3: 18.5 s per part
    np.testing.assert_allclose(k.oee_availability, k.availability[:, constraint])
    assert (k.oee < 0.8).all() and (k.oee > 0.4).all()  # nominal speeds, far from the maximum
    # the old definition (good x slowest rated cycle / window) gave about 0.77 here, and above
    # 1 on a line run faster than rated; the new one is the product of its three factors
    assert (k.oee_availability < 1.0).any()


def test_oee_parts_caps_performance_when_a_short_window_outruns_the_ideal_rate():
    spec = bundled_spec("two-station")
    ideal, _ = ideal_cycle_s(spec)
    a, p, q = oee_parts(
        spec,
        60.0,
        good=np.array([3 * 60.0 / ideal, 0.0]),
        scrap=np.array([0.0, 0.0]),
        constraint_down_s=np.array([0.0, 60.0]),
    )
    np.testing.assert_array_equal(p, [1.0, 0.0])
    np.testing.assert_array_equal(a, [1.0, 0.0])
    np.testing.assert_array_equal(q, [1.0, 1.0])
