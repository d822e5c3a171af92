"""The SimPy reference model and the twin simulate the same line: their throughputs agree.

The benchmark compares the twin's speed with SimPy's on the same line; that is only fair if
both simulate the same thing. Each check estimates a KPI in both models with its standard
error (SimPy: batch means over one long run, or independent replications for a start-up
window; twin: the spread over its independent scenarios) and asks the difference to be within
Z standard errors of the difference, plus the granularity of an integer count over a finite
window where a line is deterministic (its standard error is then zero).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np

from linetwin.twin import Twin, bundled_spec, loads_spec, window_kpis
from linetwin.twin.spec import LineSpec

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


from bench.simpy_line import simulate_simpy  # noqa: E402  (bench/ is importable from ROOT)

# Two-sided false-alarm probability ~5e-4 per comparison (~3e-3 over the six below). Seeds are
# fixed, so a pass is reproducible; a failure means the models (or the seeds) changed.
Z = 3.5

DETERMINISTIC = """
name = "three-deterministic"
[[stations]]
name = "a"
cycle_time_s = 10.0
processing = "deterministic"
buffer_after = 0
[[stations]]
name = "b"
cycle_time_s = 12.0
processing = "deterministic"
buffer_after = 2
[[stations]]
name = "c"
cycle_time_s = 9.0
processing = "deterministic"
"""

# Every feature at once: a zero-capacity buffer, a speed above nominal (speed scrap, faster
# wear), wear-driven failure hazard, a deterministic station that fails, and a cold thermal
# station warming towards its setpoint (temperature scrap that fades over the first hours).
STRESS = """
name = "stress"
[[stations]]
name = "cut"
cycle_time_s = 10.0
processing = "exponential"
buffer_after = 0
mtbf_s = 900.0
mttr_s = 120.0
scrap = { base = 0.01, speed_gain = 0.5 }
wear = { speed_exponent = 2.0, failure_gain = 3.0 }
[[stations]]
name = "bake"
cycle_time_s = 9.0
processing = "deterministic"
buffer_after = 2
mtbf_s = 1800.0
mttr_s = 90.0
thermal = { ideal_min_c = 150.0, ideal_max_c = 170.0, time_constant_s = 1800.0, initial_c = 25.0 }
scrap = { temperature_gain = 0.0005, max = 0.6 }
[[stations]]
name = "pack"
cycle_time_s = 8.0
processing = "exponential"
mtbf_s = 3600.0
mttr_s = 300.0
"""
STRESS_SETPOINTS = {"cut": {"speed": 1.3}, "bake": {"temperature": 165.0}}


def twin_throughput(
    spec: LineSpec, warmup_h: float, hours: float, n: int = 64
) -> tuple[float, float]:
    """Return the twin's mean good parts per hour over `hours` after `warmup_h`, and its SE."""
    twin = Twin(spec, n, seed=1)
    start = twin.step(warmup_h * 3600.0)
    end = twin.step(hours * 3600.0)
    th = window_kpis(start, end).throughput_per_hour
    return float(th.mean()), float(th.std(ddof=1) / math.sqrt(n))


def simpy_throughput(
    spec: LineSpec, warmup_h: float, hours: float, batches: int = 30
) -> tuple[float, float]:
    """Return SimPy's good parts per hour over one long run and its batch-means SE."""
    out = simulate_simpy(spec, hours, seed=7, warmup_hours=warmup_h, batches=batches)
    per_batch = np.asarray(out["good_out_batches"], dtype=float) / (hours / batches)
    return out["good_out"] / hours, float(per_batch.std(ddof=1) / math.sqrt(batches))


def assert_agree(name: str, a: tuple[float, float], b: tuple[float, float], grain=0.0) -> None:
    """Check |a - b| <= Z * SE(a - b) + grain, with a and b given as (estimate, SE)."""
    se = math.hypot(a[1], b[1])
    diff = abs(a[0] - b[0])
    assert diff <= Z * se + grain, (
        f"{name}: simpy {a[0]:.3f} ± {a[1]:.3f}, twin {b[0]:.3f} ± {b[1]:.3f}: "
        f"|diff| = {diff:.3f} > {Z} * {se:.3f} + {grain:.3f}"
    )


def test_two_station_line_agrees() -> None:
    spec = bundled_spec("two-station")
    simpy = simpy_throughput(spec, warmup_h=5.0, hours=300.0)
    twin = twin_throughput(spec, warmup_h=5.0, hours=100.0)
    assert simpy[1] < 0.01 * simpy[0]  # the check is sharp: SE below 1 %
    assert_agree("two-station", simpy, twin)


def test_deterministic_line_runs_at_its_bottleneck_rate() -> None:
    spec = loads_spec(DETERMINISTIC)
    hours = 50.0
    exact = 3600.0 / 12.0  # the 12 s station paces the line
    simpy = simpy_throughput(spec, warmup_h=1.0, hours=hours, batches=5)
    twin = twin_throughput(spec, warmup_h=1.0, hours=hours, n=4)
    grain = 1.0 / hours  # a window's count of a periodic process is within one part of exact
    assert simpy[1] <= grain and twin[1] == 0.0
    assert abs(simpy[0] - exact) <= grain
    assert abs(twin[0] - exact) <= grain
    assert_agree("deterministic", simpy, twin, grain=2 * grain)


def test_example_line_agrees() -> None:
    spec = bundled_spec("example")
    simpy = simpy_throughput(spec, warmup_h=20.0, hours=700.0)
    twin = twin_throughput(spec, warmup_h=20.0, hours=150.0)
    assert simpy[1] < 0.015 * simpy[0]
    assert_agree("example", simpy, twin)


def test_start_up_with_every_feature_agrees() -> None:
    """From an empty, cold line: good parts, scrap and station-operations in the first hours."""
    spec = loads_spec(STRESS)
    hours, reps, n = 5.0, 80, 2048
    runs = [
        simulate_simpy(spec, hours, seed=100 + r, setpoints=STRESS_SETPOINTS) for r in range(reps)
    ]
    twin = Twin(spec, n, seed=3, setpoints=STRESS_SETPOINTS)
    start = twin.snapshot()
    end = twin.step(hours * 3600.0)
    twin_counts = {
        "good_out": end.good_out - start.good_out,
        "scrapped": end.scrap_total - start.scrap_total,
        "station_ops": (end.completed - start.completed).sum(axis=1),
    }
    for key, tw in twin_counts.items():
        sp = np.array([r[key] for r in runs], dtype=float)
        tw = tw.astype(float)
        assert tw.mean() > 0
        assert_agree(
            f"stress {key}",
            (sp.mean(), sp.std(ddof=1) / math.sqrt(reps)),
            (tw.mean(), tw.std(ddof=1) / math.sqrt(n)),
        )


def test_varied_line_agrees() -> None:
    """Gamma and lognormal processing, Weibull failures (one with wear), lognormal repairs."""
    spec = bundled_spec("varied")
    simpy = simpy_throughput(spec, warmup_h=20.0, hours=700.0)
    twin = twin_throughput(spec, warmup_h=20.0, hours=150.0)
    assert simpy[1] < 0.015 * simpy[0]
    assert_agree("varied", simpy, twin)


# Each new law where it matters most: a very variable lognormal feeder, early-life Weibull
# failures (shape < 1, lifetime drawn whole by SimPy) with long-tailed lognormal repairs, and
# wear-out Weibull failures whose hazard wear scales (SimPy's hazard-budget path).
LAWS = """
name = "laws"
[[stations]]
name = "feed"
cycle_time_s = 10.0
processing = "lognormal"
cv = 0.8
buffer_after = 1
[[stations]]
name = "early"
cycle_time_s = 9.0
processing = "deterministic"
buffer_after = 1
mtbf_s = 900.0
mttr_s = 150.0
failure_law = "weibull"
failure_shape = 0.6
repair_law = "lognormal"
repair_cv = 1.5
[[stations]]
name = "late"
cycle_time_s = 8.0
processing = "gamma"
cv = 0.5
mtbf_s = 1200.0
mttr_s = 200.0
failure_law = "weibull"
failure_shape = 3.0
wear = { speed_exponent = 2.0, failure_gain = 1.0 }
"""


def test_each_new_law_agrees_from_an_empty_line() -> None:
    """Good parts, station-operations and failures in 20 h from empty: 40 SimPy replications
    against 1,024 twin scenarios."""
    spec = loads_spec(LAWS)
    hours, reps, n = 20.0, 40, 1024
    setpoints = {"late": {"speed": 1.2}}
    runs = [simulate_simpy(spec, hours, seed=300 + r, setpoints=setpoints) for r in range(reps)]
    twin = Twin(spec, n, seed=9, setpoints=setpoints)
    start = twin.snapshot()
    end = twin.step(hours * 3600.0)
    twin_counts = {
        "good_out": end.good_out - start.good_out,
        "station_ops": (end.completed - start.completed).sum(axis=1),
        "failures": (end.failures - start.failures).sum(axis=1),
    }
    for key, tw in twin_counts.items():
        sp = np.array([r[key] for r in runs], dtype=float)
        tw = tw.astype(float)
        assert tw.mean() > 0
        assert_agree(
            f"laws {key}",
            (sp.mean(), sp.std(ddof=1) / math.sqrt(reps)),
            (tw.mean(), tw.std(ddof=1) / math.sqrt(n)),
        )
