"""The throughput / energy trade-off: a handful of Pareto points instead of one answer.

Each point maximises good throughput under an energy cap (the epsilon-constraint method); the
caps run from the energy of the least-energy solution to that of the most-throughput one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from linetwin.models.features import OUT_ENERGY, OUT_GOOD
from linetwin.models.surrogate import Surrogate
from linetwin.optimizer.errors import ProblemError
from linetwin.optimizer.fast import Solution, solve_fast
from linetwin.optimizer.problem import Objective, Problem


@dataclass(frozen=True)
class ParetoPoint:
    """One trade-off point: setpoint features and the predicted good/h and kWh/h there."""

    setpoints: np.ndarray
    good_per_hour: float
    energy_kwh_per_hour: float
    energy_cap_kwh_per_hour: float | None
    solution: Solution


def _point(
    model: Surrogate, problem: Problem, objective: Objective, deadline_s: float, cap: float | None
) -> ParetoPoint:
    sol = solve_fast(model, problem.with_objective(objective), deadline_s=deadline_s)
    pred = model.predict(problem.state[None], sol.setpoints[None])
    return ParetoPoint(
        sol.setpoints, float(pred.mean[0, OUT_GOOD]), float(pred.mean[0, OUT_ENERGY]), cap, sol
    )


def pareto_front(
    model: Surrogate, problem: Problem, points: int = 5, deadline_s: float = 0.3
) -> list[ParetoPoint]:
    """Return up to `points` non-dominated (throughput, energy) points, by rising energy."""
    if points < 2:
        raise ProblemError(f"a trade-off curve needs at least 2 points, got {points}")
    base = problem.objective
    most = _point(
        model,
        problem,
        Objective(1.0, 0.0, 0.0, scrap_rate_cap=base.scrap_rate_cap),
        deadline_s,
        None,
    )
    least = _point(
        model,
        problem,
        Objective(0.0, 0.0, 1.0, scrap_rate_cap=base.scrap_rate_cap),
        deadline_s,
        None,
    )
    front = [least]
    lo, hi = least.energy_kwh_per_hour, most.energy_kwh_per_hour
    for cap in np.linspace(lo, hi, points)[1:-1]:
        obj = Objective(
            1.0,
            0.0,
            1e-6,
            energy_cap_kwh_per_hour=float(max(cap, 1e-9)),
            scrap_rate_cap=base.scrap_rate_cap,
        )
        front.append(_point(model, problem, obj, deadline_s, float(cap)))
    front.append(most)
    front.sort(key=lambda p: p.energy_kwh_per_hour)
    kept: list[ParetoPoint] = []
    for p in front:  # drop points another point beats on both counts
        if not any(
            q is not p
            and q.good_per_hour >= p.good_per_hour
            and q.energy_kwh_per_hour <= p.energy_kwh_per_hour
            and (q.good_per_hour, q.energy_kwh_per_hour) != (p.good_per_hour, p.energy_kwh_per_hour)
            for q in front
        ):
            kept.append(p)
    return kept
