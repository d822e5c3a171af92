"""The exact method against a brute-force search of a small surrogate of the two-station line
(two speed setpoints; a 2x8 ReLU network with 2 members): the proven optimum is the best point
of a fine grid up to the grid's resolution, with and without an energy cap and on setpoint
grids; its time limit holds."""

from __future__ import annotations

import functools
import itertools

import numpy as np
import pytest
from opthelpers import Brute, objective_of, small_surrogate, state_of, two_station_case
from ortools.linear_solver import pywraplp

from linetwin.models.surrogate import Surrogate
from linetwin.optimizer.exact import interval_bounds, solve_exact
from linetwin.optimizer.fast import Solution
from linetwin.optimizer.problem import Objective, Problem, make_problem
from linetwin.twin.spec import LineSpec

TOL = 1e-3  # the brute force runs the float32 torch path, the solution the float64 numpy one


@functools.cache
def solved(seed: int) -> tuple[Surrogate, Problem, Brute, Solution]:
    """`two_station_case(seed)` and its exact solution."""
    model, problem, brute = two_station_case(seed)
    return model, problem, brute, solve_exact(model, problem, time_limit_s=60.0)


@pytest.mark.parametrize("seed", [1, 2])
def test_exact_optimum_is_the_brute_force_optimum(seed: int) -> None:
    model, problem, brute, sol = solved(seed)
    x_best, f_best = brute.best()
    assert sol.status == "optimal" and sol.feasible and sol.method == "exact"
    assert sol.gap is not None and sol.gap <= 1e-4
    assert sol.iterations > 0  # unstable ReLUs were embedded with binaries
    lo, hi = problem.box
    assert np.all(sol.setpoints >= lo - 1e-9) and np.all(sol.setpoints <= hi + 1e-9)
    # the reported objective is the surrogate's, and the MIP's bound agrees with it
    f, _ = objective_of(model, problem, sol.setpoints)
    assert sol.objective == pytest.approx(f, abs=TOL)
    assert sol.bound == pytest.approx(sol.objective, rel=1e-4)
    # no grid point beats the proven optimum; it beats the best by at most one grid cell
    assert sol.objective >= f_best - TOL
    assert sol.objective <= f_best + brute.cell
    assert np.max(np.abs(sol.setpoints - x_best)) <= 2 * brute.h


def test_exact_solution_lies_inside_the_box_exactly() -> None:
    _model, problem, _brute, sol = solved(1)
    lo, hi = problem.box
    assert np.all(sol.setpoints >= lo) and np.all(sol.setpoints <= hi), sol.setpoints.tolist()


def test_exact_respects_an_energy_cap() -> None:
    model, problem, free_brute, free = solved(2)
    cap = float(np.quantile(free_brute.energy, 0.4))
    assert objective_of(model, problem, free.setpoints)[1] > cap + 0.5  # the cap binds
    eco = problem.objective
    capped = problem.with_objective(
        Objective(eco.good_weight, eco.scrap_weight, eco.energy_weight, cap)
    )
    brute = Brute(model, capped)
    assert 0 < brute.feasible.mean() < 1
    _x, f_best = brute.best()
    sol = solve_exact(model, capped)
    assert sol.status == "optimal" and sol.gap is not None and sol.gap <= 1e-4
    f, energy = objective_of(model, capped, sol.setpoints)
    assert energy <= cap + 1e-6  # the ensemble mean respects the cap
    assert sol.objective == pytest.approx(f, abs=TOL)
    assert f_best - TOL <= sol.objective <= f_best + brute.cell
    assert sol.objective < free.objective - 1.0  # the cap cost something


def test_exact_on_setpoint_grids_finds_the_best_grid_point(two_gridded: LineSpec) -> None:
    model = small_surrogate(two_gridded, (8, 8), 2, seed=1)
    problem = make_problem(two_gridded, model.schema, state_of(model, 101), np.array([1.0, 1.0]))
    np.testing.assert_array_equal(problem.grid, [0.1, 0.05])
    points = np.array(
        list(itertools.product(np.arange(11) * 0.1 + 0.5, np.arange(21) * 0.05 + 0.5))
    )
    objs = np.array([objective_of(model, problem, x)[0] for x in points])
    sol = solve_exact(model, problem)
    assert sol.status == "optimal"
    k = (sol.setpoints - problem.lower) / problem.grid
    np.testing.assert_allclose(k, np.round(k), atol=1e-6)
    assert sol.objective == pytest.approx(objs.max(), abs=TOL)
    np.testing.assert_allclose(sol.setpoints, points[np.argmax(objs)], atol=1e-6)


def test_max_move_and_locks_narrow_the_exact_box(two: LineSpec) -> None:
    model = small_surrogate(two, (8, 8), 2, seed=2)
    state = state_of(model, 102)
    current = np.array([0.87, 1.13])
    moved = make_problem(two, model.schema, state, current, max_move=np.array([0.05, 0.05]))
    sol = solve_exact(model, moved)
    assert np.all(np.abs(sol.setpoints - current) <= 0.05 + 1e-9)
    _x, f_best = Brute(model, moved, n=101).best()
    assert sol.objective >= f_best - TOL
    locked = make_problem(two, model.schema, state, current, locked=("a",))
    sol = solve_exact(model, locked)
    assert sol.setpoints[0] == 0.87 and sol.status == "optimal"


def test_interval_bounds_contain_every_value_in_the_box() -> None:
    rng = np.random.default_rng(5)
    w, b = rng.normal(size=(3, 4)), rng.normal(size=4)
    lo, hi = np.array([0.0, -1.0, 2.0]), np.array([1.0, 1.0, 2.5])
    low, high = interval_bounds(w, b, lo, hi)
    x = lo + rng.random((2000, 3)) * (hi - lo)
    z = x @ w + b
    assert np.all(z >= low - 1e-12) and np.all(z <= high + 1e-12)
    corners = np.array(list(itertools.product(*zip(lo, hi, strict=True))))
    zc = corners @ w + b
    np.testing.assert_allclose(low, zc.min(axis=0))  # tight: attained at a corner
    np.testing.assert_allclose(high, zc.max(axis=0))


@pytest.fixture
def time_limits(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The milliseconds every OR-Tools solver is given by `SetTimeLimit`, in order."""
    limits: list[int] = []
    original = pywraplp.Solver.SetTimeLimit

    def record(self: pywraplp.Solver, ms: int) -> None:
        limits.append(ms)
        original(self, ms)

    monkeypatch.setattr(pywraplp.Solver, "SetTimeLimit", record)
    return limits


def test_the_time_limit_reaches_scip(two: LineSpec, time_limits: list[int]) -> None:
    model = small_surrogate(two, (4,), 1, seed=1)
    problem = make_problem(two, model.schema, state_of(model, 101), np.array([1.0, 1.0]))
    solve_exact(model, problem, time_limit_s=2.5)
    assert time_limits == [2500]


def test_a_short_time_limit_is_not_read_as_no_limit(two: LineSpec, time_limits: list[int]) -> None:
    model = small_surrogate(two, (4,), 1, seed=1)
    problem = make_problem(two, model.schema, state_of(model, 101), np.array([1.0, 1.0]))
    sol = solve_exact(model, problem, time_limit_s=0.0004)
    # too short to build the model: it does not start (OR-Tools would read 0 ms as no limit)
    assert sol.status == "deadline" and not sol.feasible
    assert 0 not in time_limits
    solve_exact(model, problem, time_limit_s=0.0061)
    assert time_limits == [7]  # rounded up, never down to 0
