"""Decision quality: the optimizer's setpoints against an expensive search on the twin.

    python bench/decision_quality.py [--lines example,long,cell] [--quick] [--retrain]

For each line (the bundled `example` line, the bundled 24-station `long` line, and the
four-station `cell` defined in `bench/twin_search.py`):

(a) the optimizer's model: `train_surrogate(spec, TrainSettings.for_horizon(4 h))`, cached in
    `bench/out/model-<line>/` (loaded when present and trained for this spec);
(b) `optimize_line(spec, model)`, the job behind `linetwin optimize`: as the CLI runs it, the
    first solve of a fresh process (`optimizer_cold`, a subprocess), and in this process after
    a warm-up call (`optimizer`, what a long-running service sees), both with the default
    0.5 s budget; also with a 5 s budget and a long `solve_fast` without deadline;
(c) the reference: `bench/twin_search.py`'s derivative-free search on the twin, loaded from
    `bench/out/search-<line>.json` when present for this spec, else run and saved there;
(d) the check: optimizer, search and nominal setpoints on the twin with the same fresh seeds
    (common random numbers), `--scenarios` scenarios of `--hours` after `--warmup-hours` from an
    empty line; profit rates with 95% CIs, the ratio optimizer / search (target >= 0.98 for
    both the cold and the warm solve, CI by the delta method on the paired runs) and the
    paired gains over nominal.

Diagnostics, to tell a model error from a solver error: the surrogate's predicted profit (from
the optimizer's nominal state) and OOD score at every setpoint set; the largest per-setpoint
differences between optimizer and search; setpoints outside the spec's limits (the twin
refuses them, so they are clipped before the check and the excess reported). Prints one JSON
line and saves it to `bench/out/decision-quality.json` (`-quick` added for smoke runs).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# Run as a script, this file's folder comes first on sys.path, and it holds `twin.py`: take the
# folder off so that `import twin` finds the package, not the twin benchmark.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench import twin_search as ts  # noqa: E402
from linetwin.models import checkpoint  # noqa: E402
from linetwin.models.errors import CheckpointError  # noqa: E402
from linetwin.models.pipeline import TrainSettings, train_surrogate  # noqa: E402
from linetwin.models.surrogate import Surrogate, derived_kpis  # noqa: E402
from linetwin.models.train import TrainConfig  # noqa: E402
from linetwin.optimizer.fast import solve_fast  # noqa: E402
from linetwin.optimizer.oneshot import nominal_state, optimize_line  # noqa: E402
from linetwin.optimizer.problem import make_problem  # noqa: E402
from linetwin.twin.params import compile_params  # noqa: E402
from linetwin.twin.spec import LineSpec  # noqa: E402

OUT = HERE / "out"
HORIZON_S = 4 * 3600.0
LINES = ("example", "long", "cell")
TARGET = 0.98
VERIFY_SEED = 30_000


# -- (a) model ---------------------------------------------------------------------------------
def get_model(spec: LineSpec, tag: str, quick: bool, retrain: bool) -> tuple[Surrogate, dict]:
    """Load the cached surrogate of `spec`, or train and cache one."""
    folder = OUT / f"model-{tag}{'-quick' if quick else ''}"
    t0 = time.perf_counter()
    if not retrain and folder.is_dir():
        try:
            model = checkpoint.load(folder, spec)
            train = model.metadata.get("training", {})
            return model, {
                "cached": True,
                "folder": str(folder.relative_to(ROOT)),
                "load_seconds": time.perf_counter() - t0,
                "train_seconds": train.get("total_seconds"),
                "metrics": _accuracy(model.metadata.get("metrics", {})),
            }
        except CheckpointError as exc:
            print(f"retraining {tag}: {exc}", file=sys.stderr)
    if quick:
        settings = TrainSettings.for_horizon(
            HORIZON_S,
            samples=1024,
            eval_states=20,
            config=TrainConfig(max_epochs=3, members=2, hidden=(32, 32)),
        )
    else:
        settings = TrainSettings.for_horizon(HORIZON_S)
    torch.manual_seed(0)
    model, report = train_surrogate(spec, settings)
    checkpoint.save(model, folder)
    return model, {
        "cached": False,
        "folder": str(folder.relative_to(ROOT)),
        "train_seconds": time.perf_counter() - t0,
        "data_seconds": report["training"]["data_seconds"],
        "fit_seconds": report["training"]["fit_seconds"],
        "metrics": _accuracy(report["metrics"]),
    }


def _accuracy(metrics: dict) -> dict:
    """R² of the KPIs that make the profit rate, from a training report's metrics."""
    kpis = metrics.get("kpis", {})
    return {k: round(v["r2"], 4) for k, v in kpis.items() if "r2" in v}


# -- (c) search --------------------------------------------------------------------------------
def get_search(spec: LineSpec, tag: str, quick: bool, rerun: bool) -> dict:
    """Load the saved twin search of `spec`, or run and save one."""
    path = OUT / f"search-{tag}{'-quick' if quick else ''}.json"
    if not rerun and path.is_file():
        saved = json.loads(path.read_text(encoding="utf-8"))
        if saved.get("spec_hash") == spec.spec_hash():
            saved["cached"] = True
            return saved
        print(f"rerunning search for {tag}: saved one is for another spec", file=sys.stderr)
    if quick:
        kw: dict[str, Any] = dict(
            budget_evals=120,
            seeds=4,
            hours=2.0,
            warmup_hours=1.0,
            final_top=3,
            final_seeds=8,
            final_hours=4.0,
        )
    else:
        kw = {}
    out = ts.search(spec, **kw)
    out = {"bench": "twin-search", "command": f"decision_quality.py ({tag})", **out}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out) + "\n", encoding="utf-8")
    out["cached"] = False
    return out


# -- (d) verification --------------------------------------------------------------------------
def ratio_ci(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """mean(a) / mean(b) with a 95% CI by the delta method on paired samples."""
    r = float(a.mean() / b.mean())
    d = a - r * b
    se = float(d.std(ddof=1) / (math.sqrt(len(a)) * abs(b.mean()))) if len(a) > 1 else math.nan
    return {"ratio": r, "ci95": 1.96 * se}


def surrogate_view(
    spec: LineSpec, model: Surrogate, state: np.ndarray, sets: dict[str, np.ndarray]
) -> dict[str, dict[str, float]]:
    """Predicted profit (mean, calibrated std) and OOD score of setpoint arrays `(S, 2)`."""
    out = {}
    for name, sp in sets.items():
        x = model.schema.setpoint_features(sp[None])
        pred = model.predict(state[None], x)
        profit = derived_kpis(spec.economics, pred.members)["profit_per_hour"][:, 0]
        out[name] = {
            "profit_per_hour": float(profit.mean()),
            "member_std": float(profit.std()),
            "ood_score": float(model.ood_score(state[None], x)[0]),
        }
    out["ood_threshold"] = model.ood_threshold  # type: ignore[assignment]
    return out


def largest_differences(box: Any, a: np.ndarray, b: np.ndarray, k: int = 6) -> list[dict[str, Any]]:
    """The `k` setpoints where `a` and `b` differ most, in share of their range."""
    ua, ub = box.to_u(a), box.to_u(b)
    order = np.argsort(-np.abs(ua - ub))[:k]
    rows = []
    for j in order:
        i, kind = box.slots[j]
        rows.append(
            {
                "setpoint": f"{spec_station(box, i)}.{('speed', 'temperature')[kind]}",
                "optimizer": round(float(a[i, kind]), 4),
                "search": round(float(b[i, kind]), 4),
                "range_share": round(float(ua[j] - ub[j]), 4),
            }
        )
    return rows


def spec_station(box: Any, i: int) -> str:
    return box.spec.stations[int(i)].name


def into_box(box: Any, sp: np.ndarray) -> tuple[np.ndarray, float]:
    """Setpoints clipped into the spec's limits, and how far outside they were (0: inside)."""
    lo = np.nan_to_num(compile_params(box.spec).lower, nan=0.0)
    hi = np.nan_to_num(compile_params(box.spec).upper, nan=0.0)
    out = float(np.maximum(np.maximum(sp - hi, lo - sp), 0.0).max())
    return np.clip(sp, lo, hi), out


def solution_row(box: Any, sol: Any, seconds: float, outside: float) -> dict[str, Any]:
    return {
        "seconds": seconds,
        "solve_seconds": sol.seconds,
        "status": sol.status,
        "feasible": sol.feasible,
        "iterations": sol.iterations,
        "objective": sol.objective,
        "timings": sol.timings.as_dict(),
        "outside_limits_by": outside,
    }


COLD = """
import json, sys, time
t0 = time.perf_counter()
sys.path.insert(0, {root!r})
from bench import twin_search as ts
from linetwin.models import checkpoint
from linetwin.optimizer.oneshot import optimize_line
spec = ts.line_spec({tag!r})
model = checkpoint.load({folder!r}, spec)
t1 = time.perf_counter()
shot = optimize_line(spec, model)
s = shot.solution
print(json.dumps({{
    "setpoints": shot.setpoints.tolist(), "seconds": time.perf_counter() - t1,
    "process_seconds": time.perf_counter() - t0, "solve_seconds": s.seconds,
    "status": s.status, "feasible": s.feasible, "iterations": s.iterations,
    "objective": s.objective, "timings": s.timings.as_dict(),
}}))
"""


def cold_optimize(tag: str, folder: str) -> dict[str, Any]:
    """`optimize_line` as the first solve of a fresh process (as `linetwin optimize` runs)."""
    code = COLD.format(root=str(ROOT), tag=tag, folder=str(ROOT / folder))
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_line(tag: str, args: argparse.Namespace) -> dict[str, Any]:
    """Everything for one line."""
    spec = ts.line_spec(tag)
    box = ts.Box.of(spec)
    row: dict[str, Any] = {"line": spec.name, "stations": spec.n_stations, "dimensions": box.dim}
    t0 = time.perf_counter()
    model, row["model"] = get_model(spec, tag, args.quick, args.retrain)
    row["model"]["seconds"] = time.perf_counter() - t0

    # (b) the optimizer: first as `linetwin optimize` runs it, the first solve in a fresh
    # process (0.5 s budget); then in this process after a warm-up call (what a long-running
    # service sees), with the 0.5 s budget and with 5 s; then a long solve without deadline
    sets: dict[str, np.ndarray] = {}
    variants: dict[str, dict[str, Any]] = {}
    cold = cold_optimize(tag, row["model"]["folder"])
    sets["optimizer_cold"], outside = into_box(box, np.array(cold.pop("setpoints")))
    variants["optimizer_cold"] = {**cold, "outside_limits_by": outside, "budget_s": 0.5}
    optimize_line(spec, model)  # warm-up: torch's first optimizer costs about a second
    for name, budget in (("optimizer", 0.5), ("optimizer_5s", 5.0)):
        t0 = time.perf_counter()
        shot = optimize_line(spec, model, budget_s=budget)
        sec = time.perf_counter() - t0
        sets[name], outside = into_box(box, shot.setpoints)
        variants[name] = solution_row(box, shot.solution, sec, outside)
        variants[name]["budget_s"] = budget
        if name == "optimizer":
            variants[name]["predicted_profit_per_hour"] = shot.predicted["profit_per_hour"]
            variants[name]["nominal_predicted_profit_per_hour"] = shot.nominal_predicted[
                "profit_per_hour"
            ]
            variants[name]["setpoints"] = box.as_mapping(sets[name])
    state, nominal = nominal_state(spec, model)
    schema = model.schema
    problem = make_problem(
        spec,
        schema,
        state,
        schema.setpoint_features(nominal[None])[0],
        ood_limit=model.ood_threshold,
    )
    t0 = time.perf_counter()
    long_sol = solve_fast(model, problem, deadline_s=math.inf, starts=512, steps=200)
    sec = time.perf_counter() - t0
    long_sp = schema.setpoint_array(long_sol.setpoints[None], nominal[None])[0]
    sets["optimizer_long_solve"], outside = into_box(box, long_sp)
    variants["optimizer_long_solve"] = solution_row(box, long_sol, sec, outside)
    variants["optimizer_long_solve"].update(starts=512, steps=200, budget_s=None)
    row["optimizer"] = variants

    # (c) the reference search
    t0 = time.perf_counter()
    found = get_search(spec, tag, args.quick, args.rerun_search)
    row["search"] = {
        "cached": found["cached"],
        "seconds_now": time.perf_counter() - t0,
        "wall_seconds": found["wall_seconds"],
        "evaluations": found["evaluations"],
        "own_check": {
            "profit_per_hour": found["profit_per_hour"],
            "gain_over_nominal": found["gain_over_nominal"],
        },
        "setpoints": found["best_setpoints"],
    }
    sets["search"] = np.array(found["setpoints_array"], dtype=float)
    sets["nominal"] = box.nominal_sp

    # (d) verification on fresh seeds, common random numbers
    t0 = time.perf_counter()
    ev = ts.Evaluator(spec, args.scenarios, args.hours, args.warmup_hours, seed=VERIFY_SEED)
    prof = dict(zip(sets, ev.profits(np.stack(list(sets.values()))), strict=True))
    verify_s = time.perf_counter() - t0
    s, n = prof["search"], prof["nominal"]
    ratios = {k: ratio_ci(v, s) for k, v in prof.items() if k.startswith("optimizer")}
    gains = {k: ts.summarise(v - n) for k, v in prof.items() if k != "nominal"}
    row["verify"] = {
        "scenarios": args.scenarios,
        "hours": args.hours,
        "warmup_hours": args.warmup_hours,
        "seed": VERIFY_SEED,
        "seconds": verify_s,
        "profit_per_hour": {k: ts.summarise(v) for k, v in prof.items()},
        "ratio_to_search": ratios,
        "ratio_optimizer_to_search": ratios["optimizer"],
        # both the warm solve and the CLI's cold one must reach the target
        "meets_target": bool(
            min(ratios["optimizer"]["ratio"], ratios["optimizer_cold"]["ratio"]) >= TARGET
        ),
        "gain_over_nominal": gains,
        "share_of_search_gain": {
            k: float((v - n).mean() / (s - n).mean())
            for k, v in prof.items()
            if k.startswith("optimizer") and abs((s - n).mean()) > 0
        },
    }
    row["diagnostics"] = {
        "surrogate_from_nominal_state": surrogate_view(spec, model, state, sets),
        "largest_differences_optimizer_vs_search": largest_differences(
            box, sets["optimizer"], sets["search"]
        ),
    }
    return row


def main(argv: list[str] | None = None) -> None:
    """Run the comparison on the lines and print its JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", default=",".join(LINES), help="comma-separated line names")
    parser.add_argument("--quick", action="store_true", help="a smoke run (tiny model, search)")
    parser.add_argument("--retrain", action="store_true", help="ignore cached models")
    parser.add_argument("--rerun-search", action="store_true", help="ignore saved searches")
    parser.add_argument("--scenarios", type=int, default=None, help="verification seeds")
    parser.add_argument("--hours", type=float, default=None, help="measured hours per run")
    parser.add_argument("--warmup-hours", type=float, default=2.0)
    args = parser.parse_args(argv)
    if args.scenarios is None:
        args.scenarios = 8 if args.quick else 64
    if args.hours is None:
        args.hours = 4.0 if args.quick else 24.0
    t0 = time.perf_counter()
    lines = {}
    for tag in args.lines.split(","):
        lines[tag] = run_line(tag, args)
        print(
            f"{tag}: {json.dumps(lines[tag]['verify']['ratio_optimizer_to_search'])}",
            file=sys.stderr,
        )
    out = {
        "bench": "decision-quality",
        "command": "python bench/decision_quality.py " + " ".join(argv or sys.argv[1:]),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": ts.machine(),
        "target_ratio": TARGET,
        "summary": {
            tag: {
                "ratio": round(r["verify"]["ratio_optimizer_to_search"]["ratio"], 4),
                "ci95": round(r["verify"]["ratio_optimizer_to_search"]["ci95"], 4),
                "ratio_cold": round(r["verify"]["ratio_to_search"]["optimizer_cold"]["ratio"], 4),
                "meets_target": r["verify"]["meets_target"],
                "gain_over_nominal": round(
                    r["verify"]["gain_over_nominal"]["optimizer"]["mean"], 2
                ),
                "search_gain_over_nominal": round(
                    r["verify"]["gain_over_nominal"]["search"]["mean"], 2
                ),
            }
            for tag, r in lines.items()
        },
        "lines": lines,
        "wall_seconds": time.perf_counter() - t0,
    }
    text = json.dumps(out)
    print(text)
    path = OUT / f"decision-quality{'-quick' if args.quick else ''}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
