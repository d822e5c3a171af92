"""Expensive offline search for the best steady-state setpoints, run directly on the twin.

    python bench/twin_search.py --line example [--budget N] [--quick]

The reference that `bench/decision_quality.py` holds the optimizer against. A separable
(diagonal-covariance) CMA-ES written here in numpy maximises the steady-state profit rate
(`window_kpis(...).profit_per_hour`, mean over seeds, after a warm-up from an empty line) over
every setpoint of the line (each station's speed, each thermal station's temperature) inside
the spec's limits, in coordinates normalised to [0, 1]:

1. a run from the nominal setpoints (step 0.25 of the range),
2. a run from the centre of the box with a larger population (another basin, if any),
3. a local polish from the best point so far (step 0.05),

each stopping early when its step falls under 1e-3. Every candidate is evaluated on the same
seeds (common random numbers): one twin per generation holds a block of `seeds` scenarios per
candidate, each block a copy of the same initial states and random streams, so candidates
differ only through their setpoints. Candidates outside the box are evaluated at their nearest
point inside it and ranked with a quadratic penalty on the distance; gridded setpoints are
snapped to their grid.

The best few distinct candidates are re-evaluated at the end on a fresh, larger seed set
(with nominal setpoints on the same seeds), and the best of them on that set is the answer: its
profit rate with a 95% CI, and its paired gain over nominal. The JSON line printed is also saved
to `bench/out/search-<line>.json` (the setpoint array in `setpoints_array`).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# Run as a script, this file's folder comes first on sys.path, and it holds `twin.py`: take the
# folder off so that `import twin` finds the package, not the twin benchmark.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path.insert(0, str(ROOT))

import numba  # noqa: E402
import numpy as np  # noqa: E402

from linetwin.twin import Twin, bundled_spec, load_spec, loads_spec, window_kpis  # noqa: E402
from linetwin.twin import layout as L  # noqa: E402
from linetwin.twin.params import compile_params  # noqa: E402
from linetwin.twin.spec import BUNDLED_LINES, SETPOINT_NAMES, LineSpec  # noqa: E402

OUT = HERE / "out"
INLINE_LINES = {
    # A small cell with interior optima: a mill whose scrap and wear grow with speed feeding a
    # heat-treat oven with a temperature window, between a deterministic loader and a packer.
    "cell": """
name = "four-station-cell"
[economics]
price_per_good_part = 6.0
cost_per_scrap_part = 2.5
energy_price_per_kwh = 0.2

[[stations]]
name = "load"
cycle_time_s = 30.0
processing = "deterministic"
buffer_after = 6
energy = { idle_kw = 0.4, run_kw = 1.5 }

[[stations]]
name = "mill"
cycle_time_s = 36.0
processing = "exponential"
buffer_after = 4
mtbf_s = 5400.0
mttr_s = 600.0
setpoints.speed = { min = 0.6, max = 1.5, nominal = 1.0, max_step = 0.05 }
scrap = { base = 0.01, speed_gain = 0.25 }
energy = { idle_kw = 2.0, run_kw = 12.0, speed_exponent = 2.5 }
wear = { speed_exponent = 2.5, failure_gain = 0.3 }

[[stations]]
name = "oven"
cycle_time_s = 33.0
processing = "exponential"
buffer_after = 5
mtbf_s = 10800.0
mttr_s = 900.0
thermal = { ideal_min_c = 160.0, ideal_max_c = 175.0, time_constant_s = 600.0, heater_kw = 40.0 }
setpoints.speed = { min = 0.7, max = 1.4, nominal = 1.0, max_step = 0.05 }
setpoints.temperature = { min = 130.0, max = 200.0, nominal = 172.0, max_step = 4.0 }
scrap = { base = 0.005, speed_gain = 0.2, temperature_gain = 0.0008 }
energy = { idle_kw = 2.0, run_kw = 6.0 }

[[stations]]
name = "pack"
cycle_time_s = 28.0
processing = "exponential"
mtbf_s = 7200.0
mttr_s = 300.0
energy = { idle_kw = 0.5, run_kw = 2.0 }
""",
}
MAX_BATCH_SCENARIOS = 4096  # scenarios per twin call when evaluating many candidates


# -- setpoint coordinates ------------------------------------------------------------------
@dataclass(frozen=True)
class Box:
    """The decision space: every present setpoint, normalised to [0, 1]."""

    spec: LineSpec
    slots: np.ndarray  # (d, 2) station, setpoint kind
    lower: np.ndarray  # (d,)
    upper: np.ndarray  # (d,)
    grid: np.ndarray  # (d,) grid step, 0 where continuous
    nominal_sp: np.ndarray  # (n_stations, 2) nominal setpoints, 0 where absent

    @classmethod
    def of(cls, spec: LineSpec) -> Box:
        lp = compile_params(spec)
        slots = np.argwhere(lp.present)
        lo = lp.lower[slots[:, 0], slots[:, 1]]
        hi = lp.upper[slots[:, 0], slots[:, 1]]
        grid = np.zeros(len(slots))
        for j, (i, k) in enumerate(slots):
            st = spec.stations[i].setpoints
            sp = st.speed if k == L.S_SPEED else st.temperature
            grid[j] = (sp.grid or 0.0) if sp is not None else 0.0
        return cls(spec, slots, lo, hi, grid, np.nan_to_num(lp.nominal, nan=0.0))

    @property
    def dim(self) -> int:
        return len(self.slots)

    def to_u(self, sp: np.ndarray) -> np.ndarray:
        """Normalised coordinates `(d,)` of a setpoint array `(n_stations, 2)`."""
        x = sp[self.slots[:, 0], self.slots[:, 1]]
        return (x - self.lower) / np.maximum(self.upper - self.lower, 1e-12)

    def to_setpoints(self, u: np.ndarray) -> np.ndarray:
        """Setpoint arrays `(n, n_stations, 2)` of normalised points `(n, d)` (clipped, snapped)."""
        u = np.atleast_2d(np.clip(u, 0.0, 1.0))
        x = self.lower + u * (self.upper - self.lower)
        g = self.grid
        if (g > 0).any():
            k = np.round((x - self.lower) / np.where(g > 0, g, 1.0))
            snapped = np.clip(self.lower + k * g, self.lower, self.upper)
            x = np.where(g > 0, snapped, x)
        out = np.broadcast_to(self.nominal_sp, (len(u), *self.nominal_sp.shape)).copy()
        out[:, self.slots[:, 0], self.slots[:, 1]] = x
        return out

    def as_mapping(self, sp: np.ndarray) -> dict[str, dict[str, float]]:
        """`{station: {speed, temperature}}` of a setpoint array `(n_stations, 2)`."""
        out: dict[str, dict[str, float]] = {}
        for i, k in self.slots:
            name = self.spec.stations[i].name
            out.setdefault(name, {})[SETPOINT_NAMES[k]] = round(float(sp[i, k]), 6)
        return out


# -- evaluation with common random numbers ---------------------------------------------------
class Evaluator:
    """Profit rates of candidate setpoints on one fixed set of `seeds` scenarios (CRN)."""

    def __init__(
        self, spec: LineSpec, seeds: int, hours: float, warmup_hours: float, seed: int
    ) -> None:
        self.spec, self.seeds, self.hours, self.warmup_hours = spec, seeds, hours, warmup_hours
        # one twin of `seeds` scenarios at time 0: its states and random streams are copied
        # into every candidate's block
        self.base = Twin(spec, seeds, seed=seed).snapshot().state
        self.evaluations = 0
        self.scenario_hours = 0.0

    def profits(self, setpoints: np.ndarray) -> np.ndarray:
        """Profit per hour `(n_candidates, seeds)` of setpoint arrays `(n_candidates, S, 2)`."""
        n = len(setpoints)
        per_call = max(MAX_BATCH_SCENARIOS // self.seeds, 1)
        out = np.empty((n, self.seeds))
        for a in range(0, n, per_call):
            b = min(a + per_call, n)
            m = (b - a) * self.seeds
            state = self.base.take(np.tile(np.arange(self.seeds), b - a))
            twin = Twin(self.spec, m, state=state, seed=0)
            twin.set_setpoints(np.repeat(setpoints[a:b], self.seeds, axis=0))
            start = twin.step(self.warmup_hours * 3600.0)
            end = twin.step(self.hours * 3600.0)
            out[a:b] = window_kpis(start, end).profit_per_hour.reshape(b - a, self.seeds)
        self.evaluations += n
        self.scenario_hours += n * self.seeds * (self.hours + self.warmup_hours)
        return out


def summarise(profit: np.ndarray) -> dict[str, float]:
    """Mean and 95% CI half-width of per-seed profit rates `(n,)`."""
    n = len(profit)
    se = float(profit.std(ddof=1) / math.sqrt(n)) if n > 1 else float("nan")
    return {"mean": float(profit.mean()), "ci95": 1.96 * se}


# -- separable CMA-ES ------------------------------------------------------------------------
@dataclass
class Phase:
    """One CMA-ES run: where it starts, its initial step, population and share of the budget."""

    name: str
    start: str  # "nominal" | "centre" | "best"
    sigma: float
    popsize: int
    share: float


class Archive:
    """Every evaluated point, its penalised and raw objective on the search seeds."""

    def __init__(self) -> None:
        self.u: list[np.ndarray] = []
        self.f: list[float] = []

    def add(self, u: np.ndarray, f: np.ndarray) -> None:
        self.u.extend(np.clip(u, 0, 1))
        self.f.extend(float(x) for x in f)

    def best(self) -> tuple[np.ndarray, float]:
        i = int(np.argmax(self.f))
        return self.u[i], self.f[i]

    def top(self, k: int, tol: float = 1e-3) -> list[np.ndarray]:
        """The `k` best distinct points (farther apart than `tol` in every coordinate sum)."""
        picked: list[np.ndarray] = []
        for i in np.argsort(self.f)[::-1]:
            u = self.u[i]
            if all(np.abs(u - p).sum() > tol for p in picked):
                picked.append(u)
            if len(picked) == k:
                break
        return picked


def sep_cma(
    objective,
    x0: np.ndarray,
    sigma0: float,
    popsize: int,
    budget: int,
    rng: np.random.Generator,
    penalty: float,
    archive: Archive,
    trace: list[list[float]],
    tol_sigma: float = 1e-3,
) -> None:
    """Maximise `objective(u (n, d)) -> (n,)` on [0, 1]^d with sep-CMA-ES (Ros & Hansen 2008).

    Points outside the box are evaluated clipped and ranked with `penalty * |u - clip(u)|²`
    subtracted. Stops after `budget` evaluations or when the step is below `tol_sigma`.
    """
    d = len(x0)
    lam = popsize
    mu = lam // 2
    w = np.log(mu + 0.5) - np.log(np.arange(1, mu + 1))
    w /= w.sum()
    mueff = 1.0 / (w**2).sum()
    cs = (mueff + 2) / (d + mueff + 5)
    ds = 1 + 2 * max(0.0, math.sqrt((mueff - 1) / (d + 1)) - 1) + cs
    cc = (4 + mueff / d) / (d + 4 + 2 * mueff / d)
    c1 = 2 / ((d + 1.3) ** 2 + mueff)
    cmu = min(1 - c1, 2 * (mueff - 2 + 1 / mueff) / ((d + 2) ** 2 + mueff))
    sep = (d + 2) / 3.0  # separable CMA learns the diagonal faster
    c1, cmu = min(1.0, c1 * sep), min(1.0 - min(1.0, c1 * sep), cmu * sep)
    chin = math.sqrt(d) * (1 - 1 / (4 * d) + 1 / (21 * d * d))
    m, sigma = x0.astype(float).copy(), sigma0
    diag = np.ones(d)
    ps, pc = np.zeros(d), np.zeros(d)
    used, gen = 0, 0
    while used + lam <= budget and sigma * math.sqrt(diag.max()) > tol_sigma:
        gen += 1
        z = rng.standard_normal((lam, d))
        y = z * np.sqrt(diag)
        x = m + sigma * y
        inside = np.clip(x, 0.0, 1.0)
        f = objective(inside)
        used += lam
        archive.add(inside, f)
        ranked = f - penalty * ((x - inside) ** 2).sum(axis=1)
        order = np.argsort(ranked)[::-1][:mu]
        yw = w @ y[order]
        m = m + sigma * yw
        m = np.clip(m, -0.1, 1.1)  # keep the mean near the box
        ps = (1 - cs) * ps + math.sqrt(cs * (2 - cs) * mueff) * (yw / np.sqrt(diag))
        hs = np.linalg.norm(ps) / math.sqrt(1 - (1 - cs) ** (2 * gen)) < (1.4 + 2 / (d + 1)) * chin
        pc = (1 - cc) * pc + hs * math.sqrt(cc * (2 - cc) * mueff) * yw
        diag = (
            (1 - c1 - cmu) * diag
            + c1 * (pc**2 + (1 - hs) * cc * (2 - cc) * diag)
            + cmu * (w @ (y[order] ** 2))
        )
        sigma *= math.exp((cs / ds) * (np.linalg.norm(ps) / chin - 1))
        sigma = min(sigma, 0.5)
        trace.append([len(archive.f), archive.best()[1], sigma])


# -- the search ------------------------------------------------------------------------------
def search(
    spec: LineSpec,
    *,
    budget_evals: int = 4000,
    seeds: int = 16,
    hours: float = 8.0,
    warmup_hours: float = 2.0,
    rng_seed: int = 0,
    final_top: int = 8,
    final_seeds: int = 64,
    final_hours: float = 24.0,
) -> dict[str, Any]:
    """Search the setpoints of `spec` for the best steady-state profit rate on the twin."""
    t0 = time.perf_counter()
    box = Box.of(spec)
    d = box.dim
    ev = Evaluator(spec, seeds, hours, warmup_hours, seed=10_000 + rng_seed)
    rng = np.random.default_rng(rng_seed)

    def objective(u: np.ndarray) -> np.ndarray:
        return ev.profits(box.to_setpoints(u)).mean(axis=1)

    u_nom = box.to_u(box.nominal_sp)
    f_nom = float(objective(u_nom[None])[0])
    archive = Archive()
    archive.add(u_nom[None], np.array([f_nom]))
    penalty = 10.0 * max(abs(f_nom), 1.0)  # a step 0.1 outside costs 10% of nominal profit
    lam = 4 + int(3 * math.log(d))
    lam = max(lam + lam % 2, 12)
    phases = [
        Phase("from-nominal", "nominal", 0.25, lam, 0.5),
        Phase("from-centre", "centre", 0.3, 2 * lam, 0.25),
        Phase("polish", "best", 0.05, lam, 0.25),
    ]
    trace: list[list[float]] = []
    phase_log = []
    for ph in phases:
        share = int(ph.share * (budget_evals - 1))
        x0 = {"nominal": u_nom, "centre": np.full(d, 0.5), "best": archive.best()[0]}[ph.start]
        before, t_ph = ev.evaluations, time.perf_counter()
        sep_cma(objective, x0, ph.sigma, ph.popsize, share, rng, penalty, archive, trace)
        phase_log.append(
            {
                "phase": ph.name,
                "evaluations": ev.evaluations - before,
                "best_after": archive.best()[1],
                "seconds": time.perf_counter() - t_ph,
            }
        )
    search_s = time.perf_counter() - t0
    best_search_u, best_search_f = archive.best()

    # re-evaluate the best few on fresh, more and longer runs, with nominal on the same seeds
    t1 = time.perf_counter()
    top = archive.top(final_top)
    fresh = Evaluator(spec, final_seeds, final_hours, warmup_hours, seed=20_000 + rng_seed)
    cand = np.vstack([box.to_setpoints(np.array(top)), box.nominal_sp[None]])
    prof = fresh.profits(cand)
    k = int(np.argmax(prof[:-1].mean(axis=1)))
    best_sp = cand[k]
    final_s = time.perf_counter() - t1
    finals = [
        {
            "search_profit": float(archive.f[_index_of(archive, top[i])]),
            "fresh": summarise(prof[i]),
        }
        for i in range(len(top))
    ]
    return {
        "line": spec.name,
        "spec_hash": spec.spec_hash(),
        "stations": spec.n_stations,
        "dimensions": d,
        "best_setpoints": box.as_mapping(best_sp),
        "setpoints_array": best_sp.tolist(),
        "profit_per_hour": summarise(prof[k]),
        "nominal_profit_per_hour": summarise(prof[-1]),
        "gain_over_nominal": summarise(prof[k] - prof[-1]),
        "search_seeds_profit": {"best": best_search_f, "nominal": f_nom},
        "best_on_search_seeds_is_answer": bool(np.allclose(top[k], best_search_u)),
        "finalists": finals,
        "evaluations": ev.evaluations,
        "final_evaluations": fresh.evaluations,
        "scenario_hours": ev.scenario_hours + fresh.scenario_hours,
        "phases": phase_log,
        "trace": [[int(a), round(b, 3), round(c, 5)] for a, b, c in trace],
        "settings": {
            "budget_evals": budget_evals,
            "seeds": seeds,
            "hours": hours,
            "warmup_hours": warmup_hours,
            "rng_seed": rng_seed,
            "popsize": lam,
            "final_top": final_top,
            "final_seeds": final_seeds,
            "final_hours": final_hours,
            "search_seed": 10_000 + rng_seed,
            "final_seed": 20_000 + rng_seed,
        },
        "search_seconds": search_s,
        "final_seconds": final_s,
        "wall_seconds": time.perf_counter() - t0,
    }


def _index_of(archive: Archive, u: np.ndarray) -> int:
    """Index of the best archive entry equal to `u`."""
    hits = [i for i, v in enumerate(archive.u) if np.array_equal(v, u)]
    return max(hits, key=lambda i: archive.f[i])


def line_spec(name: str) -> LineSpec:
    """A bundled line or one of `INLINE_LINES` by name, or a spec file by path."""
    if name in BUNDLED_LINES:
        return bundled_spec(name)
    if name in INLINE_LINES:
        return loads_spec(INLINE_LINES[name], f"<bench line {name}>")
    return load_spec(name)


def line_tag(name: str) -> str:
    """File-name tag of a line argument."""
    return name if name in BUNDLED_LINES or name in INLINE_LINES else Path(name).stem


def machine() -> dict[str, Any]:
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "numba_threads": numba.get_num_threads(),
        "numpy": np.__version__,
    }


def main(argv: list[str] | None = None) -> None:
    """Run the search on one line, print its JSON line and save it under bench/out/."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--line", default="example", help="bundled line name or spec path")
    parser.add_argument("--budget", type=int, default=None, help="candidate evaluations")
    parser.add_argument("--seeds", type=int, default=16, help="seeds per candidate")
    parser.add_argument("--hours", type=float, default=8.0, help="measured hours per run")
    parser.add_argument("--rng-seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="a smoke run of a few seconds")
    parser.add_argument("--out", default=None, help="where to save (default bench/out/...)")
    args = parser.parse_args(argv)
    spec = line_spec(args.line)
    if args.quick:
        kw = dict(
            budget_evals=args.budget or 120,
            seeds=4,
            hours=2.0,
            warmup_hours=1.0,
            final_top=3,
            final_seeds=8,
            final_hours=4.0,
        )
    else:
        kw = dict(budget_evals=args.budget or 4000, seeds=args.seeds, hours=args.hours)
    out = search(spec, rng_seed=args.rng_seed, **kw)
    out = {
        "bench": "twin-search",
        "command": "python bench/twin_search.py " + " ".join(argv or sys.argv[1:]),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        **out,
    }
    text = json.dumps(out)
    print(text)
    tag = line_tag(args.line)
    path = (
        Path(args.out) if args.out else OUT / f"search-{tag}{'-quick' if args.quick else ''}.json"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
