"""The loop closed on a mismatched plant: the service in external, closed mode against the same
plant at nominal setpoints, with the same seeds.

The plant is a twin of the line with cycle times and scrap off by hidden factors (default
`cycle=1.15,scrap=1.2`, as `linetwin plant emulate --mismatch`); the service optimizes the
nominal spec with its surrogate. Each run steps the plant as fast as possible: `period_s`
plant seconds of rows (one every `tick_s`) go into the service's external plant
(`ExternalPlant.ingest`, the route's path without HTTP), the runtime's controller decides on
them (plant time: a decision per period), and the plant applies the published setpoints
before the next period. Each run also times a period's rows (6 rows, 10 s apart) from
`ingest` to the decision published on them (p50, p95). The baseline is the same plant, same
seed, at nominal setpoints.

Reported: the plant's realised profit per hour (`twin.kpi.window_kpis` over the run, the
plant's own counters), the paired difference controlled - nominal per seed, its mean and 95%
t-interval over seeds, and the published setpoints that left their limits or moved more than
their `max_step` from what the plant ran (both must be 0). One JSON line.

    .venv/bin/python -m bench.closed_loop [--hours 24] [--seeds 4] [--mismatch cycle=1.15,scrap=1.2]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from linetwin.api.emulator import Mismatch, parse_mismatch, perturb
from linetwin.api.plant import ExternalPlant
from linetwin.api.runtime import Runtime
from linetwin.api.settings import Settings
from linetwin.models.surrogate import Surrogate
from linetwin.replay.csv_export import rows_from_snapshot
from linetwin.twin.kpi import window_kpis
from linetwin.twin.sim import Twin
from linetwin.twin.spec import LineSpec
from linetwin.twin.stats import t975

DECISION_WAIT_S = 30.0
"""Wall s to wait for the controller's decision on a period's rows before giving up."""


@dataclass(frozen=True)
class RunResult:
    """One plant run: realised profit per hour, decisions published (a cycle publishes only
    what is new), fallbacks among them, limit and rate breaches."""

    profit_per_hour: float
    decisions: int
    fallbacks: int
    limit_violations: int
    rate_violations: int
    fallback_reasons: dict[str, int] = field(default_factory=dict)
    latency_ms: tuple[float, float] = (0.0, 0.0)
    """From a period's rows handed to the plant to its cycle done (its decision published,
    when new): p50, p95 (ms)."""


def run_plant(
    spec: LineSpec,
    model: Surrogate | None,
    mismatch: Mismatch,
    seed: int,
    hours: float,
    *,
    period_s: float = 60.0,
    tick_s: float = 10.0,
    data_dir: Path | None = None,
) -> RunResult:
    """Run the mismatched plant for `hours` plant hours with seed `seed`: under the service's
    closed loop when `model` is given, else at nominal setpoints."""
    plant = Twin(perturb(spec, mismatch), 1, seed=seed)
    start = plant.snapshot()
    n_periods = round(hours * 3600.0 / period_s)
    per_period = round(period_s / tick_s)
    if model is None:
        plant.advance(n_periods * period_s)
        end = plant.snapshot()
        return RunResult(float(window_kpis(start, end).profit_per_hour[0]), 0, 0, 0, 0)
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings.load(
            {},
            data_dir=data_dir or Path(tmp),
            plant="external",
            mode="closed",
            period_s=period_s,
            seed=seed,
            rate_per_s=0,
        )
        runtime = Runtime(settings, spec, model)
        external = runtime.plant
        assert isinstance(external, ExternalPlant)
        guard = runtime.controller.guard
        present = guard.present
        decisions = fallbacks = limits = rates = 0
        reasons: dict[str, int] = {}
        latencies: list[float] = []
        runtime.start()
        try:
            external.ingest(rows_from_snapshot(plant.step(tick_s), spec))  # the loop's start
            version = 0
            for _ in range(n_periods):
                rows = [rows_from_snapshot(plant.step(tick_s), spec)[0] for _ in range(per_period)]
                cycles = runtime.cycles_run
                t0 = time.perf_counter()
                external.ingest(rows)
                if runtime.wait_cycles(cycles + 1, DECISION_WAIT_S) <= cycles:
                    raise RuntimeError(f"no cycle within {DECISION_WAIT_S} s of the rows")
                latencies.append(time.perf_counter() - t0)
                got = runtime.current
                if got is None or got.version <= version:
                    continue  # nothing new published (the steady hold): the plant keeps going
                version = got.version
                decision = runtime.storage.to_decision(runtime.storage.decision(version))
                decisions += 1
                fallbacks += int(decision.fallback)
                if decision.fallback:
                    why = decision.reasons[0] if decision.reasons else ""
                    reasons[why] = reasons.get(why, 0) + 1
                sp = decision.setpoints
                running = plant.setpoints[0]
                tol = 1e-9
                outside = present & ((sp < guard.lower - tol) | (sp > guard.upper + tol))
                limits += int(outside.any())
                rates += int((present & (np.abs(sp - running) > guard.max_step + tol)).any())
                published = external.published
                if decision.applied and published is not None:
                    plant.set_setpoints(published[None])
            end = plant.snapshot()
        finally:
            runtime.stop()
    profit = float(window_kpis(start, end).profit_per_hour[0])
    p50, p95 = (float(v) * 1000.0 for v in np.percentile(latencies, [50, 95]))
    return RunResult(profit, decisions, fallbacks, limits, rates, reasons, (p50, p95))


def compare(
    spec: LineSpec,
    model: Surrogate,
    mismatch: Mismatch,
    seeds: list[int],
    hours: float,
    **kw: Any,
) -> dict[str, Any]:
    """Controlled against nominal on the same mismatched plant and seeds: the paired profit
    differences, their mean and 95% t-interval, and the breaches of limits and rate limits."""
    diffs, runs = [], []
    for seed in seeds:
        ctl = run_plant(spec, model, mismatch, seed, hours, **kw)
        nom = run_plant(spec, None, mismatch, seed, hours, **kw)
        diffs.append(ctl.profit_per_hour - nom.profit_per_hour)
        runs.append({"seed": seed, "controlled": asdict(ctl), "nominal": nom.profit_per_hour})
    d = np.array(diffs)
    mean = float(d.mean())
    half = float(t975(len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else np.inf
    return {
        "profit_diff_per_hour": mean,
        "ci95": [mean - half, mean + half],
        "limit_violations": sum(r["controlled"]["limit_violations"] for r in runs),
        "rate_violations": sum(r["controlled"]["rate_violations"] for r in runs),
        "runs": runs,
    }


def main(argv: list[str] | None = None) -> None:
    from linetwin.cli.common import load_line, load_or_train

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--line", default=None, help="line spec (default: the example line)")
    ap.add_argument("--hours", type=float, default=24.0)
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--mismatch", default="cycle=1.15,scrap=1.2")
    ap.add_argument("--period", type=float, default=60.0)
    ap.add_argument("--tick", type=float, default=10.0)
    args = ap.parse_args(argv)
    spec = load_line(args.line)
    model = load_or_train(spec, None, True)
    mismatch = parse_mismatch(args.mismatch)
    t0 = time.perf_counter()
    out = compare(
        spec,
        model,
        mismatch,
        list(range(args.seeds)),
        args.hours,
        period_s=args.period,
        tick_s=args.tick,
    )
    out = {
        "bench": "closed_loop",
        "line": spec.name,
        "mismatch": asdict(mismatch),
        "hours": args.hours,
        "seeds": args.seeds,
        "period_s": args.period,
        "tick_s": args.tick,
        **out,
        "wall_s": round(time.perf_counter() - t0, 1),
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
