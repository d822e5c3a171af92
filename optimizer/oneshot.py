"""One-shot optimisation of a line's steady-state target, and its check on the twin.

The job behind `linetwin optimize`: bring the line to a typical nominal state, solve once,
and optionally verify the answer against nominal setpoints on the twin with common random
numbers (same seeds for both runs).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from linetwin.models.dataset import recent_throughput
from linetwin.models.device import torch_threads
from linetwin.models.estimate import kpi_estimate
from linetwin.models.surrogate import Surrogate
from linetwin.optimizer.exact import solve_exact
from linetwin.optimizer.fast import Solution, solve_fast
from linetwin.optimizer.pareto import pareto_front
from linetwin.optimizer.problem import RISK_AVERSION, Objective, make_problem
from linetwin.twin import Twin, window_kpis
from linetwin.twin.params import setpoints_to_mapping
from linetwin.twin.spec import LineSpec


@dataclass(frozen=True)
class OneShot:
    """The answer: setpoints `(n_stations, 2)`, the solve that produced them, and the KPI
    estimates (mean, calibrated std: `models.estimate`) at them and at the nominal ones."""

    setpoints: np.ndarray
    solution: Solution
    predicted: dict[str, tuple[float, float]]
    nominal_predicted: dict[str, tuple[float, float]]


def nominal_state(
    spec: LineSpec, model: Surrogate, seed: int = 0, warmup_s: float = 7200.0
) -> tuple[np.ndarray, np.ndarray]:
    """Return (state features `(n_state,)`, nominal setpoint array `(n_stations, 2)`) of the
    line after running at nominal setpoints for `warmup_s`."""
    twin = Twin(spec, 1, seed=seed)
    twin.advance(warmup_s - 600.0)
    before = twin.snapshot()
    now = twin.step(600.0)
    state = model.schema.state_features(now, recent_throughput(before, now))[0]
    return state, now.setpoints[0]


def optimize_line(
    spec: LineSpec,
    model: Surrogate,
    *,
    exact: bool = False,
    objective: Objective | None = None,
    seed: int = 0,
    budget_s: float = 2.0,
    time_limit_s: float = 60.0,
) -> OneShot:
    """Optimise the steady-state target from the line's nominal state."""
    state, nominal = nominal_state(spec, model, seed)
    schema = model.schema
    current = schema.setpoint_features(nominal[None])[0]
    objective = objective or Objective.from_economics(spec.economics)
    problem = make_problem(
        spec,
        schema,
        state,
        current,
        objective,
        ood_limit=model.ood_threshold,
        risk_aversion=RISK_AVERSION,
    )
    if exact:
        sol = solve_exact(model, problem, time_limit_s=time_limit_s)
    else:
        with torch_threads(1):
            sol = solve_fast(model, problem, deadline_s=budget_s, starts=256, steps=80)
    setpoints = schema.setpoint_array(sol.setpoints[None], nominal[None])[0]
    return OneShot(
        setpoints,
        sol,
        kpi_estimate(model, spec, state, sol.setpoints),
        kpi_estimate(model, spec, state, current),
    )


def pareto_line(
    spec: LineSpec, model: Surrogate, points: int, *, seed: int = 0
) -> list[dict[str, Any]]:
    """Throughput/energy trade-off points from the line's nominal state."""
    state, nominal = nominal_state(spec, model, seed)
    schema = model.schema
    current = schema.setpoint_features(nominal[None])[0]
    problem = make_problem(spec, schema, state, current, ood_limit=model.ood_threshold)
    with torch_threads(1):
        front = pareto_front(model, problem, points)
    return [
        {
            "good_per_hour": p.good_per_hour,
            "energy_kwh_per_hour": p.energy_kwh_per_hour,
            "energy_cap_kwh_per_hour": p.energy_cap_kwh_per_hour,
            "setpoints": setpoints_to_mapping(
                spec, schema.setpoint_array(p.setpoints[None], nominal[None])[0]
            ),
        }
        for p in front
    ]


def verify(
    spec: LineSpec,
    setpoints: np.ndarray,
    hours: float,
    *,
    scenarios: int = 32,
    seed: int = 0,
    warmup_hours: float = 1.0,
) -> dict[str, Any]:
    """Run the twin under `setpoints` and under nominal ones on the same random numbers."""
    t0 = time.perf_counter()
    out: dict[str, Any] = {}
    profit: dict[str, np.ndarray] = {}
    for name, sp in (("optimized", setpoints), ("nominal", None)):
        twin = Twin(spec, scenarios, seed=seed)
        if sp is not None:
            twin.set_setpoints(np.broadcast_to(sp, (scenarios, *sp.shape)).copy())
        start = twin.step(warmup_hours * 3600.0)
        end = twin.step(hours * 3600.0)
        k = window_kpis(start, end)
        profit[name] = k.profit_per_hour
        out[name] = {
            "throughput_per_hour": float(k.throughput_per_hour.mean()),
            "scrap_rate": float(k.scrap_rate.mean()),
            "energy_kwh_per_good_part": float(np.nanmean(k.energy_kwh_per_good_part)),
            "profit_per_hour": float(k.profit_per_hour.mean()),
            "profit_per_hour_se": float(k.profit_per_hour.std(ddof=1) / np.sqrt(scenarios))
            if scenarios > 1
            else None,
        }
    paired = profit["optimized"] - profit["nominal"]  # common random numbers: paired
    diff = {
        "mean": float(paired.mean()),
        "ci95": float(1.96 * paired.std(ddof=1) / np.sqrt(scenarios)) if scenarios > 1 else None,
    }
    out["profit_gain_per_hour"] = diff
    out.update(hours=hours, scenarios=scenarios, seed=seed, wall_seconds=time.perf_counter() - t0)
    return out
