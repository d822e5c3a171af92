"""The exact method: embed the ReLU ensemble in a mixed-integer program and prove its optimum.

Each member's hidden unit z = w·h + b gets bounds [L, U] by interval arithmetic over the
decision box (the setpoint limits, inside the training data's range); units with U <= 0 are
dropped, units with L >= 0 are linear, and the rest get one binary a with the big-M
constraints h >= z, h >= 0, h <= z - L (1 - a), h <= U a. The objective is the ensemble mean of
the profit rate, which is linear in the outputs, so the program is exact for the surrogate.
Practical for small networks (a few dozen unstable units); larger ones return their gap.
"""

from __future__ import annotations

import math
import time

import numpy as np
from ortools.linear_solver import pywraplp

from linetwin.models.surrogate import Surrogate
from linetwin.optimizer.errors import SolverError
from linetwin.optimizer.fast import Solution, Timings, _score
from linetwin.optimizer.problem import Problem

MIN_TIME_S = 0.005
"""Below this budget the exact method does not start (it could not even build the model)."""


def interval_bounds(
    w: np.ndarray, b: np.ndarray, lo: np.ndarray, hi: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Bounds of x @ w + b for x in the box [lo, hi] (`w (d_in, d_out)`)."""
    centre, radius = (lo + hi) / 2, (hi - lo) / 2
    mid = centre @ w + b
    spread = radius @ np.abs(w)
    return mid - spread, mid + spread


def solve_exact(
    model: Surrogate, problem: Problem, time_limit_s: float = 30.0, threads: int = 2
) -> Solution:
    """Maximise the surrogate's profit rate exactly (to SCIP's tolerance) within the limit."""
    t_start = time.perf_counter()
    timings = Timings()
    layers = model.weights()
    n_state = model.schema.n_state
    lo, hi = problem.box
    solver = pywraplp.Solver.CreateSolver("SCIP")
    if solver is None:
        raise SolverError("OR-Tools could not create SCIP")
    solver.SetNumThreads(threads)
    if time_limit_s < MIN_TIME_S:  # OR-Tools reads 0 ms as "no limit"
        return Solution(
            problem.current.copy(),
            float("nan"),
            "deadline",
            "exact",
            time.perf_counter() - t_start,
            feasible=False,
            timings=timings,
        )
    solver.SetTimeLimit(max(1, math.ceil(time_limit_s * 1000)))
    xs = []
    for j in range(len(lo)):
        if problem.grid[j] > 0:
            g = problem.grid[j]
            k = solver.IntVar(
                int(np.ceil((lo[j] - problem.lower[j]) / g - 1e-9)),
                int(np.floor((hi[j] - problem.lower[j]) / g + 1e-9)),
                f"k{j}",
            )
            x = solver.NumVar(-solver.infinity(), solver.infinity(), f"x{j}")
            solver.Add(x == problem.lower[j] + g * k)
        else:
            x = solver.NumVar(float(lo[j]), float(hi[j]), f"x{j}")
        xs.append(x)
    members = layers[0][0].shape[0]
    n_out = model.schema.n_outputs
    outputs = []  # per member: list of linear expressions of the outputs
    unstable = 0
    for m in range(members):
        w0, b0 = layers[0][0][m], layers[0][1][m]
        # fixed state features fold into the bias of the first layer
        bias = b0 + problem.state @ w0[:n_state]
        w_sp = w0[n_state:]
        z_lo, z_hi = interval_bounds(w_sp, bias, lo, hi)
        exprs = [
            sum(float(w_sp[j, u]) * xs[j] for j in range(len(xs)) if w_sp[j, u] != 0)
            + float(bias[u])
            for u in range(w_sp.shape[1])
        ]
        for li in range(1, len(layers)):
            h, h_lo, h_hi = [], np.maximum(z_lo, 0), np.maximum(z_hi, 0)
            for u, z in enumerate(exprs):
                if z_hi[u] <= 0:
                    h.append(0.0)
                elif z_lo[u] >= 0:
                    h.append(z)
                else:
                    unstable += 1
                    hv = solver.NumVar(0.0, float(z_hi[u]), f"h{m}_{li}_{u}")
                    a = solver.BoolVar(f"a{m}_{li}_{u}")
                    solver.Add(hv >= z)
                    solver.Add(hv <= z - float(z_lo[u]) * (1 - a))
                    solver.Add(hv <= float(z_hi[u]) * a)
                    h.append(hv)
            w, b = layers[li][0][m], layers[li][1][m]
            z_lo, z_hi = interval_bounds(w, b, h_lo, h_hi)
            exprs = [
                sum(
                    float(w[v, u]) * h[v]
                    for v in range(len(h))
                    if w[v, u] != 0 and not (isinstance(h[v], float) and h[v] == 0.0)
                )
                + float(b[u])
                for u in range(w.shape[1])
            ]
        outputs.append(exprs)
    mean_out = [sum(outputs[m][o] for m in range(members)) * (1.0 / members) for o in range(n_out)]
    weights = problem.objective.weights(n_out)
    for a_row, bound in problem.objective.constraint_rows(n_out):
        solver.Add(
            sum(float(a_row[o]) * mean_out[o] for o in range(n_out) if a_row[o] != 0)
            <= float(bound)
        )
    solver.Maximize(sum(float(weights[o]) * mean_out[o] for o in range(n_out) if weights[o] != 0))
    timings.model_building = time.perf_counter() - t_start
    t1 = time.perf_counter()
    status = solver.Solve()
    timings.solving = time.perf_counter() - t1
    if status not in (pywraplp.Solver.OPTIMAL, pywraplp.Solver.FEASIBLE):
        name = {
            pywraplp.Solver.INFEASIBLE: "infeasible",
            pywraplp.Solver.NOT_SOLVED: "deadline",
        }.get(status, f"status {status}")
        return Solution(
            problem.current.copy(),
            float("nan"),
            name,
            "exact",
            time.perf_counter() - t_start,
            feasible=False,
            timings=timings,
        )
    x = np.clip(np.array([v.solution_value() for v in xs]), lo, hi)  # solver tolerance
    value = solver.Objective().Value()
    bound = solver.Objective().BestBound()
    gap = abs(bound - value) / max(abs(value), 1e-9)
    obj, _viol, ood = _score(model, problem, x[None], timings)
    return Solution(
        x,
        float(obj[0]),
        "optimal" if status == pywraplp.Solver.OPTIMAL else "deadline",
        "exact",
        time.perf_counter() - t_start,
        bound=float(bound),
        gap=float(gap),
        iterations=unstable,
        ood_score=float(ood[0]),
        timings=timings,
    )
