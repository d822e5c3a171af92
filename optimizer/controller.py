"""The controller: each cycle, snapshot -> checks -> solve -> guard -> versioned decision.

Modes: `closed` applies every decision to the line, `advisory` publishes decisions that wait
for an engineer's approval, `manual` only advises. Whatever goes wrong upstream (stale or bad
data, a failing or untrustworthy model, a failing or late solver), the guard holds the
last-known-good setpoints, the decision says why, and the loop keeps running.
"""

from __future__ import annotations

import math
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, Protocol

import numpy as np

from linetwin.models.device import torch_threads
from linetwin.models.surrogate import Surrogate, derived_kpis
from linetwin.optimizer.errors import OptimizerError
from linetwin.optimizer.exact import solve_exact
from linetwin.optimizer.fast import Solution, solve_fast
from linetwin.optimizer.guard import Reason, SetpointGuard
from linetwin.optimizer.problem import RISK_AVERSION, Objective, make_problem
from linetwin.optimizer.steady import HoldSummary, SteadyHold, unchanged
from linetwin.twin.params import setpoints_to_mapping
from linetwin.twin.snapshot import Snapshot
from linetwin.twin.spec import LineSpec

STATE_OOD_FACTOR = 1.5
"""The current (state, setpoints) may score up to this times the OOD threshold before the
controller stops trusting the model: the threshold is the 99th percentile of in-distribution
scores, so 1% of ordinary states lie above it, and candidates are already held below it."""

LATE_FACTOR = 1.25
"""A solve that ends later than this times the cycle budget is a timeout: the solver is
anytime and stops at 85% of what is left, so only a solve that could not even finish its
first pass arrives this late."""


class Mode(StrEnum):
    """Who decides what the plant runs."""

    CLOSED = "closed"
    ADVISORY = "advisory"
    MANUAL = "manual"


@dataclass(frozen=True)
class Decision:
    """One published decision.

    `setpoints (n_stations, 2)` is what the guard lets through this cycle (speed, temperature
    °C; 0 where a station has no such setpoint), `target` the optimizer's steady-state target
    (None on fallback), `predicted` KPI name -> (mean, std) at the target, `applied` whether
    it went to the plant (closed mode, or approved in advisory mode). `hold` says why the
    target moved or held this cycle (`optimizer/steady.py`; None when nothing was solved).
    A cycle that changes nothing is not published: its decision has `version` 0.
    """

    id: str
    version: int
    line_time_s: float
    created_at: float
    mode: Mode
    setpoints: np.ndarray
    target: np.ndarray | None
    predicted: dict[str, tuple[float, float]]
    status: str
    gap: float | None
    solve_seconds: float
    reasons: tuple[str, ...]
    fallback: bool
    applied: bool
    timings: dict[str, float] = field(default_factory=dict)
    hold: HoldSummary | None = None

    def setpoint_mapping(self, spec: LineSpec, which: str = "setpoints") -> dict[str, Any]:
        """`{station: {setpoint: value}}` of `setpoints` or `target`."""
        arr = self.setpoints if which == "setpoints" else self.target
        return {} if arr is None else setpoints_to_mapping(spec, arr)

    def to_json(self, spec: LineSpec) -> dict[str, Any]:
        """The decision as JSON-ready data."""
        return {
            "id": self.id,
            "version": self.version,
            "line_time_s": self.line_time_s,
            "created_at": self.created_at,
            "mode": str(self.mode),
            "setpoints": self.setpoint_mapping(spec),
            "target": self.setpoint_mapping(spec, "target") or None,
            "predicted": {k: {"mean": m, "std": s} for k, (m, s) in self.predicted.items()},
            "status": self.status,
            "gap": self.gap,
            "solve_seconds": self.solve_seconds,
            "reasons": list(self.reasons),
            "fallback": self.fallback,
            "applied": self.applied,
            "timings": self.timings,
            "hold": None if self.hold is None else self.hold.to_json(),
        }


class DecisionStore(Protocol):
    """Where decisions are published (the API backs it with SQLite)."""

    def publish(self, decision: Decision) -> None: ...

    def latest(self) -> Decision | None: ...

    def next_version(self) -> int: ...


class MemoryStore:
    """A thread-safe in-process decision store (tests, `linetwin optimize`)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.decisions: list[Decision] = []

    def publish(self, decision: Decision) -> None:
        with self._lock:
            self.decisions.append(decision)

    def latest(self) -> Decision | None:
        with self._lock:
            return self.decisions[-1] if self.decisions else None

    def next_version(self) -> int:
        with self._lock:
            return len(self.decisions) + 1


class InputMonitor:
    """Judge whether a snapshot can be trusted: fresh, finite, in range, not frozen."""

    def __init__(self, spec: LineSpec, stale_after_s: float, frozen_after: int = 3) -> None:
        self.spec = spec
        self.stale_after_s = stale_after_s
        self.frozen_after = frozen_after
        self.thermal = [i for i, s in enumerate(spec.stations) if s.is_thermal]
        noisy = [spec.stations[i].sensors.temperature_noise_c > 0 for i in self.thermal]
        self.noisy = np.array(noisy, dtype=bool)
        self._last: np.ndarray | None = None
        self._same = np.zeros(len(self.thermal), dtype=np.int64)  # repeats per sensor
        self._last_time = -math.inf

    def check(self, snap: Snapshot, age_s: float) -> Reason | None:
        """Return a fallback reason, or None when the snapshot is usable."""
        if age_s > self.stale_after_s or snap.time_s < self._last_time:
            return Reason.STALE_DATA
        self._last_time = snap.time_s
        temp = snap.readings.temperature_c[0, self.thermal]
        valid = snap.readings.valid[0, self.thermal, 0]
        if not valid.all() or not np.isfinite(temp).all():
            return Reason.BAD_DATA
        if (temp < -50.0).any() or (temp > 1000.0).any():
            return Reason.BAD_DATA
        repeated = np.zeros(len(self.thermal), dtype=bool)
        if self._last is not None:
            repeated = (temp == self._last) & self.noisy  # a noisy sensor never repeats exactly
        self._same = np.where(repeated, self._same + 1, 0)
        self._last = temp.copy()
        if (self._same >= self.frozen_after - 1).any():
            return Reason.BAD_DATA
        return None


class Controller:
    """Run optimisation cycles for one line and publish decisions to a store."""

    def __init__(
        self,
        spec: LineSpec,
        model: Surrogate,
        store: DecisionStore,
        *,
        mode: Mode = Mode.ADVISORY,
        objective: Objective | None = None,
        budget_s: float = 0.08,
        stale_after_s: float = 30.0,
        locked: tuple[str, ...] = (),
        exact: bool = False,
        apply: Callable[[np.ndarray], None] | None = None,
        clock: Callable[[], float] = time.time,
        starts: int = 128,
        steps: int = 40,
        last_good: np.ndarray | None = None,
    ) -> None:
        if model.schema.spec_hash != spec.spec_hash():
            raise OptimizerError(
                "the surrogate was trained for another line "
                f"({model.schema.spec_hash[:12]} vs {spec.spec_hash()[:12]})"
            )
        self.spec, self.model, self.store = spec, model, store
        self.mode = Mode(mode)
        self.objective = objective or Objective.from_economics(spec.economics)
        self.budget_s = budget_s
        self.starts, self.steps = starts, steps  # the fast method's multistart work at most
        self.locked = tuple(locked)
        self.exact = exact
        self.apply = apply
        self.clock = clock
        self.guard = SetpointGuard(spec, last_good)  # default: nominal
        self.monitor = InputMonitor(spec, stale_after_s)
        self.steady = SteadyHold()  # issue 14: the steady target, moved for significant gains
        self._warm: np.ndarray | None = None
        # Re-entrant: a caller that must commit a decision together with its own records
        # holds it around the store's transaction (controller lock first, then the store's).
        self._lock = threading.RLock()
        self.pending: Decision | None = None

    # -- modes and approvals ----------------------------------------------------------------
    def set_mode(self, mode: Mode, running: np.ndarray | None = None) -> None:
        """Switch mode; into `closed` the guard starts from what the plant runs (bumpless)."""
        with self._lock:
            mode = Mode(mode)
            if mode is Mode.CLOSED and running is not None:
                self.guard.last_good = self.guard.sanitise(running, self.guard.last_good)
            self.mode = mode
            self.pending = None

    def approve(self, decision_id: str, running: np.ndarray | None = None) -> Decision:
        """Apply the pending advisory decision `decision_id` (re-checked by the guard)."""
        with self._lock:
            d = self.pending
            if self.mode is not Mode.ADVISORY or d is None or d.id != decision_id:
                raise OptimizerError(f"no pending decision {decision_id!r} to approve")
            result = self.guard.check(d.setpoints, running)
            approved = replace(
                d,
                id=uuid.uuid4().hex,
                version=self.store.next_version(),
                created_at=self.clock(),
                setpoints=result.setpoints,
                reasons=(*(str(r) for r in result.reasons), "approved"),
                fallback=result.fallback,
                applied=True,
            )
            self.store.publish(approved)
            self.pending = None
            if self.apply is not None:
                self.apply(approved.setpoints)
            return approved

    # -- the cycle --------------------------------------------------------------------------
    def cycle(
        self,
        snap: Snapshot,
        recent_throughput_per_hour: float,
        snapshot_wall_time: float | None = None,
    ) -> Decision:
        """Run one cycle on scenario 0 of `snap` and publish its decision."""
        with self._lock, torch_threads(1):
            t0 = time.perf_counter()
            now = self.clock()
            age = 0.0 if snapshot_wall_time is None else now - snapshot_wall_time
            running = snap.setpoints[0]
            failure = self.monitor.check(snap, age)
            solution: Solution | None = None
            if failure is None:
                solution, failure = self._solve(snap, recent_throughput_per_hour, running, t0)
            proposal = None
            predicted: dict[str, tuple[float, float]] = {}
            # -- steady targets (issue 14): head for the held target unless the new optimum is
            # a significant gain over it and over what the plant runs ---------------------
            hold: HoldSummary | None = None
            if solution is not None:
                try:
                    schema = self.model.schema
                    verdict = self.steady.decide(
                        self.model,
                        self.objective,
                        schema.state_features(snap, np.array([recent_throughput_per_hour]))[0],
                        schema.setpoint_features(running[None])[0],
                        solution.setpoints,
                        self.locked,
                        snap.time_s,
                    )
                    solution, hold = replace(solution, setpoints=verdict.target), verdict.summary
                except Exception:  # the model failed: do not publish the solver's answer
                    solution, failure = None, Reason.MODEL_FAILED
            # -- end steady targets ------------------------------------------------------------
            if solution is not None:
                proposal = self.model.schema.setpoint_array(
                    solution.setpoints[None], running[None]
                )[0]
                try:
                    predicted = self._predicted(snap, recent_throughput_per_hour, solution)
                except Exception:  # the model failed after the solve: do not publish its answer
                    solution, proposal, failure = None, None, Reason.MODEL_FAILED
            result = self.guard.check(proposal, running, failure)
            applied = self.mode is Mode.CLOSED
            decision = Decision(
                id=uuid.uuid4().hex,
                version=self.store.next_version(),
                line_time_s=snap.time_s,
                created_at=now,
                mode=self.mode,
                setpoints=result.setpoints,
                target=result.target,
                predicted=predicted,
                status="fallback" if result.fallback else (solution.status if solution else ""),
                gap=None if solution is None else solution.gap,
                solve_seconds=time.perf_counter() - t0,
                reasons=tuple(str(r) for r in result.reasons),
                fallback=result.fallback,
                applied=applied,
                timings={} if solution is None else solution.timings.as_dict(),
                hold=hold,
            )
            # -- steady targets (issue 14): publish only when something changes ----------------
            if unchanged(self.store.latest(), decision):
                return replace(decision, version=0)  # not published, not applied: nothing new
            # -- end steady targets ------------------------------------------------------------
            self.store.publish(decision)
            self.pending = decision if self.mode is Mode.ADVISORY else None
        if applied and self.apply is not None:
            self.apply(decision.setpoints)
        return decision

    def _solve(
        self, snap: Snapshot, recent: float, running: np.ndarray, t0: float
    ) -> tuple[Solution | None, Reason | None]:
        schema = self.model.schema
        try:
            state = schema.state_features(snap, np.array([recent]))[0]
            current = schema.setpoint_features(running[None])[0]
            here = self.model.ood_score(state[None], current[None])[0]
            probe = self.model.predict(state[None], current[None])
            if not (np.isfinite(here) and np.isfinite(probe.mean).all()):
                return None, Reason.MODEL_FAILED
            if here > STATE_OOD_FACTOR * self.model.ood_threshold:
                return None, Reason.OUT_OF_ENVELOPE
            problem = make_problem(
                self.spec,
                schema,
                state,
                current,
                self.objective,
                locked=self.locked,
                ood_limit=self.model.ood_threshold,
                risk_aversion=RISK_AVERSION,
            )
        except Exception:  # whatever the model raised: hold last-known-good, keep looping
            return None, Reason.MODEL_FAILED
        left = self.budget_s - (time.perf_counter() - t0)
        if left <= 0:
            return None, Reason.SOLVER_TIMEOUT
        try:
            if self.exact:
                solution = solve_exact(self.model, problem, time_limit_s=left)
            else:
                solution = solve_fast(
                    self.model,
                    problem,
                    deadline_s=0.85 * left,
                    warm=self._warm,
                    starts=self.starts,
                    steps=self.steps,
                )
        except OptimizerError:  # OR-Tools' failures are translated into these
            return None, Reason.SOLVER_FAILED
        except Exception:  # anything else came from evaluating the surrogate
            return None, Reason.MODEL_FAILED
        if time.perf_counter() - t0 > LATE_FACTOR * self.budget_s:
            return None, Reason.SOLVER_TIMEOUT
        if not np.isfinite(solution.setpoints).all() or not np.isfinite(solution.objective):
            return None, Reason.MODEL_FAILED
        if not solution.feasible:
            ood_ok = solution.ood_score <= self.model.ood_threshold
            return None, Reason.INFEASIBLE if ood_ok else Reason.OUT_OF_ENVELOPE
        self._warm = solution.setpoints
        return solution, None

    def _predicted(
        self, snap: Snapshot, recent: float, solution: Solution
    ) -> dict[str, tuple[float, float]]:
        schema = self.model.schema
        state = schema.state_features(snap, np.array([recent]))
        pred = self.model.predict(state, solution.setpoints[None])
        kpis = derived_kpis(self.spec.economics, pred.members)
        scale = float(np.mean(self.model.band_scale[:3]))  # member spread -> calibrated std
        out = {k: (float(v.mean()), float(v.std() * scale)) for k, v in kpis.items()}
        out["energy_kwh_per_hour"] = (float(pred.mean[0, 2]), float(pred.std[0, 2]))
        return out
