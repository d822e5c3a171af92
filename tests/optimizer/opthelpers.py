"""Helpers of the optimizer tests: lines with grids, small surrogates, a brute-force search,
a one-scenario twin run with the recent throughput the controller needs."""

from __future__ import annotations

import collections
import functools
import math
from collections.abc import Callable

import numpy as np
import torch

from linetwin.models.dataset import recent_throughput
from linetwin.models.features import OUT_ENERGY, FeatureSchema
from linetwin.models.network import EnsembleMLP
from linetwin.models.pipeline import TrainSettings
from linetwin.models.surrogate import Surrogate
from linetwin.models.train import TrainConfig
from linetwin.optimizer.controller import MemoryStore
from linetwin.optimizer.problem import Problem, make_problem
from linetwin.twin import Twin, bundled_spec
from linetwin.twin.sensors import SensorFault
from linetwin.twin.snapshot import Snapshot
from linetwin.twin.spec import LineSpec

GRIDDED = {
    "name": "gridded",
    "stations": [
        {
            "name": "a",
            "cycle_time_s": 10.0,
            "buffer_after": 4,
            "setpoints": {
                "speed": {
                    "min": 0.5,
                    "max": 1.5,
                    "nominal": 1.0,
                    "max_step": 0.25,
                    "resolution": 0.02,
                    "grid": 0.1,
                }
            },
        },
        {
            "name": "oven",
            "cycle_time_s": 12.0,
            "buffer_after": 3,
            "thermal": {"ideal_min_c": 140.0, "ideal_max_c": 160.0},
            "setpoints": {
                # a grid step as large as one cycle's move (the coarsest a spec may ask for)
                "speed": {"min": 0.6, "max": 1.4, "nominal": 1.0, "max_step": 0.1, "grid": 0.1},
                "temperature": {
                    "min": 100.0,
                    "max": 200.0,
                    "nominal": 150.0,
                    "max_step": 6.0,
                    "resolution": 0.5,
                    "grid": 2.5,
                },
            },
        },
        {
            "name": "c",
            "cycle_time_s": 9.0,
            "setpoints": {
                # 1.5 is not on the grid 0.6 + 0.2 k: the highest grid value is 1.4
                "speed": {
                    "min": 0.6,
                    "max": 1.5,
                    "nominal": 1.0,
                    "max_step": 0.3,
                    "resolution": 0.01,
                    "grid": 0.2,
                }
            },
        },
    ],
}

TWO_GRIDDED = {
    "name": "two-gridded",
    "stations": [
        {
            "name": "a",
            "cycle_time_s": 10.0,
            "buffer_after": 5,
            "setpoints": {
                "speed": {"min": 0.5, "max": 1.5, "nominal": 1.0, "max_step": 0.1, "grid": 0.1}
            },
        },
        {
            "name": "b",
            "cycle_time_s": 8.0,
            "setpoints": {
                "speed": {"min": 0.5, "max": 1.5, "nominal": 1.0, "max_step": 0.1, "grid": 0.05}
            },
        },
    ],
}

TRAINED = TrainSettings.for_horizon(
    4 * 3600.0,
    samples=6000,
    eval_states=30,
    config=TrainConfig(hidden=(32, 32), members=4, max_epochs=100, batch_size=256),
)
"""The session's trained surrogate: 4-hour horizon (2 replicates per sample), tiny network."""


def plausible_inputs(
    schema: FeatureSchema, n: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Random raw (state, setpoint) features `(n, n_state)`, `(n, n_setpoints)` in range."""
    cols = []
    for name in schema.state_names:
        if name.startswith("buffer."):
            cols.append(rng.random(n))
        elif name.startswith(("down.", "blocked.", "starved.")):
            cols.append((rng.random(n) < 0.3).astype(float))
        elif name.startswith("temperature."):
            cols.append(rng.uniform(50.0, 230.0, n))
        elif name.startswith("wear."):
            cols.append(rng.uniform(0.0, 2.0, n))
        else:  # recent throughput
            cols.append(rng.uniform(100.0, 400.0, n))
    lo, hi = schema.lower, schema.upper
    return np.stack(cols, axis=1), lo + rng.random((n, schema.n_setpoints)) * (hi - lo)


def small_surrogate(
    spec: LineSpec,
    hidden: tuple[int, ...] = (8, 8),
    members: int = 2,
    seed: int = 0,
    threshold: float = math.inf,
) -> Surrogate:
    """A surrogate of `spec` with random weights: outputs of plausible size (good ~ 300/h,
    scrap ~ 5/h, energy ~ 20 kWh/h, utilisation 0-1), reference inputs the random inputs."""
    schema = FeatureSchema.from_spec(spec)
    rng = np.random.default_rng(seed)
    state, sp = plausible_inputs(schema, 400, rng)
    x = np.concatenate([state, sp], axis=1)
    y = np.concatenate(
        [
            rng.uniform(200.0, 400.0, (400, 1)),
            rng.uniform(0.0, 10.0, (400, 1)),
            rng.uniform(10.0, 30.0, (400, 1)),
            rng.random((400, schema.n_outputs - 3)),
        ],
        axis=1,
    )
    net = EnsembleMLP(
        schema.n_inputs, schema.n_outputs, hidden, members, torch.Generator().manual_seed(seed)
    )
    # random biases too, so that the ReLU kinks fall inside the box
    with torch.no_grad():
        for b in net.bias:
            b.copy_(torch.randn(b.shape, generator=torch.Generator().manual_seed(seed + 1)) * 0.5)
    net.set_normalisation(x, y)
    return Surrogate(schema, net, np.ones(schema.n_outputs), x, threshold)


class LineRun:
    """A one-scenario twin of a line with the recent good throughput the controller needs."""

    def __init__(
        self,
        spec: LineSpec,
        seed: int,
        faults: tuple[SensorFault, ...] = (),
        warmup_s: float = 3600.0,
        recent_s: float = 600.0,
    ) -> None:
        self.twin = Twin(spec, 1, seed=seed, faults=faults)
        self.recent_s = recent_s
        self.twin.advance(warmup_s - recent_s)
        self.history: collections.deque[Snapshot] = collections.deque([self.twin.snapshot()])

    def step(self, dt_s: float) -> tuple[Snapshot, float]:
        """Advance by `dt_s`; return the snapshot and the good throughput over `recent_s`."""
        snap = self.twin.step(dt_s)
        self.history.append(snap)
        while len(self.history) > 1 and snap.time_s - self.history[1].time_s >= self.recent_s:
            self.history.popleft()
        return snap, float(recent_throughput(self.history[0], snap)[0])


class Brute:
    """The surrogate's objective on a fine grid over a problem's box (two setpoints)."""

    def __init__(self, model: Surrogate, problem: Problem, n: int = 201) -> None:
        lo, hi = problem.box
        axes = [np.linspace(a, b, n) for a, b in zip(lo, hi, strict=True)]
        self.h = max((b - a) / (n - 1) for a, b in zip(lo, hi, strict=True))
        self.x = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, len(lo))
        pred = model.predict_batched(problem.state[None], self.x)
        self.energy = pred.mean[:, OUT_ENERGY]
        self.obj = pred.mean @ problem.objective.weights(model.schema.n_outputs)
        viol = np.zeros(len(self.x))
        for a, b in problem.objective.constraint_rows(model.schema.n_outputs):
            viol = np.maximum(viol, pred.mean @ a - b)
        self.feasible = viol <= 0
        grid = self.obj.reshape(n, n)
        # the largest change between neighbouring grid points: how far off a grid search is
        self.cell = float(
            max(np.abs(np.diff(grid, axis=0)).max(), np.abs(np.diff(grid, axis=1)).max())
        )

    def best(self) -> tuple[np.ndarray, float]:
        """The best feasible grid point and its objective."""
        obj = np.where(self.feasible, self.obj, -np.inf)
        i = int(np.argmax(obj))
        return self.x[i], float(obj[i])


def objective_of(model: Surrogate, problem: Problem, x: np.ndarray) -> tuple[float, float]:
    """(objective, predicted energy kWh/h) of setpoint features `x` (ensemble mean)."""
    pred = model.predict(problem.state[None], np.asarray(x, dtype=float)[None])
    w = problem.objective.weights(model.schema.n_outputs)
    return float(pred.mean[0] @ w), float(pred.mean[0, OUT_ENERGY])


def state_of(model: Surrogate, seed: int) -> np.ndarray:
    """A plausible state feature vector `(n_state,)` for `model`'s line."""
    return plausible_inputs(model.schema, 1, np.random.default_rng(seed))[0][0]


@functools.cache
def two_station_case(seed: int) -> tuple[Surrogate, Problem, Brute]:
    """A small surrogate of the two-station line (2x8 units, 2 members), its problem from
    setpoints (1, 1) and the brute force over its box; cached, so treat as read-only."""
    two = bundled_spec("two-station")
    model = small_surrogate(two, (8, 8), 2, seed=seed)
    problem = make_problem(two, model.schema, state_of(model, 100 + seed), np.array([1.0, 1.0]))
    return model, problem, Brute(model, problem)


class FakeClock:
    """A wall clock the test moves by hand."""

    def __init__(self, t: float = 1_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


class Recorder:
    """An `apply` callback that records what it was given (copies) and forwards it."""

    def __init__(self, forward: Callable[[np.ndarray], None] | None = None) -> None:
        self.calls: list[np.ndarray] = []
        self.forward = forward

    def __call__(self, setpoints: np.ndarray) -> None:
        self.calls.append(np.array(setpoints, copy=True))
        if self.forward is not None:
            self.forward(setpoints)


def assert_versions_increase(store: MemoryStore) -> None:
    """Every published decision has the next version and a fresh id."""
    versions = [d.version for d in store.decisions]
    assert versions == list(range(1, len(versions) + 1))
    assert len({d.id for d in store.decisions}) == len(versions)
