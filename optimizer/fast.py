"""The real-time method: batched multistart gradient search, then an OR-Tools trust-region loop.

1. Warm start: many starting points (the current setpoints, the last solution, random points in
   the box) climb the surrogate's profit rate together by projected gradient ascent in torch
   (one batched forward and backward per step, on the GPU when the surrogate is there).
2. Refine: around the best feasible start, linearise the surrogate's outputs and solve the
   linear (or, with gridded setpoints, mixed-integer) sub-problem with OR-Tools: maximise the
   linearised profit inside the box, a trust region, the linearised caps. Accept a step when the
   surrogate confirms the gain, else shrink the trust region. Stop at the deadline.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from ortools.linear_solver import pywraplp

from linetwin.models.surrogate import Surrogate
from linetwin.optimizer.errors import SolverError
from linetwin.optimizer.problem import Problem

CAP_PENALTY = 50.0  # penalty per unit of normalised cap violation in the gradient search
MAX_ITERATIONS = 50  # trust-region iterations per solve (the deadline usually ends it)


@dataclass
class Timings:
    """Where a solve spent its time, s."""

    surrogate: float = 0.0
    model_building: float = 0.0
    solving: float = 0.0

    def as_dict(self) -> dict[str, float]:
        return {
            "surrogate_s": self.surrogate,
            "model_building_s": self.model_building,
            "solving_s": self.solving,
        }


@dataclass
class Solution:
    """A solve's answer: setpoint features `(n_setpoints,)` and how it was reached."""

    setpoints: np.ndarray
    objective: float
    status: str  # optimal | converged | deadline | infeasible
    method: str
    seconds: float
    bound: float | None = None
    gap: float | None = None
    iterations: int = 0
    feasible: bool = True
    ood_score: float = 0.0
    timings: Timings = field(default_factory=Timings)


def _score(
    model: Surrogate, problem: Problem, x: np.ndarray, timings: Timings
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (objective, worst cap violation, OOD score) for candidates `(batch, n_sp)`."""
    t0 = time.perf_counter()
    pred = model.predict_batched(problem.state[None], x)
    ood = model.ood_score(problem.state[None], x)
    timings.surrogate += time.perf_counter() - t0
    w = problem.objective.weights(model.schema.n_outputs)
    obj = pred.mean @ w
    if problem.risk_aversion > 0:  # pessimistic: mean minus k member standard deviations
        obj = obj - problem.risk_aversion * (pred.members @ w).std(axis=0)
    viol = np.zeros(len(x))
    for a, b in problem.objective.constraint_rows(model.schema.n_outputs):
        viol = np.maximum(viol, pred.mean @ a - b)
    if problem.spread_limit is not None:  # the members' disagreement on the profit rate
        viol = np.maximum(viol, (pred.members @ w).std(axis=0) - problem.spread_limit)
    return obj, viol, ood


def multistart(
    model: Surrogate,
    problem: Problem,
    starts: int = 128,
    steps: int = 40,
    warm: np.ndarray | None = None,
    seed: int = 0,
    timings: Timings | None = None,
    deadline: float = math.inf,
) -> np.ndarray:
    """Climb from many starts at once; return the end points `(starts, n_sp)`.

    Stops early (after at least one step) when `time.perf_counter()` passes `deadline`.
    """
    timings = timings or Timings()
    t0 = time.perf_counter()
    lo, hi = problem.box
    span = np.maximum(hi - lo, 1e-12)
    rng = np.random.default_rng(seed)
    x0 = lo + rng.random((starts, len(lo))) * (hi - lo)
    x0[0] = np.clip(problem.current, lo, hi)
    if warm is not None:
        x0[1] = np.clip(warm, lo, hi)
    dev = model.device
    tl = torch.as_tensor(lo, dtype=torch.float32, device=dev)
    tspan = torch.as_tensor(span, dtype=torch.float32, device=dev)
    state = torch.as_tensor(problem.state[None], dtype=torch.float32, device=dev)
    state = state.expand(starts, -1)
    w = torch.as_tensor(
        problem.objective.weights(model.schema.n_outputs), dtype=torch.float32, device=dev
    )
    rows = problem.objective.constraint_rows(model.schema.n_outputs)
    scale = float(model.net.y_std[0].item() * max(problem.objective.good_weight, 1e-9)) or 1.0
    u = ((torch.as_tensor(x0, dtype=torch.float32, device=dev) - tl) / tspan).requires_grad_()
    # Adam written out: torch.optim's first use imports torch._dynamo (~0.9 s), which would eat
    # a cold process's whole budget (the first `linetwin optimize` in a process).
    m1, m2 = torch.zeros_like(u), torch.zeros_like(u)
    b1, b2, lr = 0.9, 0.999, 0.05
    for k in range(1, steps + 1):
        x = tl + u.clamp(0, 1) * tspan
        members = model.predict_torch(state, x)
        y = members.mean(dim=0)
        f = (y * w).sum(dim=1) / scale
        if problem.risk_aversion > 0:
            member_profit = (members * w).sum(dim=2)
            f = f - problem.risk_aversion * member_profit.std(dim=0, unbiased=False) / scale
        if problem.spread_limit is not None:
            spread = (members * w).sum(dim=2).std(dim=0, unbiased=False)
            f = f - CAP_PENALTY * torch.relu(spread - problem.spread_limit) / scale
        for a, b in rows:
            ta = torch.as_tensor(a, dtype=torch.float32, device=dev)
            f = f - CAP_PENALTY * torch.relu((y * ta).sum(dim=1) - b) / scale
        (grad,) = torch.autograd.grad(-f.sum(), u)
        with torch.no_grad():
            m1.mul_(b1).add_(grad, alpha=1 - b1)
            m2.mul_(b2).addcmul_(grad, grad, value=1 - b2)
            step = lr * (m1 / (1 - b1**k)) / ((m2 / (1 - b2**k)).sqrt() + 1e-8)
            u.sub_(step).clamp_(0, 1)
        if time.perf_counter() > deadline:
            break
    out = (tl + u.detach().clamp(0, 1) * tspan).double().cpu().numpy()
    out = np.clip(out, lo, hi)  # float32 rounding may land a hair outside the box
    timings.surrogate += time.perf_counter() - t0
    return out


def _lp_step(
    problem: Problem,
    x0: np.ndarray,
    grad: np.ndarray,
    jac: np.ndarray,
    y0: np.ndarray,
    radius: np.ndarray,
    timings: Timings,
    margin: float = 0.0,
    caps: bool = True,
) -> np.ndarray | None:
    """Solve the linearised sub-problem around x0 within `radius`; None if infeasible.

    `margin` tightens each linearised cap, as a share of its scale, so that a step that lands
    on a curved cap's tangent ends inside it.
    """
    t0 = time.perf_counter()
    gridded = problem.grid > 0
    solver = pywraplp.Solver.CreateSolver("SCIP" if gridded.any() else "GLOP")
    if solver is None:
        raise SolverError("OR-Tools could not create its LP/MIP solver")
    lo, hi = problem.box
    xs = []
    for j in range(len(x0)):
        a, b = max(lo[j], x0[j] - radius[j]), min(hi[j], x0[j] + radius[j])
        b = max(a, b)
        if gridded[j]:
            g = problem.grid[j]
            ka = int(np.ceil((a - problem.lower[j]) / g - 1e-9))
            kb = int(np.floor((b - problem.lower[j]) / g + 1e-9))
            if kb < ka:
                kb = ka = round((x0[j] - problem.lower[j]) / g)
            k = solver.IntVar(ka, kb, f"k{j}")
            x = solver.NumVar(-solver.infinity(), solver.infinity(), f"x{j}")
            solver.Add(x == problem.lower[j] + g * k)
        else:
            x = solver.NumVar(a, b, f"x{j}")
        xs.append(x)
    n_out = len(y0)
    for a_row, bound in problem.objective.constraint_rows(n_out) if caps else []:
        coef = a_row @ jac  # d(a · y)/dx
        solver.Add(
            sum(float(c) * (xs[j] - float(x0[j])) for j, c in enumerate(coef))
            <= float(bound - a_row @ y0 - margin * max(abs(bound), 1.0))
        )
    solver.Maximize(sum(float(g) * xs[j] for j, g in enumerate(grad)))
    timings.model_building += time.perf_counter() - t0
    t1 = time.perf_counter()
    status = solver.Solve()
    timings.solving += time.perf_counter() - t1
    if status not in (pywraplp.Solver.OPTIMAL, pywraplp.Solver.FEASIBLE):
        return None
    return np.clip(np.array([x.solution_value() for x in xs]), lo, hi)  # LP tolerance


def _linearise(
    model: Surrogate, problem: Problem, x0: np.ndarray, timings: Timings
) -> tuple[np.ndarray, np.ndarray]:
    """Return outputs y0 `(n_out,)` and their Jacobian `(n_out, n_sp)` at x0 (ensemble mean)."""
    t0 = time.perf_counter()
    y0, jac = model.jacobian(problem.state[None], x0[None])
    timings.surrogate += time.perf_counter() - t0
    return y0, jac


def solve_fast(
    model: Surrogate,
    problem: Problem,
    deadline_s: float = 0.08,
    warm: np.ndarray | None = None,
    starts: int = 128,
    steps: int = 40,
    seed: int = 0,
) -> Solution:
    """Best setpoints found within `deadline_s` seconds (anytime: always returns an answer)."""
    t_start = time.perf_counter()
    timings = Timings()
    lo, hi = problem.box
    cands = multistart(
        model, problem, starts, steps, warm, seed, timings, deadline=t_start + 0.6 * deadline_s
    )
    cands = np.vstack([cands, np.clip(problem.current, lo, hi)[None]])
    cands = _on_grid(problem, cands)
    obj, viol, ood = _score(model, problem, cands, timings)
    ok = (viol <= 1e-6) & (ood <= problem.ood_limit)
    if not ok.any():
        restored = _restore(model, problem, cands, viol, ood, timings, t_start + deadline_s)
        if restored is not None:
            cands = np.vstack([cands, restored[None]])
            obj, viol, ood = _score(model, problem, cands, timings)
            ok = (viol <= 1e-6) & (ood <= problem.ood_limit)
    if not ok.any():
        best = int(np.argmin(np.maximum(viol, 0) + np.maximum(ood - problem.ood_limit, 0)))
        return Solution(
            cands[best],
            float(obj[best]),
            "infeasible",
            "fast",
            time.perf_counter() - t_start,
            feasible=False,
            ood_score=float(ood[best]),
            timings=timings,
        )
    best = int(np.flatnonzero(ok)[np.argmax(obj[ok])])
    x, f, o = cands[best], float(obj[best]), float(ood[best])
    w = problem.objective.weights(model.schema.n_outputs)
    radius = 0.1 * np.maximum(hi - lo, 1e-12)
    status, it = "deadline", 0
    while time.perf_counter() - t_start < deadline_s:
        if it >= MAX_ITERATIONS:
            status = "iteration_limit"
            break
        it += 1
        y0, jac = _linearise(model, problem, x, timings)
        step = _lp_step(problem, x, w @ jac, jac, y0, radius, timings)
        if step is None:
            radius *= 0.5
            continue
        s_obj, s_viol, s_ood = _score(model, problem, step[None], timings)
        if s_viol[0] <= 1e-6 and s_ood[0] <= problem.ood_limit and s_obj[0] > f + 1e-9:
            x, f, o = step, float(s_obj[0]), float(s_ood[0])
            radius *= 1.5
        else:
            radius *= 0.5
        if np.all(radius < 1e-4 * np.maximum(hi - lo, 1e-12)):
            status = "converged"
            break
    return Solution(
        np.clip(x, lo, hi),
        f,
        status,
        "fast",
        time.perf_counter() - t_start,
        iterations=it,
        ood_score=o,
        timings=timings,
    )


def _restore(
    model: Surrogate,
    problem: Problem,
    cands: np.ndarray,
    viol: np.ndarray,
    ood: np.ndarray,
    timings: Timings,
    deadline: float,
) -> np.ndarray | None:
    """Walk from the least-violating trusted candidate to a point that meets the caps.

    Each step solves the linearised caps over the whole box (objective: stay close in the
    profit direction) and is kept while the true violation falls; None if no feasible point
    was reached before the deadline.
    """
    trusted = ood <= problem.ood_limit
    pool = np.flatnonzero(trusted) if trusted.any() else np.arange(len(cands))
    x = cands[pool[np.argmin(viol[pool])]]
    v = float(viol[pool].min())
    lo, hi = problem.box
    rows = problem.objective.constraint_rows(model.schema.n_outputs)
    radius = 0.25 * np.maximum(hi - lo, 1e-12)
    for _ in range(30):
        if time.perf_counter() > deadline or not rows:
            return None
        y0, jac = _linearise(model, problem, x, timings)
        a, _bound = max(rows, key=lambda r: float(r[0] @ y0 - r[1]))  # the most violated cap
        # descend that cap's linearisation alone (the others may be what blocks the way)
        step = _lp_step(problem, x, -(a @ jac), jac, y0, radius, timings, caps=False)
        if step is None:
            return None
        _obj, s_viol, s_ood = _score(model, problem, step[None], timings)
        if s_viol[0] >= v or s_ood[0] > problem.ood_limit:
            radius = radius * 0.5  # the linearisation overshot: try a shorter step
            if np.all(radius < 1e-6 * np.maximum(hi - lo, 1e-12)):
                return None
            continue
        x, v = step, float(s_viol[0])
        if v <= 1e-6:
            return x
    return None


def _on_grid(problem: Problem, x: np.ndarray) -> np.ndarray:
    """Round gridded setpoints to the nearest grid value inside the box."""
    g = problem.grid
    if not (g > 0).any():
        return x
    lo, hi = problem.box
    k = np.round((x - problem.lower) / np.where(g > 0, g, 1.0))
    snapped = np.clip(problem.lower + k * g, lo, hi)
    return np.where(g > 0, snapped, x)
