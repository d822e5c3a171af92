"""Benchmark the twin against SimPy on the same lines; print one JSON line of figures.

    python bench/twin.py [--quick]

For the two-station line, the bundled example line and the varied line (gamma and lognormal
processing, Weibull failures, lognormal repairs), in one process: station-operations
(parts finished by any station, scrapped ones included) per wall-clock second of (a) the SimPy
reference model `bench/simpy_line.py`, (b) the twin with one scenario, one `advance` call
after warm-up calls that compile and calibrate it, (c) the twin with 4096 scenarios on the
CPU threads numba uses. Ratios are twin over SimPy measured seconds apart in the same process,
which is what survives on a shared machine; absolute rates drift with the machine's load.

The targets (twin >= 10x SimPy for one scenario, >= 100x batched) are for the two-station and
example lines. The varied line shows what the non-exponential laws cost: a gamma or lognormal
part and a Weibull busy stretch need a few transcendental functions each (logs, a cosine,
powers) where an exponential part needs one logarithm, so both the twin and SimPy slow down.

It also checks the twin against ground truth at the benchmark's own settings: on the
two-station exponential line, the throughput of the benchmarked runs against the exact
continuous-time Markov chain (`tests/twin/ctmc.py`).
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import math
import os
import platform
import sys
import time
from pathlib import Path
from types import ModuleType

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# Run as a script, this file's folder comes first on sys.path, and this file is `twin.py`:
# take the folder off so that `import twin` finds the package, not this script.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path.insert(0, str(ROOT))

import numba  # noqa: E402
import numpy as np  # noqa: E402
import simpy  # noqa: E402

from bench import simpy_line  # noqa: E402
from linetwin.twin import Twin, bundled_spec  # noqa: E402
from linetwin.twin.spec import LineSpec  # noqa: E402

BATCH = 4096
LINES = ("two-station", "example", "varied")  # varied: gamma, lognormal, Weibull laws


def load_by_path(name: str, path: Path) -> ModuleType:
    """Import the Python file at `path` as module `name`."""
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def calibrate(run_hours, target_s: float, pilot_s: float) -> float:
    """Return line hours that `run_hours(h) -> wall s` takes about `target_s` to simulate.

    Pilot runs double from 0.05 h until one lasts `pilot_s`; they also serve as warm-up.
    """
    hours = 0.05
    while True:
        wall = run_hours(hours)
        if wall >= pilot_s or hours > 1e6:
            return hours * target_s / max(wall, 1e-9)
        hours *= 2.0


def bench_simpy(spec: LineSpec, target_s: float, pilot_s: float) -> dict:
    """Station-operations per second of the SimPy model, one run of about `target_s`."""

    def run(hours: float) -> float:
        t = time.perf_counter()
        simpy_line.simulate_simpy(spec, hours, seed=11)
        return time.perf_counter() - t

    hours = calibrate(run, target_s, pilot_s)
    t = time.perf_counter()
    out = simpy_line.simulate_simpy(spec, hours, seed=12)
    wall = time.perf_counter() - t
    return {
        "simpy_ops_per_s": out["station_ops"] / wall,
        "simpy_wall_s": wall,
        "simpy_hours": hours,
        "simpy_station_ops": out["station_ops"],
        "simpy_throughput_per_hour": out["good_out"] / hours,
    }


def bench_twin(
    spec: LineSpec, n: int, target_s: float, pilot_s: float, warmup_h: float, key: str
) -> dict:
    """Station-operations per second of the twin with `n` scenarios, one `advance` call.

    A first call compiles the kernel (or loads numba's cache); a warm-up of `warmup_h` line
    hours fills the line, so that the measured window's throughput is the steady state's.
    """
    twin = Twin(spec, n, seed=5)
    t = time.perf_counter()
    twin.advance(1.0)
    compile_s = time.perf_counter() - t
    twin.advance(warmup_h * 3600.0)

    def run(hours: float) -> float:
        t = time.perf_counter()
        twin.advance(hours * 3600.0)
        return time.perf_counter() - t

    hours = calibrate(run, target_s, pilot_s)
    before = twin.snapshot()
    t = time.perf_counter()
    twin.advance(hours * 3600.0)
    wall = time.perf_counter() - t
    after = twin.snapshot()
    ops = int((after.completed - before.completed).sum())
    good = (after.good_out - before.good_out) / hours
    return {
        f"{key}_ops_per_s": ops / wall,
        f"{key}_wall_s": wall,
        f"{key}_hours": hours,
        f"{key}_station_ops": ops,
        f"{key}_first_call_s": compile_s,
        f"{key}_throughput_per_hour": float(good.mean()),
        f"{key}_throughput_se": float(good.std(ddof=1) / math.sqrt(n)) if n > 1 else None,
    }


def exact_throughput_per_hour(spec: LineSpec) -> float:
    """Return the exact throughput of an exponential line without scrap or wear, parts/h."""
    ctmc = load_by_path("twin_ctmc", ROOT / "tests" / "twin" / "ctmc.py")
    st = spec.stations
    if any(
        s.processing != "exponential" or s.scrap.base > 0 or s.wear.failure_gain > 0 for s in st
    ):
        raise ValueError(f"line {spec.name!r} is not an exponential line without scrap or wear")
    rates = [s.setpoints.speed.nominal / s.cycle_time_s for s in st]
    buffers = [int(s.buffer_after or 0) for s in st[:-1]]
    fails = [1.0 / s.mtbf_s if s.mtbf_s else 0.0 for s in st]
    repairs = [1.0 / s.mttr_s if s.mttr_s else 1.0 for s in st]
    if any(fails):
        return 3600.0 * ctmc.exact_throughput(rates, buffers, fails, repairs)
    return 3600.0 * ctmc.exact_throughput(rates, buffers)


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and print its JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run of a few seconds")
    args = parser.parse_args(argv)
    target, pilot, warmup_h = (0.25, 0.05, 0.25) if args.quick else (3.0, 0.3, 2.0)
    lines = {}
    for name in LINES:
        spec = bundled_spec(name)
        row = bench_simpy(spec, target, pilot)
        row |= bench_twin(spec, 1, target, pilot, warmup_h, "twin1")
        row |= bench_twin(spec, BATCH, target, pilot, warmup_h, "twin_batch")
        row["ratio_single"] = row["twin1_ops_per_s"] / row["simpy_ops_per_s"]
        row["ratio_batch"] = row["twin_batch_ops_per_s"] / row["simpy_ops_per_s"]
        lines[name] = row
    two = lines["two-station"]
    exact = exact_throughput_per_hour(bundled_spec("two-station"))
    check = {
        "line": "two-station",
        "exact_throughput_per_hour": exact,
        "twin_batch_throughput_per_hour": two["twin_batch_throughput_per_hour"],
        "twin_batch_rel_error": two["twin_batch_throughput_per_hour"] / exact - 1.0,
        "twin_batch_rel_se": two["twin_batch_throughput_se"] / exact,
        "twin1_throughput_per_hour": two["twin1_throughput_per_hour"],
        "twin1_rel_error": two["twin1_throughput_per_hour"] / exact - 1.0,
        "simpy_throughput_per_hour": two["simpy_throughput_per_hour"],
        "simpy_rel_error": two["simpy_throughput_per_hour"] / exact - 1.0,
    }
    out = {
        "bench": "twin-vs-simpy",
        "command": "python bench/twin.py" + (" --quick" if args.quick else ""),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(),
            "cpu_count": os.cpu_count(),
        },
        "versions": {
            "numba": numba.__version__,
            "simpy": simpy.__version__,
            "numpy": np.__version__,
        },
        "threads": numba.get_num_threads(),
        "batch_scenarios": BATCH,
        "metric": "station-operations (parts finished by any station) per wall second",
        "lines": lines,
        "ctmc_check": check,
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
