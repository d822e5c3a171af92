"""Time full controller cycles (snapshot to published decision): example and 50-station lines.

    python bench/optimizer.py [--quick] [--cycles N]

The surrogate has the product's default architecture (5 members, 2 x 128 ReLU) fitted briefly on
generated data: latency depends on the architecture and the number of setpoints, not on the
accuracy. Prints one JSON line: p50/p95/max cycle time per line, and how much of a cycle went to
surrogate evaluation, model building and solving; the reference is a bare surrogate forward at
batch 1 measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent.resolve()]
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from bench.lines import fifty_station_line  # noqa: E402
from linetwin.models.dataset import recent_throughput  # noqa: E402
from linetwin.models.pipeline import TrainSettings, train_surrogate  # noqa: E402
from linetwin.models.train import TrainConfig  # noqa: E402
from linetwin.optimizer.controller import Controller, MemoryStore, Mode  # noqa: E402
from linetwin.twin import Twin, bundled_spec  # noqa: E402
from linetwin.twin.spec import LineSpec  # noqa: E402


def percentiles(xs: list[float]) -> dict[str, float]:
    a = np.array(xs) * 1000.0
    return {
        "p50_ms": float(np.percentile(a, 50)),
        "p95_ms": float(np.percentile(a, 95)),
        "max_ms": float(a.max()),
        "mean_ms": float(a.mean()),
    }


def bench_line(spec: LineSpec, cycles: int, budget_s: float, quick: bool) -> dict:
    settings = TrainSettings(
        samples=2000 if quick else 8000,
        replicates=2,
        eval_states=20,
        eval_replicates=4,
        config=TrainConfig(max_epochs=5 if quick else 20, patience=5),
    )
    model, _ = train_surrogate(spec, settings)
    model.ood_threshold = float("inf")  # latency only: the briefly fitted model's envelope is thin
    store = MemoryStore()
    twin = Twin(spec, 1, seed=1)
    ctl = Controller(
        spec,
        model,
        store,
        mode=Mode.CLOSED,
        budget_s=budget_s,
        apply=lambda sp: twin.set_setpoints(sp[None]),
    )
    before = twin.snapshot()
    snap = twin.step(600.0)
    for _ in range(3):  # warm-up: torch and OR-Tools initialise on first use
        ctl.cycle(snap, float(recent_throughput(before, snap)[0]), time.time())
    total, parts = [], {"surrogate_s": [], "model_building_s": [], "solving_s": []}
    statuses: dict[str, int] = {}
    for _ in range(cycles):
        before = snap
        snap = twin.step(60.0)
        recent = float(recent_throughput(before, snap)[0])
        t0 = time.perf_counter()
        d = ctl.cycle(snap, recent, time.time())
        total.append(time.perf_counter() - t0)
        for k in parts:
            parts[k].append(d.timings.get(k, 0.0))
        key = d.status if not d.fallback else "fallback:" + ",".join(d.reasons)
        statuses[key] = statuses.get(key, 0) + 1
    # reference: a bare batch-1 surrogate forward, same process
    schema = model.schema
    x_state = np.zeros((1, schema.n_state))
    x_sp = schema.lower[None]
    for _ in range(50):
        model.predict(x_state, x_sp)
    t0 = time.perf_counter()
    n = 500
    for _ in range(n):
        model.predict(x_state, x_sp)
    forward_s = (time.perf_counter() - t0) / n
    share = {k: float(np.mean(v) / np.mean(total)) for k, v in parts.items()}
    return {
        "stations": spec.n_stations,
        "setpoints": schema.n_setpoints,
        "budget_ms": budget_s * 1000,
        "cycles": cycles,
        **percentiles(total),
        "share_of_cycle": share,
        "statuses": statuses,
        "forward_batch1_us": forward_s * 1e6,
        "p95_in_forwards": float(np.percentile(total, 95) / forward_s),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--cycles", type=int, default=None)
    args = ap.parse_args()
    cycles = args.cycles or (10 if args.quick else 100)
    t0 = time.time()
    out = {
        "bench": "optimizer-cycle",
        "command": "python bench/optimizer.py" + (" --quick" if args.quick else ""),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
        },
        "lines": {
            "example": bench_line(bundled_spec("example"), cycles, 0.08, args.quick),
            "fifty": bench_line(fifty_station_line(), cycles, 0.2, args.quick),
        },
        "targets": {"example_p95_ms": 100, "fifty_p95_ms": 250},
    }
    out["wall_seconds"] = time.time() - t0
    print(json.dumps(out))


if __name__ == "__main__":
    main()
