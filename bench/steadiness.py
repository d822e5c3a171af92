"""Steadiness: how much the closed-loop controller moves the plant, and what steadiness costs.

    python bench/steadiness.py [--quick] [--lines example,long,fifty] [--scenarios N]

For each line (the bundled `example` and 24-station `long` lines, the 50-station line of
`bench/lines.py`) the controller runs in closed mode on the twin, one cycle per line minute
(as `linetwin serve` runs it), driven directly (no HTTP), twice from the same seeds (common
random numbers: the twin draws per-station streams): once as before issue 14 (`today`:
`move_significance = 1`, every cycle's optimum becomes the target) and once with the default
move test (`steady`). A third twin of the same seeds runs the nominal setpoints.

Per setpoint and line-hour after the first hour: moves (changes of the value applied to the
plant, each ramp step counting), reversals (a move against the setpoint's previous move) and
total travel (as a fraction of the setpoint's range); also publications (decision versions) per
hour. Realised profit: the twin's profit rate over the whole controlled window, per scenario;
the steady controller's gain over nominal as a share of today's (target >= 0.98), with the
paired steady - today difference and its 95% CI across scenarios.

The solver does fixed work (32 starts x 20 steps, trust region to its iteration limit, a
generous deadline), so the runs do not depend on the machine's load. The example line uses the
shipped model; the others get a small 4-hour-horizon model, cached in `bench/out/`. Prints one
JSON line and saves it to `bench/out/steadiness.json`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench.lines import fifty_station_line  # noqa: E402
from linetwin.models import checkpoint  # noqa: E402
from linetwin.models.dataset import recent_throughput  # noqa: E402
from linetwin.models.errors import CheckpointError  # noqa: E402
from linetwin.models.pipeline import TrainSettings, train_surrogate  # noqa: E402
from linetwin.models.pretrained import bundled_checkpoint  # noqa: E402
from linetwin.models.surrogate import Surrogate  # noqa: E402
from linetwin.models.train import TrainConfig  # noqa: E402
from linetwin.optimizer.controller import Controller, MemoryStore, Mode  # noqa: E402
from linetwin.optimizer.problem import Objective  # noqa: E402
from linetwin.twin import Twin, bundled_spec, window_kpis  # noqa: E402
from linetwin.twin.params import compile_params  # noqa: E402
from linetwin.twin.snapshot import Snapshot  # noqa: E402
from linetwin.twin.spec import LineSpec  # noqa: E402

OUT = HERE / "out"
CYCLE_S = 60.0  # a decision every line minute
RECENT_S = 600.0  # the recent throughput the controller sees: the last 10 minutes
WARMUP_S = 3600.0
SEED = 7


@dataclass(frozen=True)
class Plan:
    """One line's run: hours of closed loop after the warm-up, scenarios (seeds)."""

    hours: float
    scenarios: int


SAMPLES = {"long": 16_000, "fifty": 12_000}
"""Training samples of the bench's own models (the product trains 64,000: too slow here; with
4,000 the long line's model had throughput R² 0.11 and steered the twin 31% below nominal)."""

PLANS = {"example": Plan(4.0, 3), "long": Plan(3.0, 2), "fifty": Plan(2.0, 2)}


def line_spec(name: str) -> LineSpec:
    return fifty_station_line() if name == "fifty" else bundled_spec(name)


def line_model(name: str, spec: LineSpec, quick: bool) -> tuple[Surrogate, dict[str, Any]]:
    """The shipped model where there is one, else a small 4-hour model (cached)."""
    t0 = time.perf_counter()
    shipped = bundled_checkpoint(spec)
    if shipped is not None:
        return checkpoint.load(shipped, spec), {"model": "shipped"}
    folder = OUT / f"model-steady-{name}{'-quick' if quick else ''}"
    if folder.is_dir():
        try:
            return checkpoint.load(folder, spec), {"model": str(folder.relative_to(ROOT))}
        except CheckpointError as exc:
            print(f"retraining {name}: {exc}", file=sys.stderr)
    settings = TrainSettings.for_horizon(
        4 * 3600.0,
        samples=1500 if quick else SAMPLES[name],
        eval_states=20 if quick else 60,
        config=TrainConfig(
            hidden=(32, 32) if quick else (128, 128),
            members=4 if quick else 5,
            max_epochs=20 if quick else 120,
            patience=10,
        ),
    )
    torch.manual_seed(0)
    model, _report = train_surrogate(spec, settings)
    checkpoint.save(model, folder)
    return model, {
        "model": str(folder.relative_to(ROOT)),
        "train_seconds": round(time.perf_counter() - t0, 1),
    }


def run_controlled(
    spec: LineSpec, model: Surrogate, objective: Objective | None, plan: Plan
) -> dict[str, Any]:
    """Closed loop on `plan.scenarios` scenarios (one controller each); `objective` None: the
    nominal setpoints, no controller. Returns the applied setpoints per cycle
    `(cycles, scenarios, n_stations, 2)`, publications and realised profit per scenario."""
    n = plan.scenarios
    twin = Twin(spec, n, seed=SEED)
    twin.advance(WARMUP_S - RECENT_S)
    history: list[Snapshot] = [twin.snapshot()]
    twin.advance(RECENT_S)
    start = twin.snapshot()
    history.append(start)
    cycles = round(plan.hours * 3600.0 / CYCLE_S)
    lag = round(RECENT_S / CYCLE_S)
    stores = [MemoryStore() for _ in range(n)]
    ctrls = []
    if objective is not None:
        ctrls = [
            Controller(
                spec,
                model,
                stores[s],
                mode=Mode.CLOSED,
                objective=objective,
                budget_s=10.0,  # fixed work, not a deadline: runs do not depend on load
                starts=32,
                steps=20,
            )
            for s in range(n)
        ]
    applied, fallbacks, cycle_s = [], 0, []
    snap = start
    for _ in range(cycles):
        if ctrls:
            recent = recent_throughput(history[max(0, len(history) - 1 - lag)], snap)
            sp = twin.setpoints
            t0 = time.perf_counter()
            for s, ctrl in enumerate(ctrls):
                d = ctrl.cycle(snap.scenario(s), float(recent[s]))
                sp[s] = d.setpoints
                fallbacks += d.fallback
            cycle_s.append((time.perf_counter() - t0) / n)
            twin.set_setpoints(sp, "bench")
        applied.append(twin.setpoints)
        snap = twin.step(CYCLE_S)
        history.append(snap)
    profit = window_kpis(start, snap).profit_per_hour
    return {
        "applied": np.stack(applied),
        "published": [len(st.decisions) for st in stores],
        "profit": np.asarray(profit, dtype=float),
        "fallback_share": fallbacks / max(1, cycles * n) if ctrls else 0.0,
        "cycle_ms_p50": float(np.median(cycle_s) * 1000) if cycle_s else None,
    }


def movement(spec: LineSpec, applied: np.ndarray, hours: float) -> dict[str, Any]:
    """Moves, reversals and travel per setpoint and line-hour, after the first hour."""
    lp = compile_params(spec)
    present = lp.present
    span = np.where(present, np.nan_to_num(lp.upper - lp.lower), 1.0)
    per_hour = round(3600.0 / CYCLE_S)
    steps = np.diff(applied, axis=0)  # (cycles - 1, scenarios, S, 2)
    first = steps[: per_hour - 1]
    later = steps[per_hour - 1 :]
    later_h = max(hours - 1.0, 1e-9)
    moved = later != 0.0
    moves = moved.sum(axis=0)  # (scenarios, S, 2)
    sign = np.sign(later)
    reversals = np.zeros_like(moves)
    last = np.sign(first).copy()
    last_dir = np.zeros(moves.shape)
    for k in range(first.shape[0]):  # the direction each setpoint last moved in, hour one
        last_dir = np.where(last[k] != 0, last[k], last_dir)
    for k in range(later.shape[0]):
        now = sign[k]
        reversals += (now != 0) & (last_dir != 0) & (now != last_dir)
        last_dir = np.where(now != 0, now, last_dir)
    travel = np.abs(later).sum(axis=0) / span
    rate = np.where(present, moves / later_h, 0.0)  # per scenario and setpoint
    all_steps = np.sign(steps)  # the whole run, first hour included
    whole_rev, dir_all = 0, np.zeros(moves.shape)
    for k in range(all_steps.shape[0]):
        now = all_steps[k]
        whole_rev += int(((now != 0) & (dir_all != 0) & (now != dir_all))[:, present].sum())
        dir_all = np.where(now != 0, now, dir_all)
    whole_moves = int((steps != 0)[:, :, present].sum())
    names = [
        f"{st.name}.{k}"
        for st in spec.stations
        for k, on in zip(("speed", "temperature"), (True, st.is_thermal), strict=True)
        if on
    ]
    idx = np.argwhere(present)
    mean_rate = rate.mean(axis=0)[present]
    worst = int(np.argmax(mean_rate))
    total_moves = int(moves[:, present].sum())
    return {
        "moves_per_setpoint_hour_mean": float(mean_rate.mean()),
        "moves_per_setpoint_hour_max": float(mean_rate.max()),
        "moves_per_setpoint_hour_max_any_scenario": float(rate[:, present].max()),
        "worst_setpoint": names[worst] if len(names) == len(idx) else str(idx[worst].tolist()),
        "first_hour_moves_per_setpoint": float(
            (first != 0).sum(axis=0)[:, present].mean() if len(first) else 0.0
        ),
        "moves": total_moves,
        "reversals": int(reversals[:, present].sum()),
        "reversal_share": float(reversals[:, present].sum() / max(1, total_moves)),
        "whole_run_moves": whole_moves,
        "whole_run_reversal_share": whole_rev / max(1, whole_moves),
        "travel_span_per_hour_mean": float((travel[:, present] / later_h).mean()),
    }


def ci95(x: np.ndarray) -> tuple[float, float] | None:
    """The mean's 95% CI across scenarios (normal; n is small, so read it as a rough one)."""
    if len(x) < 2:
        return None
    half = 1.96 * float(np.std(x, ddof=1)) / math.sqrt(len(x))
    return (float(x.mean()) - half, float(x.mean()) + half)


def bench_line(name: str, plan: Plan, quick: bool) -> dict[str, Any]:
    spec = line_spec(name)
    model, info = line_model(name, spec, quick)
    base = Objective.from_economics(spec.economics)
    today_obj = replace(base, move_min_gain_per_hour=0.0, move_significance=1.0)
    t0 = time.perf_counter()
    nominal = run_controlled(spec, model, None, plan)
    today = run_controlled(spec, model, today_obj, plan)
    steady = run_controlled(spec, model, base, plan)
    gain_today = today["profit"] - nominal["profit"]
    gain_steady = steady["profit"] - nominal["profit"]
    diff = steady["profit"] - today["profit"]
    out: dict[str, Any] = {
        "stations": spec.n_stations,
        "hours": plan.hours,
        "scenarios": plan.scenarios,
        **info,
        "min_gain_per_hour": base.move_min_gain_per_hour,
        "significance": base.move_significance,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    for label, run in (("today", today), ("steady", steady)):
        out[label] = {
            **movement(spec, run["applied"], plan.hours),
            "publications_per_hour": float(np.mean(run["published"]) / plan.hours),
            "fallback_share": run["fallback_share"],
            "cycle_ms_p50": run["cycle_ms_p50"],
            "profit_per_hour": float(run["profit"].mean()),
        }
    out["profit"] = {
        "nominal_per_hour": float(nominal["profit"].mean()),
        "gain_today_per_hour": float(gain_today.mean()),
        "gain_steady_per_hour": float(gain_steady.mean()),
        # only meaningful when today's controller gains over nominal at all
        "gain_share": float(gain_steady.mean() / gain_today.mean())
        if gain_today.mean() > 0
        else None,
        "steady_minus_today_per_hour": float(diff.mean()),
        "steady_minus_today_ci95": ci95(diff),
    }
    s = out["steady"]
    out["targets_met"] = {
        "moves_le_2_per_setpoint_hour": s["moves_per_setpoint_hour_max"] <= 2.0,
        "reversals_le_10pct": s["reversal_share"] <= 0.10,
        "gain_share_ge_98pct": out["profit"]["gain_share"] is not None
        and out["profit"]["gain_share"] >= 0.98,
    }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="one scenario, shorter runs")
    ap.add_argument("--lines", default="example,long,fifty")
    ap.add_argument("--scenarios", type=int, default=None, help="override every line's count")
    args = ap.parse_args()
    torch.set_num_threads(1)  # tiny batches: one thread is faster (docs/design.md)
    t0 = time.time()
    lines: dict[str, Any] = {}
    for name in args.lines.split(","):
        plan = PLANS[name]
        if args.quick:
            plan = Plan(max(2.0, plan.hours - 2.0), 1)
        if args.scenarios:
            plan = replace(plan, scenarios=args.scenarios)
        lines[name] = bench_line(name, plan, args.quick)
        print(f"{name}: {json.dumps(lines[name])}", file=sys.stderr)
    out = {
        "bench": "steadiness",
        "command": "python bench/steadiness.py " + " ".join(sys.argv[1:]),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "lines": lines,
        "wall_seconds": round(time.time() - t0, 1),
    }
    text = json.dumps(out)
    OUT.mkdir(exist_ok=True)
    tag = "" if args.lines == "example,long,fifty" else "-" + args.lines.replace(",", "-")
    (OUT / f"steadiness{tag}{'-quick' if args.quick else ''}.json").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
