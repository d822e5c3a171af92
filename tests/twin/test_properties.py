"""Invariants of the twin over random valid lines, setpoints and step sizes (hypothesis)."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from invariants import assert_conserved

from linetwin.twin import Twin
from linetwin.twin import layout as L
from linetwin.twin.spec import LineSpec, parse_spec


@st.composite
def lines(draw: st.DrawFn) -> LineSpec:
    """Draw a valid line of 1 to 6 stations with every optional feature possibly on."""
    n = draw(st.integers(1, 6))
    stations = []
    for i in range(n):
        s: dict = {
            "name": f"st{i}",
            "cycle_time_s": draw(st.floats(1.0, 60.0)),
            "processing": draw(st.sampled_from(["exponential", "deterministic"])),
        }
        if i < n - 1:
            s["buffer_after"] = draw(st.integers(0, 6))
        if draw(st.booleans()):
            s["mtbf_s"] = draw(st.floats(60.0, 5000.0))
            s["mttr_s"] = draw(st.floats(5.0, 600.0))
            s["wear"] = {"failure_gain": draw(st.floats(0.0, 2.0))}
        if draw(st.booleans()):
            lo = draw(st.floats(60.0, 200.0))
            s["thermal"] = {
                "ideal_min_c": lo,
                "ideal_max_c": lo + draw(st.floats(0.0, 30.0)),
                "time_constant_s": draw(st.floats(10.0, 2000.0)),
                "heater_kw": draw(st.floats(0.0, 50.0)),
            }
        s["scrap"] = {
            "base": draw(st.floats(0.0, 0.2)),
            "speed_gain": draw(st.floats(0.0, 1.0)),
            "temperature_gain": draw(st.floats(0.0, 0.01)),
        }
        stations.append(s)
    return parse_spec({"name": "random", "stations": stations}, "<hypothesis>")


def random_setpoints(spec: LineSpec, twin: Twin, rng: np.random.Generator) -> np.ndarray:
    """Return legal setpoints for every scenario, drawn uniformly within the limits."""
    lp = twin.params
    lo = np.nan_to_num(lp.lower)
    hi = np.nan_to_num(lp.upper)
    u = rng.random((twin.n_scenarios, *lo.shape))
    return np.where(lp.present, lo + u * (hi - lo), 0.0)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None
)
@given(
    spec=lines(),
    seed=st.integers(0, 2**32 - 1),
    steps=st.lists(st.floats(0.0, 5000.0), min_size=1, max_size=6),
)
def test_random_lines_keep_every_invariant(spec, seed, steps):
    rng = np.random.default_rng(seed)
    twin = Twin(spec, 3, seed=seed)
    energy = np.zeros((3, spec.n_stations))
    for dt in steps:
        twin.set_setpoints(random_setpoints(spec, twin, rng))
        snap = twin.step(dt)
        assert_conserved(snap)
        fs = snap.state.fstate
        assert np.isfinite(fs[:, :, L.F_ENERGY]).all()
        assert np.isfinite(fs[:, :, L.F_WEAR]).all()
        assert np.all(snap.energy_kwh >= energy - 1e-12)
        energy = snap.energy_kwh
        assert np.isin(snap.status, (L.STARVED, L.BUSY, L.BLOCKED, L.DOWN)).all()
        assert np.all(snap.status[:, 0] != L.STARVED)  # unlimited supply
        busy = snap.status == L.BUSY
        assert np.all(np.isfinite(fs[:, :, L.F_TDONE][busy]))
        assert np.all(fs[:, :, L.F_TDONE][busy] >= snap.time_s)
        thermal = np.array([s.is_thermal for s in spec.stations])
        assert np.isfinite(snap.temperature_true_c[:, thermal]).all()
        assert np.isfinite(snap.readings.power_kw).all()
        assert np.isfinite(snap.readings.vibration_mm_s).all()
        assert (snap.readings.power_kw > -1.0).all()
