"""The real-time method on small surrogates of the two-station line: it reaches the
brute-force optimum, keeps locked stations, caps, the move limit, the OOD limit and the grids,
and uses its warm start.

Deadlines are long (the solver stops when it converges), so the results do not depend on how
busy the machine is.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from opthelpers import Brute, objective_of, small_surrogate, state_of, two_station_case

from linetwin.optimizer.errors import ProblemError
from linetwin.optimizer.fast import multistart, solve_fast
from linetwin.optimizer.problem import Objective, Problem, make_problem
from linetwin.twin.spec import LineSpec

LONG = 30.0  # s: a deadline that never binds here


def close_to(value: float, best: float, brute: Brute, share: float = 0.01) -> bool:
    """Whether `value` is within `share` of the objective's range over the box of `best`."""
    return value >= best - share * float(np.ptp(brute.obj))


def capped(problem: Problem, cap: float) -> Problem:
    eco = problem.objective
    return problem.with_objective(
        Objective(eco.good_weight, eco.scrap_weight, eco.energy_weight, cap)
    )


@pytest.mark.parametrize("seed", [0, 5])
def test_fast_reaches_the_brute_force_optimum(seed: int) -> None:
    model, problem, brute = two_station_case(seed)
    _x, f_best = brute.best()
    sol = solve_fast(model, problem, deadline_s=LONG)
    assert sol.feasible and sol.method == "fast"
    assert sol.status in ("converged", "deadline", "iteration_limit")
    assert sol.objective == pytest.approx(objective_of(model, problem, sol.setpoints)[0])
    assert sol.objective >= f_best - 0.01 * abs(f_best)  # within 1% of the value
    assert close_to(sol.objective, f_best, brute)  # and within 1% of the range over the box
    assert sol.objective <= f_best + brute.cell
    assert sol.seconds < LONG


def test_fast_keeps_locked_stations(two: LineSpec) -> None:
    model, _problem, _brute = two_station_case(1)
    current = np.array([0.87, 1.13])
    problem = make_problem(two, model.schema, state_of(model, 101), current, locked=("a",))
    np.testing.assert_array_equal(problem.box[0], [0.87, 0.5])
    np.testing.assert_array_equal(problem.box[1], [0.87, 1.5])
    sol = solve_fast(model, problem, deadline_s=LONG)
    assert sol.setpoints[0] == 0.87
    brute = Brute(model, problem)
    assert close_to(sol.objective, brute.best()[1], brute)


def test_unknown_locked_station_is_refused(two: LineSpec) -> None:
    model, problem, _brute = two_station_case(1)
    with pytest.raises(ProblemError, match="nowhere"):
        make_problem(two, model.schema, problem.state, problem.current, locked=("nowhere",))


def test_answers_lie_inside_the_box_exactly(two: LineSpec) -> None:
    """float32 climbing lands a hair outside the box (a locked 0.87 as 0.8700000047683716,
    a maximum of 1.4 as 1.4000000953674316) unless the answers are clipped."""
    model, _problem, _brute = two_station_case(1)
    problem = make_problem(
        two, model.schema, state_of(model, 101), np.array([0.87, 1.13]), locked=("a",)
    )
    lo, hi = problem.box
    points = multistart(model, problem, starts=16, steps=5)
    assert points.shape == (16, 2)
    assert np.all(points >= lo) and np.all(points <= hi), points[:3].tolist()
    sol = solve_fast(model, problem, deadline_s=LONG)
    assert np.all(sol.setpoints >= lo) and np.all(sol.setpoints <= hi)
    assert sol.setpoints[0] == 0.87


def test_fast_respects_an_energy_cap() -> None:
    model, problem, free_brute = two_station_case(3)
    cap = float(np.quantile(free_brute.energy, 0.4))
    x_free, _f = free_brute.best()
    assert objective_of(model, problem, x_free)[1] > cap + 0.5  # the cap binds
    p = capped(problem, cap)
    brute = Brute(model, p)
    sol = solve_fast(model, p, deadline_s=LONG)
    assert sol.feasible and sol.status != "infeasible"
    f, energy = objective_of(model, p, sol.setpoints)
    assert energy <= cap + 1e-6
    assert close_to(f, brute.best()[1], brute)


def test_fast_finds_a_feasible_point_when_the_current_one_breaks_the_cap() -> None:
    model, problem, brute = two_station_case(2)
    outcomes = {}
    for q in (0.1, 0.2, 0.3, 0.4, 0.5):
        cap = float(np.quantile(brute.energy, q))
        assert objective_of(model, problem, problem.current)[1] > cap  # current breaks it
        assert (brute.energy <= cap).any()  # while a share q of the box keeps it
        outcomes[q] = solve_fast(model, capped(problem, cap), deadline_s=LONG).status
    assert "infeasible" not in outcomes.values(), outcomes


def test_an_impossible_cap_is_reported_infeasible() -> None:
    model, problem, brute = two_station_case(2)
    p = capped(problem, float(brute.energy.min()) * 0.5)
    sol = solve_fast(model, p, deadline_s=LONG)
    assert sol.status == "infeasible" and not sol.feasible


def test_fast_respects_the_move_limit(two: LineSpec) -> None:
    model, _problem, _brute = two_station_case(3)
    current = np.array([0.87, 1.13])
    problem = make_problem(
        two, model.schema, state_of(model, 103), current, max_move=np.array([0.05, 0.05])
    )
    sol = solve_fast(model, problem, deadline_s=LONG)
    assert np.all(np.abs(sol.setpoints - current) <= 0.05 + 1e-12)
    brute = Brute(model, problem)
    assert close_to(sol.objective, brute.best()[1], brute)


def test_fast_respects_the_ood_limit(two: LineSpec) -> None:
    model, problem, brute = two_station_case(0)
    scores = model.ood_score(problem.state[None], brute.x)
    x_best, _f = brute.best()
    limit = float(np.quantile(scores, 0.3))
    assert model.ood_score(problem.state[None], x_best[None])[0] > limit  # the limit binds
    p = make_problem(two, model.schema, problem.state, np.array([1.0, 1.0]), ood_limit=limit)
    assert model.ood_score(p.state[None], p.current[None])[0] <= limit  # a feasible start
    f_inside = float(brute.obj[scores <= limit].max())
    sol = solve_fast(model, p, deadline_s=LONG)
    assert sol.feasible
    assert sol.ood_score <= limit
    assert model.ood_score(p.state[None], sol.setpoints[None])[0] <= limit + 1e-9
    assert sol.objective >= f_inside - 0.05 * float(np.ptp(brute.obj))


def test_fast_on_setpoint_grids(two_gridded: LineSpec) -> None:
    model = small_surrogate(two_gridded, (8, 8), 2, seed=1)
    problem = make_problem(two_gridded, model.schema, state_of(model, 101), np.array([1.0, 1.0]))
    points = np.array(
        list(itertools.product(np.arange(11) * 0.1 + 0.5, np.arange(21) * 0.05 + 0.5))
    )
    objs = np.array([objective_of(model, problem, x)[0] for x in points])
    sol = solve_fast(model, problem, deadline_s=LONG)
    k = (sol.setpoints - problem.lower) / problem.grid
    np.testing.assert_allclose(k, np.round(k), atol=1e-9)
    lo, hi = problem.box
    assert np.all(sol.setpoints >= lo - 1e-12) and np.all(sol.setpoints <= hi + 1e-12)
    assert sol.objective >= objs.max() - 0.01 * float(np.ptp(objs))


def test_the_warm_start_is_used(two: LineSpec) -> None:
    model, problem, brute = two_station_case(5)
    x_best, f_best = brute.best()
    far = np.array([0.55, 0.55])  # the current setpoints, far from the optimum
    p = make_problem(two, model.schema, problem.state, far)
    # no climbing, no refinement: the answer is the best starting point
    cold = solve_fast(model, p, deadline_s=1e-9, starts=2, steps=0, warm=None)
    warm = solve_fast(model, p, deadline_s=1e-9, starts=2, steps=0, warm=x_best)
    assert warm.iterations == cold.iterations == 0
    np.testing.assert_allclose(warm.setpoints, x_best, atol=1e-6)
    assert warm.objective == pytest.approx(f_best, abs=0.01)
    assert warm.objective > cold.objective + 0.05 * float(np.ptp(brute.obj))
