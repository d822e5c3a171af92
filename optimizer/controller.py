"""The controller: each cycle, snapshot -> checks -> solve -> guard -> one published decision.

Modes: `closed` applies every decision to the line, `advisory` publishes decisions that wait
for an engineer's approval, `manual` only advises. Whatever goes wrong upstream (stale or bad
data, a failing or untrustworthy model, a failing or late solver), the guard holds the
last-known-good setpoints, the decision says why, and the loop keeps running.

Everything that changes what the plant runs is a method here, so the guard stays the only door:
`cycle`, `approve`, `reject`, `override`, `release`, `rollback`, `set_mode`, `set_objective`.
Each runs under the controller's lock. A caller that keeps records of the changes (the API's
audit log) passes `record`, called under the lock before the change takes effect (if it raises,
nothing changes), and for the changes that publish, `within`: a context manager (the store's
write transaction) entered around the publish and `record`, so the decision and the caller's
record commit together. The store assigns the version (`DecisionStore.publish` returns the
stored record); applied decisions go to `apply` and every publish to `on_publish(decision,
stored)` after it commits, still under the lock: in version order.

Held overrides (`override`) lock their stations for the optimizer and ramp toward their values
one guarded step per publish, inside the cycle: in closed mode the step rides in the cycle's
decision; in the other modes, while it ramps, the cycle's decision is the override's next step
(applied: an engineer asked for it) instead of advice. One publish per cycle either way. In
closed mode a fallback cycle pauses the ramp (the steps so far are in the last-known-good).
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import replace
from typing import Any, Generic, TypeVar

import numpy as np

from linetwin.models.device import torch_threads
from linetwin.models.estimate import kpi_estimate
from linetwin.models.surrogate import Surrogate
from linetwin.optimizer import held as held_overrides
from linetwin.optimizer.decision import Decision, Mode
from linetwin.optimizer.errors import NotHeldError, OptimizerError, StateError
from linetwin.optimizer.exact import solve_exact
from linetwin.optimizer.fast import Solution, solve_fast
from linetwin.optimizer.guard import Reason, SetpointGuard
from linetwin.optimizer.held import Held
from linetwin.optimizer.monitor import InputMonitor
from linetwin.optimizer.problem import RISK_AVERSION, Objective, make_problem
from linetwin.optimizer.steady import HoldSummary, SteadyHold, unchanged
from linetwin.optimizer.store import DecisionStore, MemoryStore, Versioned
from linetwin.twin.snapshot import Snapshot
from linetwin.twin.spec import LineSpec

__all__ = [
    "LATE_FACTOR",
    "STATE_OOD_FACTOR",
    "Controller",
    "Decision",
    "DecisionStore",
    "Held",
    "InputMonitor",
    "MemoryStore",
    "Mode",
]

STATE_OOD_FACTOR = 1.5
"""The current (state, setpoints) may score up to this times the OOD threshold before the
controller stops trusting the model: the threshold is the 99th percentile of in-distribution
scores, so 1% of ordinary states lie above it, and candidates are already held below it."""

LATE_FACTOR = 1.25
"""A solve that ends later than this times the cycle budget is a timeout: the solver is
anytime and stops at 85% of what is left, so only a solve that could not even finish its
first pass arrives this late."""

StoredT = TypeVar("StoredT", bound=Versioned)
Within = AbstractContextManager[Any] | None


class Controller(Generic[StoredT]):
    """Run optimisation cycles for one line and publish decisions to a store; see the module
    docstring. `held` restores held overrides; `on_publish(decision, stored)` is called after
    every publish (the service caches the stored record's bytes); `plant_setpoints()` reads
    what the plant runs `(n_stations, 2)`, under the lock, for the methods not given `running`
    (without it they ramp from the guard's last-known-good)."""

    def __init__(
        self,
        spec: LineSpec,
        model: Surrogate,
        store: DecisionStore[StoredT],
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
        held: Mapping[str, Mapping[str, float]] | None = None,
        on_publish: Callable[[Decision, StoredT], None] | None = None,
        plant_setpoints: Callable[[], np.ndarray] | None = None,
    ) -> None:
        if model.schema.spec_hash != spec.spec_hash():
            raise OptimizerError(
                "the surrogate was trained for another line "
                f"({model.schema.spec_hash[:12]} vs {spec.spec_hash()[:12]})"
            )
        self.spec, self.model, self.store = spec, model, store
        self._mode = Mode(mode)
        self._objective = objective or Objective.from_economics(spec.economics)
        self.budget_s = budget_s
        self.starts, self.steps = starts, steps  # the fast method's multistart work at most
        self._fixed = tuple(locked)
        self.exact = exact
        self.apply = apply
        self.clock = clock
        self.on_publish = on_publish
        self.plant_setpoints = plant_setpoints
        self.guard = SetpointGuard(spec, last_good)  # default: nominal
        self.monitor = InputMonitor(spec, stale_after_s)
        self.steady = SteadyHold()  # the steady target, moved only for significant gains
        self._last_published: Decision | None = store.latest()
        """The newest published decision: a cycle that would publish the same again does not."""
        self._warm: np.ndarray | None = None
        self._lock = threading.RLock()
        self._pending: Decision | None = None
        self._held: Held = {}
        if held:
            self._held = held_overrides.merge(spec, {}, held)
        self._ramping = bool(self._held)

    # -- state (read it; change it through the methods) ------------------------------------
    @property
    def mode(self) -> Mode:
        return self._mode

    @property
    def objective(self) -> Objective:
        return self._objective

    @property
    def pending(self) -> Decision | None:
        """The advisory recommendation awaiting approval, or None."""
        return self._pending

    @property
    def held(self) -> Held:
        """The held overrides (a copy)."""
        return {k: dict(v) for k, v in self._held.items()}

    @property
    def locked(self) -> tuple[str, ...]:
        """Stations the optimizer keeps where they run: the fixed ones, then the held ones."""
        return tuple(dict.fromkeys((*self._fixed, *self._held)))

    @property
    def ramping(self) -> bool:
        """Whether held overrides are still ramping toward their values."""
        return self._ramping

    # -- modes, objective, approvals ---------------------------------------------------------
    def set_mode(
        self,
        mode: Mode | str,
        running: np.ndarray | None = None,
        *,
        record: Callable[[Mode, Mode], None] | None = None,
    ) -> Mode:
        """Switch mode (`record(old, new)` first); into `closed` the guard starts from what
        the plant runs (bumpless). The pending recommendation is dropped. Returns the old."""
        new = Mode(mode)
        with self._lock:
            old = self._mode
            if record is not None:
                record(old, new)
            running = self._plant(running)
            if new is Mode.CLOSED and running is not None:
                self.guard.last_good = self.guard.sanitise(running, self.guard.last_good)
            self._mode = new
            self._pending = None
            return old

    def set_objective(
        self, objective: Objective, *, record: Callable[[Objective, Objective], None] | None = None
    ) -> Objective:
        """Use `objective` from the next cycle on (`record(old, new)` first); return the old."""
        with self._lock:
            old = self._objective
            if record is not None:
                record(old, objective)
            self._objective = objective
            return old

    def _pending_one(self, decision_id: str, what: str) -> Decision:
        if self._mode is not Mode.ADVISORY:
            raise StateError(f"{what} need advisory mode (mode is {self._mode})")
        pending = self._pending
        if pending is None:
            raise StateError(f"no decision is pending (asked for {decision_id!r})")
        if pending.id != decision_id:
            raise StateError(f"decision {decision_id!r} is not the pending one ({pending.id!r})")
        return pending

    def approve(
        self,
        decision_id: str,
        running: np.ndarray | None = None,
        *,
        within: Within = None,
        record: Callable[[Decision, Decision], None] | None = None,
    ) -> Decision:
        """Publish and apply the pending advisory decision `decision_id`, re-checked by the
        guard from `running`; `record(approved, pending)` inside `within`. `StateError` when
        it is not the pending one, or the mode is not advisory."""
        with self._lock:
            pending = self._pending_one(decision_id, "approvals")
            running = self._plant(running)
            with self._guard_undone_on_error():
                result = self.guard.check(pending.setpoints, running)
                approved = replace(
                    pending,
                    id=uuid.uuid4().hex,
                    version=0,
                    created_at=self.clock(),
                    setpoints=result.setpoints,
                    reasons=(*(str(r) for r in result.reasons), "approved"),
                    fallback=result.fallback,
                    applied=True,
                )

                def note(decision: Decision) -> None:
                    if record is not None:
                        record(decision, pending)

                done = self._publish(approved, within, note)
            self._pending = None
            return done

    def reject(
        self, decision_id: str, *, record: Callable[[Decision], None] | None = None
    ) -> Decision:
        """Drop the pending advisory decision `decision_id` (`record(pending)` first); the
        plant keeps what it runs. Returns the dropped decision."""
        with self._lock:
            pending = self._pending_one(decision_id, "rejections")
            if record is not None:
                record(pending)
            self._pending = None
            return pending

    # -- engineers' setpoints: overrides and rollback ----------------------------------------
    def override(
        self,
        values: Mapping[str, Mapping[str, float]],
        running: np.ndarray | None = None,
        *,
        line_time_s: float,
        within: Within = None,
        record: Callable[[Decision, Held, Held], None] | None = None,
    ) -> Decision:
        """Hold `values` on their stations: one guarded step toward them from `running` is
        published and applied now, the optimizer leaves those stations alone, and each cycle
        steps on until they are reached. `record(decision, old_held, new_held)` inside
        `within`. `ProblemError` names an unknown station or setpoint."""
        with self._lock:
            running = self._plant(running)
            old = self.held
            new = held_overrides.merge(self.spec, old, values)

            def note(decision: Decision) -> None:
                if record is not None:
                    record(decision, old, new)

            proposal = held_overrides.write(self.spec, self._running_now(running), new)
            return self._engineer_publish(
                new, proposal, running, "override", line_time_s, within, note
            )

    def release(self, station: str, *, record: Callable[[Held, Held], None] | None = None) -> Held:
        """Stop holding the override of `station` (`record(old, new)` first): the optimizer
        decides it again from the next cycle. `NotHeldError` when none holds it."""
        with self._lock:
            if station not in self._held:
                raise NotHeldError(f"no override holds station {station!r}")
            old = self.held
            new = {k: v for k, v in old.items() if k != station}
            if record is not None:
                record(old, new)
            self._held = new
            self._ramping = self._ramping and bool(new)
            return self.held

    def rollback(
        self,
        setpoints: np.ndarray,
        running: np.ndarray | None = None,
        *,
        line_time_s: float,
        within: Within = None,
        record: Callable[[Decision], None] | None = None,
    ) -> Decision:
        """Head for `setpoints` `(n_stations, 2)` again (an earlier decision's), held
        overrides kept: one guarded step from `running`, published and applied now."""
        with self._lock:
            running = self._plant(running)
            held = self._held
            proposal = held_overrides.write(self.spec, setpoints, held)
            return self._engineer_publish(
                held, proposal, running, "rollback", line_time_s, within, record
            )

    def _engineer_publish(
        self,
        held: Held,
        proposal: np.ndarray,
        running: np.ndarray | None,
        why: str,
        line_time_s: float,
        within: Within,
        record: Callable[[Decision], None] | None,
    ) -> Decision:
        with self._guard_undone_on_error():
            decision, ramping = self._guarded(proposal, running, why, line_time_s, held)
            done = self._publish(decision, within, record)
        self._held, self._ramping = held, ramping
        self._pending = None  # a recommendation made before this is stale now
        return done

    def _guarded(
        self,
        proposal: np.ndarray,
        running: np.ndarray | None,
        why: str,
        line_time_s: float,
        held: Held,
    ) -> tuple[Decision, bool]:
        """An engineer's proposal through the guard, as an applied decision (unless the guard
        refused it), and whether held overrides still ramp after it."""
        now = self._running_now(running)
        result = self.guard.check(proposal, running)
        decision = Decision(
            id=uuid.uuid4().hex,
            version=0,
            line_time_s=float(line_time_s),
            created_at=self.clock(),
            mode=self._mode,
            setpoints=result.setpoints,
            target=result.target,
            predicted={},
            status=why,
            gap=None,
            solve_seconds=0.0,
            reasons=(why, *(str(r) for r in result.reasons)),
            fallback=result.fallback,
            applied=not result.fallback,
        )
        return decision, held_overrides.still_ramping(self.spec, self.guard, held, now, result)

    # -- the cycle --------------------------------------------------------------------------
    def cycle(
        self,
        snap: Snapshot,
        recent_throughput_per_hour: float,
        snapshot_wall_time: float | None = None,
    ) -> Decision:
        """Run one cycle on scenario 0 of `snap` and publish its decision."""
        with self._lock, torch_threads(1), self._guard_undone_on_error():
            t0 = time.perf_counter()
            now = self.clock()
            age = 0.0 if snapshot_wall_time is None else now - snapshot_wall_time
            running = snap.setpoints[0]
            failure = self.monitor.check(snap, age)
            solution: Solution | None = None
            if failure is None:
                solution, failure = self._solve(snap, recent_throughput_per_hour, running, t0)
            held = self._held
            proposal = None
            predicted: dict[str, tuple[float, float]] = {}
            # Steady targets: head for the held target unless the new optimum is a significant
            # gain over it and over what the plant runs (optimizer/steady.py).
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
            if solution is not None:
                schema = self.model.schema
                proposal = schema.setpoint_array(solution.setpoints[None], running[None])[0]
                proposal = held_overrides.write(
                    self.spec, proposal, held
                )  # held stations head for their values
                try:
                    predicted = self._predicted(snap, recent_throughput_per_hour, proposal)
                except Exception:  # the model failed after the solve: do not publish its answer
                    solution, proposal, failure = None, None, Reason.MODEL_FAILED
            if self._ramping and self._mode is not Mode.CLOSED:
                # an engineer's override ramps in every mode: its step, not advice, this cycle
                decision, ramping = self._guarded(
                    held_overrides.write(self.spec, running, held),
                    running,
                    "override",
                    snap.time_s,
                    held,
                )
            else:
                before = self._running_now(running)
                result = self.guard.check(proposal, running, failure)
                ramping = (
                    self._ramping
                    if result.fallback
                    else held_overrides.still_ramping(self.spec, self.guard, held, before, result)
                )
                reasons = tuple(str(r) for r in result.reasons)
                if held and not result.fallback:
                    reasons += ("override",)
                decision = Decision(
                    id=uuid.uuid4().hex,
                    version=0,
                    line_time_s=snap.time_s,
                    created_at=now,
                    mode=self._mode,
                    setpoints=result.setpoints,
                    target=result.target,
                    predicted=predicted,
                    status="fallback" if result.fallback else (solution.status if solution else ""),
                    gap=None if solution is None else solution.gap,
                    solve_seconds=time.perf_counter() - t0,
                    reasons=reasons,
                    fallback=result.fallback,
                    applied=self._mode is Mode.CLOSED,
                    timings={} if solution is None else solution.timings.as_dict(),
                    hold=hold,
                )
            self._ramping = ramping
            if unchanged(self._last_published, decision):
                return decision  # nothing new: not published (version 0), nothing applied
            done = self._publish(decision, None, None)
            advice = self._mode is Mode.ADVISORY and not done.applied
            self._pending = done if advice else None
            return done

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
                self._objective,
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
        self, snap: Snapshot, recent: float, proposal: np.ndarray
    ) -> dict[str, tuple[float, float]]:
        """KPI estimates at `proposal` `(n_stations, 2)` (`models.estimate`)."""
        schema = self.model.schema
        state = schema.state_features(snap, np.array([recent]))[0]
        return kpi_estimate(self.model, self.spec, state, schema.setpoint_features(proposal[None]))

    # -- publishing ------------------------------------------------------------------------
    def _publish(
        self, decision: Decision, within: Within, record: Callable[[Decision], None] | None
    ) -> Decision:
        """Store `decision` (and the caller's record) inside `within`; then apply it if it is
        applied, and tell `on_publish`. The caller holds the lock."""
        with within if within is not None else contextlib.nullcontext():
            stored = self.store.publish(decision)
            # a store that keeps `Decision`s (MemoryStore) returns the very one it keeps
            done = (
                stored
                if isinstance(stored, Decision)
                else replace(decision, version=stored.version)
            )
            if record is not None:
                record(done)
        self._last_published = done
        if done.applied and self.apply is not None:
            self.apply(done.setpoints)
        if self.on_publish is not None:
            self.on_publish(done, stored)
        return done

    @contextlib.contextmanager
    def _guard_undone_on_error(self) -> Iterator[None]:
        """Restore the guard's last-known-good if what was checked is not published."""
        saved = self.guard.last_good.copy()
        try:
            yield
        except BaseException:
            self.guard.last_good = saved
            raise

    # -- what the plant runs --------------------------------------------------------------
    def _plant(self, running: np.ndarray | None) -> np.ndarray | None:
        """`running`, or what `plant_setpoints` reads now, or None."""
        if running is None and self.plant_setpoints is not None:
            return self.plant_setpoints()
        return running

    def _running_now(self, running: np.ndarray | None) -> np.ndarray:
        """What the guard ramps from: `running` sanitised, or the last-known-good."""
        if running is None:
            return self.guard.last_good
        try:
            return self.guard.sanitise(running, self.guard.last_good)
        except (TypeError, ValueError):
            return self.guard.last_good
