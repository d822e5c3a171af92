"""Counterfactual runs: fork the twin from recorded states and run each policy's setpoints.

From every start point (a decision point with a `fork`), `seeds` continuations run for
`steps` decision periods under each policy, all starts and seeds of one policy in one batched
twin. Every policy starts from the same forked states, random streams included, so the
policies meet the same failures and processing times as far as their setpoints allow (common
random numbers): differences between policies are paired per (start, seed).

What each policy runs during period k after a start at point s (periods of `cadence_s`):
`recorded`: the recorded setpoints at point s + k (what the plant ran, at the cadence's
resolution); `nominal`: nominal; optimizer policies: the target they chose at point s + k in
the decision replay (decided on the recorded line; the target, not the setpoints it published
there, which were one ramp step from the recorded ones). Except for `recorded`, targets go
through a `SetpointGuard` from the setpoints in force, so limits and ramps hold along the run.
With `closed_loop`, optimizer policies decide on each fork's own line every period instead.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from linetwin.optimizer.guard import SetpointGuard
from linetwin.replay.decisions import replay_controller
from linetwin.replay.policies import Policy
from linetwin.replay.scan import KPI_NAMES, Point
from linetwin.twin.kpi import window_kpis
from linetwin.twin.sim import Twin
from linetwin.twin.snapshot import Snapshot
from linetwin.twin.spec import LineSpec
from linetwin.twin.state import concat_states
from linetwin.twin.stats import Interval, mean_interval


@dataclass(frozen=True)
class StartPoint:
    """What counterfactuals keep of a decision point: its recorded time, the recorded
    setpoints `(n_stations, 2)` and, on start points, the forked line (else None)."""

    time_s: float
    recorded: np.ndarray
    fork: Snapshot | None
    recent: float  # recorded good parts/h over the window before the point

    @classmethod
    def of(cls, point: Point) -> StartPoint:
        return cls(point.time_s, point.recorded, point.fork, point.recent)


@dataclass(frozen=True)
class Counterfactual:
    """KPIs `(n_starts, seeds)` per policy and KPI; `start_time_s (n_starts,)` recorded times."""

    policies: list[str]
    start_time_s: np.ndarray
    horizon_s: float
    kpis: dict[str, dict[str, np.ndarray]]  # policy -> KPI -> (n_starts, seeds)

    @property
    def reference(self) -> str:
        """The policy the others are compared against (the first)."""
        return self.policies[0]

    def means(self) -> dict[str, dict[str, Interval]]:
        """Per policy and KPI: the mean over starts and seeds with its 95% interval."""
        return {p: {k: mean_interval(v) for k, v in by.items()} for p, by in self.kpis.items()}

    def differences(self) -> dict[str, dict[str, Interval]]:
        """Per other policy and KPI: paired differences to the reference, with 95% intervals."""
        ref = self.kpis[self.reference]
        return {
            p: {k: mean_interval(v - ref[k]) for k, v in by.items()}
            for p, by in self.kpis.items()
            if p != self.reference
        }


def run_counterfactuals(
    spec: LineSpec,
    points: Sequence[StartPoint],
    chosen: Sequence[dict[str, np.ndarray]],
    policies: Sequence[Policy],
    steps: int,
    cadence_s: float,
    *,
    seed: int = 0,
    closed_loop: bool = False,
    on_progress: Callable[[int, int], None] | None = None,
) -> Counterfactual | None:
    """Run every policy from every start point that has `steps` points after it.

    `chosen[i]` maps policy names to the setpoints chosen at `points[i]`. With `closed_loop`,
    optimizer policies instead decide every period on each fork's own line: a controller per
    (start, seed), as the policy would run on that line (a cycle per fork and period: costly).
    Returns None when no start point has a full horizon left.
    """
    starts = [i for i, p in enumerate(points) if p.fork is not None and i + steps <= len(points)]
    if not starts:
        return None
    forks = [points[i].fork for i in starts]
    seeds = forks[0].n_scenarios if forks[0] is not None else 0
    state = concat_states([f.state for f in forks if f is not None])
    n = state.n_scenarios
    kpis: dict[str, dict[str, np.ndarray]] = {}
    for done, policy in enumerate(policies):
        guard = SetpointGuard(spec)  # limits; each start's last-known-good is below
        last_good = np.stack([SetpointGuard(spec, points[i].recorded).last_good for i in starts])
        running = np.stack([points[i].recorded for i in starts])
        twin = Twin(
            spec,
            n,
            rng=np.random.default_rng(seed),
            state=state.copy(),
            time_s=0.0,
            setpoints=_per_scenario(running, seeds),
        )
        first = twin.snapshot()
        if closed_loop and policy.decides:
            _closed_loop(twin, first, policy, [points[i] for i in starts], seeds, steps, cadence_s)
        for k in range(0 if closed_loop and policy.decides else steps):
            targets = np.stack([chosen[i + k][policy.name] for i in starts])
            if policy.kind != "recorded":
                targets = guard.check_many(targets, running, last_good).setpoints
            running = targets
            twin.set_setpoints(_per_scenario(running, seeds), f"policy {policy.name}")
            twin.advance(cadence_s)
        last: Snapshot = twin.snapshot()
        window = window_kpis(first, last)
        kpis[policy.name] = {
            k: np.asarray(getattr(window, k), dtype=float).reshape(len(starts), seeds)
            for k in KPI_NAMES
        }
        if on_progress is not None:
            on_progress(done + 1, len(policies))
    return Counterfactual(
        policies=[p.name for p in policies],
        start_time_s=np.array([points[i].time_s for i in starts]),
        horizon_s=steps * cadence_s,
        kpis=kpis,
    )


def _closed_loop(
    twin: Twin,
    first: Snapshot,
    policy: Policy,
    starts: Sequence[StartPoint],
    seeds: int,
    steps: int,
    cadence_s: float,
) -> None:
    """Run `policy` closed loop: each fork's controller decides on that fork every period."""
    controllers = [
        replay_controller(first.spec, policy, start.recorded)
        for start in starts
        for _ in range(seeds)
    ]
    recent = np.repeat([start.recent for start in starts], seeds)
    snap = first
    for _ in range(steps):
        decided = [c.cycle(snap.scenario(s), float(recent[s])) for s, c in enumerate(controllers)]
        twin.set_setpoints(np.stack([d.setpoints for d in decided]), f"policy {policy.name}")
        twin.advance(cadence_s)
        after = twin.snapshot()
        recent = window_kpis(snap, after).throughput_per_hour
        snap = after


def _per_scenario(setpoints: np.ndarray, seeds: int) -> np.ndarray:
    """`(n_starts, n_stations, 2)` -> `(n_starts * seeds, n_stations, 2)`, start-major."""
    return np.repeat(setpoints, seeds, axis=0)
