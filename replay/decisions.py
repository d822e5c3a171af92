"""Decision replay: what each policy would have chosen at each recorded decision point.

For every point and policy: the setpoints chosen (optimizer policies run a real `Controller`
in closed mode on the rebuilt snapshot, so the guard ramps from the recorded setpoints and
its reasons are kept), the recorded setpoints, and the predicted KPI difference of the choice
against the recorded setpoints, with its uncertainty (the ensemble members' paired
differences, calibrated like the controller's predictions: `models.estimate`). Policies
without a model of their own (recorded, nominal) are predicted with the reference model: the
first optimizer policy's.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from linetwin.models.estimate import kpi_samples
from linetwin.models.surrogate import Surrogate
from linetwin.optimizer.controller import Controller
from linetwin.optimizer.decision import Decision, Mode
from linetwin.optimizer.store import MemoryStore
from linetwin.replay.errors import ReplayError
from linetwin.replay.policies import Policy
from linetwin.replay.scan import KPI_NAMES, Point
from linetwin.twin.params import LineParams, compile_params, nominal_setpoints
from linetwin.twin.spec import LineSpec

REPLAY_STARTS = 32
REPLAY_STEPS = 20
"""The fast method's multistart work per replayed decision (the live controller stops at a
wall-clock deadline instead; replay needs the same answer on any machine, so it fixes the
work). See docs/replay.md for how this compares with the live controller's decisions."""


def replay_controller(
    spec: LineSpec,
    policy: Policy,
    running: np.ndarray,
    starts: int = REPLAY_STARTS,
    steps: int = REPLAY_STEPS,
) -> Controller[Decision]:
    """A controller of an optimizer `policy` for replay: closed mode, fixed solver work (no
    wall-clock deadline, so deterministic), no staleness check (snapshots are replayed, not
    live), the setpoints the plant ran (`running`) as its last-known-good."""
    if policy.model is None:
        raise ReplayError(f"policy {policy.name!r} has no model to decide with")
    return Controller(
        spec,
        policy.model,
        MemoryStore(),
        mode=Mode.CLOSED,
        budget_s=math.inf,
        stale_after_s=math.inf,
        exact=policy.kind == "exact",
        starts=starts,
        steps=steps,
        last_good=running,
    )


def setpoint_spans(lp: LineParams) -> np.ndarray:
    """Each setpoint's range `(n_stations, 2)` (1 where absent): moves are shares of it."""
    return np.where(lp.present, np.maximum(lp.upper - lp.lower, 1e-12), 1.0)


@dataclass
class DecisionRows:
    """Columns of the decision table, one entry per (point, policy), in that order."""

    time_s: list[float] = field(default_factory=list)
    tick: list[int] = field(default_factory=list)
    policy: list[str] = field(default_factory=list)
    setpoints: list[np.ndarray] = field(default_factory=list)  # (n_stations, 2) each
    recorded: list[np.ndarray] = field(default_factory=list)
    fallback: list[bool] = field(default_factory=list)
    status: list[str] = field(default_factory=list)
    reasons: list[list[str]] = field(default_factory=list)
    predicted: dict[str, list[float]] = field(default_factory=dict)  # KPI -> chosen mean
    diff: dict[str, list[float]] = field(default_factory=dict)  # KPI -> mean(chosen - recorded)
    diff_std: dict[str, list[float]] = field(default_factory=dict)
    change: list[float] = field(default_factory=list)  # max |chosen - recorded| / range

    def __len__(self) -> int:
        return len(self.policy)


class DecisionReplayer:
    """Replay `policies` point by point (`add(point)`); rows accumulate in `rows`."""

    def __init__(
        self,
        spec: LineSpec,
        policies: Sequence[Policy],
        starts: int = REPLAY_STARTS,
        steps: int = REPLAY_STEPS,
    ) -> None:
        self.spec = spec
        self.policies = list(policies)
        self.reference: Surrogate | None = next(
            (p.model for p in self.policies if p.model is not None), None
        )
        lp = compile_params(spec)
        self.nominal = nominal_setpoints(lp, 1)[0]
        self.present = lp.present
        self.span = setpoint_spans(lp)
        self.starts, self.steps = starts, steps
        self.controllers: dict[str, Controller[Decision]] = {}  # made at the first point (see add)
        self.rows = DecisionRows(
            predicted={k: [] for k in KPI_NAMES},
            diff={k: [] for k in KPI_NAMES},
            diff_std={k: [] for k in KPI_NAMES},
        )

    def add(self, point: Point) -> dict[str, np.ndarray]:
        """Decide every policy at `point`; return where each policy heads, by name: the
        recorded or nominal setpoints, an optimizer's target (its proposal before the guard's
        ramp from the recorded setpoints; what it held on fallback). Counterfactual runs ramp
        toward these along each fork."""
        chosen: dict[str, np.ndarray] = {}
        for p in self.policies:
            reasons: tuple[str, ...]
            fallback, status, reasons = False, "", ()
            if p.kind == "recorded":
                setpoints = point.recorded
            elif p.kind == "nominal":
                setpoints = self.nominal
            else:
                if p.name not in self.controllers:
                    self.controllers[p.name] = replay_controller(
                        self.spec, p, point.recorded, self.starts, self.steps
                    )
                decision = self.controllers[p.name].cycle(point.snapshot, point.recent)
                setpoints = decision.setpoints
                fallback, status = decision.fallback, decision.status
                reasons = decision.reasons
            heads = setpoints
            if p.decides and decision.target is not None:
                heads = decision.target
            chosen[p.name] = heads
            model = p.model or self.reference
            pred = self._predict(model, point, setpoints)
            r = self.rows
            r.time_s.append(point.time_s)
            r.tick.append(point.tick)
            r.policy.append(p.name)
            r.setpoints.append(np.where(self.present, setpoints, np.nan))
            r.recorded.append(np.where(self.present, point.recorded, np.nan))
            r.fallback.append(bool(fallback))
            r.status.append(status)
            r.reasons.append(list(reasons))
            for k in KPI_NAMES:
                mean, diff, std = pred.get(k, (math.nan, math.nan, math.nan))
                r.predicted[k].append(mean)
                r.diff[k].append(diff)
                r.diff_std[k].append(std)
            delta = np.abs(np.nan_to_num(setpoints - point.recorded)) / self.span
            r.change.append(float(np.max(np.where(self.present, delta, 0.0))))
        return chosen

    def _predict(
        self, model: Surrogate | None, point: Point, setpoints: np.ndarray
    ) -> dict[str, tuple[float, float, float]]:
        """KPI -> (mean at `setpoints`, mean and std of the difference to the recorded)."""
        if model is None:
            return {}
        schema = model.schema
        state = schema.state_features(point.snapshot, np.array([point.recent]))
        x = schema.setpoint_features(np.stack([setpoints, point.recorded]))
        samples = kpi_samples(model, self.spec, state, x)
        chosen, diff = samples.estimate(0), samples.difference(0, 1)
        return {k: (chosen[k][0], *diff[k]) for k in chosen}
