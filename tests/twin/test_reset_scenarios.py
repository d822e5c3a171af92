"""Twin.reset_scenarios: restart some scenarios of a running twin, leave the others alone."""

from __future__ import annotations

from dataclasses import fields

import numpy as np
import pytest

from linetwin.twin.errors import TwinError
from linetwin.twin.sim import Twin, start_state
from linetwin.twin.spec import bundled_spec
from linetwin.twin.state import TwinState

SPEC = bundled_spec("example")


def assert_same_state(a: TwinState, b: TwinState) -> None:
    for f in fields(TwinState):
        np.testing.assert_array_equal(getattr(a, f.name), getattr(b, f.name), err_msg=f.name)


def test_restarted_scenarios_start_empty_and_the_others_run_on_unchanged():
    ref, twin = Twin(SPEC, 3, seed=5), Twin(SPEC, 3, seed=5)
    changed = twin.setpoints
    changed[:, 1, 0] = 1.2
    for t in (ref, twin):
        t.set_setpoints(changed)
        t.advance(900.0)
    twin.reset_scenarios(np.array([False, True, False]), np.random.default_rng(9))
    fresh = start_state(SPEC, 1, np.random.default_rng(9), 900.0)
    assert_same_state(twin.snapshot().state.take([1]), fresh)
    np.testing.assert_array_equal(twin.setpoints[1], Twin(SPEC, 1).setpoints[0])
    np.testing.assert_array_equal(twin.setpoints[[0, 2]], changed[[0, 2]])
    for t in (ref, twin):
        t.advance(900.0)
    assert_same_state(twin.snapshot().state.take([0, 2]), ref.snapshot().state.take([0, 2]))
    assert twin.snapshot().good_out[1] > 0  # the restarted scenario runs again


def test_a_scenario_restarted_at_time_zero_runs_as_a_twin_of_its_own():
    twin = Twin(SPEC, 2, seed=1)
    twin.reset_scenarios([1], [np.random.default_rng(4)])
    alone = Twin(SPEC, 1, rng=np.random.default_rng(4))
    twin.advance(1800.0)
    alone.advance(1800.0)
    assert_same_state(twin.snapshot().state.take([1]), alone.snapshot().state)


@pytest.mark.parametrize(
    "scenarios",
    [[3], [-1], [0, 0], np.array([True, False]), np.array([0.5])],
)
def test_bad_scenario_selections_are_refused(scenarios):
    twin = Twin(SPEC, 3, seed=0)
    with pytest.raises(TwinError):
        twin.reset_scenarios(scenarios, np.random.default_rng(0))


def test_one_generator_per_scenario_must_match_the_count():
    twin = Twin(SPEC, 3, seed=0)
    with pytest.raises(TwinError, match="2 generators given for 1 scenarios"):
        twin.reset_scenarios([0], [np.random.default_rng(0), np.random.default_rng(1)])
