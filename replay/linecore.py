"""Drive N copies of one line by decisions: the machinery both Gymnasium environments share.

One `Twin` holds the N copies as its scenarios, so a decision step is one batched kernel call.
Every action becomes a setpoint proposal that passes through the real `SetpointGuard` (all
copies in one `check_many` pass, each with its own last-known-good: limits, grid, rate of change
per decision, deadband, fallback) before the twin sees it.
Observations are the surrogate's inputs (`models.features.FeatureSchema`), rewards the profit
rate of `twin.kpi.window_kpis`. This module does not need Gymnasium; `replay.env` does.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from linetwin.models.features import FeatureSchema
from linetwin.optimizer.guard import SetpointGuard
from linetwin.replay.errors import ReplayError
from linetwin.twin import layout as L
from linetwin.twin.kpi import Kpis, window_kpis
from linetwin.twin.params import compile_params
from linetwin.twin.sim import Twin, start_state
from linetwin.twin.snapshot import Snapshot
from linetwin.twin.spec import LineSpec, bundled_spec

TEMPERATURE_MARGIN_SIGMAS = 10.0
"""Temperature observation bounds reach this many sensor-noise sigmas (+1 °C) beyond the range
the true temperature can take."""


def resolve_line(line: LineSpec | str) -> LineSpec:
    """Return `line` itself, or the bundled line of that name ('example', 'two-station'...)."""
    if isinstance(line, LineSpec):
        return line
    if isinstance(line, str):
        return bundled_spec(line)
    raise ReplayError(f"line must be a LineSpec or a bundled line name, got {line!r}")


@dataclass(frozen=True)
class StepResult:
    """One decision step of every copy.

    obs `(n, n_obs)` float32; reward `(n,)` profit per hour over the step (spec currency);
    truncated `(n,)`; kpis of the step's window; setpoints `(n, n_setpoints)` applied (feature
    order, engineering units); target `(n, n_setpoints)` the clamped proposal the ramp heads
    for (the held setpoints on fallback); reasons per copy (the guard's, as strings);
    fallback `(n,)` whether the guard rejected the action and held the setpoints.
    """

    obs: np.ndarray
    reward: np.ndarray
    truncated: np.ndarray
    kpis: Kpis
    setpoints: np.ndarray
    target: np.ndarray
    reasons: list[tuple[str, ...]]
    fallback: np.ndarray


class LineBatch:
    """`n` copies of one line advanced by decisions of `decision_s` seconds of line time.

    An episode of a copy lasts `ceil(horizon_s / decision_s)` decisions and starts from an
    empty line at nominal setpoints.
    """

    def __init__(self, spec: LineSpec, n: int, decision_s: float, horizon_s: float) -> None:
        if not (isinstance(decision_s, int | float) and math.isfinite(decision_s)) or not (
            decision_s > 0
        ):
            raise ReplayError(f"decision_s must be a positive number of seconds, got {decision_s}")
        if not (isinstance(horizon_s, int | float) and math.isfinite(horizon_s)) or not (
            horizon_s >= decision_s
        ):
            raise ReplayError(
                f"horizon_s must be a finite number of seconds >= decision_s ({decision_s}), "
                f"got {horizon_s}"
            )
        self.spec = spec
        self.n = n
        self.decision_s = float(decision_s)
        self.horizon_s = float(horizon_s)
        self.n_steps = math.ceil(self.horizon_s / self.decision_s - 1e-9)
        self.params = compile_params(spec)
        self.schema = FeatureSchema.from_spec(spec)
        lower, upper = self.schema.lower, self.schema.upper
        self._lower, self._half_span = lower, 0.5 * (upper - lower)
        self.obs_low, self.obs_high = self._observation_bounds()
        self.twin: Twin | None = None
        self.guard = SetpointGuard(spec)  # limits only: each copy's last-known-good is below
        self.last_good = np.repeat(self.guard.last_good[None], n, axis=0)
        self.steps = np.zeros(n, dtype=np.int64)
        self._recent = np.zeros(n)  # good parts per hour over each copy's last decision
        self._prev: Snapshot | None = None

    @property
    def obs_names(self) -> tuple[str, ...]:
        """Names of the observation's entries: the schema's state, then setpoint features."""
        return self.schema.state_names + self.schema.setpoint_names

    def _observation_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Return finite bounds `(n_obs,)` of every observation entry (see docs/replay.md)."""
        sc, spec = self.schema, self.spec
        n_buf, n_st = len(sc.buffer_capacity), len(sc.station_names)
        lo = [0.0] * (n_buf + 3 * n_st)  # fill fractions and status flags
        hi = [1.0] * (n_buf + 3 * n_st)
        for i in sc.thermal_stations:
            st = spec.stations[i]
            temp, th = st.setpoints.temperature, st.thermal
            if temp is None or th is None:  # thermal stations always have both
                raise ReplayError(f"station {st.name!r} is thermal but has no temperature limits")
            start = temp.nominal if th.initial_c is None else th.initial_c
            margin = TEMPERATURE_MARGIN_SIGMAS * st.sensors.temperature_noise_c + 1.0
            lo.append(min(start, temp.min) - margin)
            hi.append(max(start, temp.max) + margin)
        p = self.params.params
        for i in sc.wear_stations:  # wear accrues while busy at (speed / nominal) ** exponent
            top = self.params.upper[i, L.S_SPEED] / p[i, L.P_SPEED_NOM]
            lo.append(0.0)
            hi.append(self.horizon_s / 3600.0 * top ** p[i, L.P_WEAR_EXP] * (1 + 1e-9))
        # good parts per hour over one decision: what is in the line plus three times the
        # fastest station's top rate (an exponential station can beat its mean; clipped beyond)
        rate = float(np.max(self.params.upper[:, L.S_SPEED] / p[:, L.P_CYCLE]))
        in_line = float(sum(sc.buffer_capacity) + n_st)
        lo.append(0.0)
        hi.append(3600.0 * (3.0 * rate + (in_line + 10.0) / self.decision_s))
        lo += list(sc.setpoint_lower)
        hi += list(sc.setpoint_upper)
        return np.array(lo), np.array(hi)

    # ---- starting and restarting ----------------------------------------------------------

    def start(self, rngs: Sequence[np.random.Generator], sensor_rng: np.random.Generator) -> None:
        """Start every copy at time 0: copy k's state from `rngs[k]`, sensor noise from
        `sensor_rng` (drawn after the states, so one Generator may serve as both)."""
        state = start_state(self.spec, self.n, rngs, 0.0, self.params)
        self.twin = Twin(self.spec, self.n, rng=sensor_rng, state=state)
        self.last_good[:] = self.guard.last_good
        self.steps[:] = 0
        self._recent[:] = 0.0
        self._prev = self.twin.snapshot()

    def restart(self, rows: np.ndarray, rngs: Sequence[np.random.Generator]) -> None:
        """Restart the copies at `rows` (indices) at the twin's current time, one Generator each."""
        twin = self._twin()
        twin.reset_scenarios(rows, rngs)
        self.last_good[rows] = self.guard.last_good
        self.steps[rows] = 0
        self._recent[rows] = 0.0
        self._prev = twin.snapshot()

    @property
    def time_s(self) -> float:
        """Line time of the copies, s since the last start (they share one clock)."""
        return self._twin().time_s

    def observe(self) -> np.ndarray:
        """Return the observations `(n, n_obs)` float32 of the latest snapshot.

        The recent throughput feature is good parts per hour over each copy's last decision
        (0 after a start: the line starts empty).
        """
        snap = self._snapshot()
        x = np.concatenate(
            [
                self.schema.state_features(snap, self._recent),
                self.schema.setpoint_features(snap.setpoints),
            ],
            axis=1,
        )
        return np.clip(x, self.obs_low, self.obs_high).astype(np.float32)

    def applied(self) -> np.ndarray:
        """Return the setpoints in force `(n, n_setpoints)` (feature order, engineering units)."""
        return self.schema.setpoint_features(self._twin().setpoints)

    # ---- one decision ---------------------------------------------------------------------

    def step(self, actions: np.ndarray, active: np.ndarray) -> StepResult:
        """Apply `actions (n, n_setpoints)` in [-1, 1] of the `active (n,)` copies through
        their guards, advance every copy by `decision_s`, and return what happened.

        Inactive copies keep their setpoints (their step is discarded by the caller).
        """
        twin = self._twin()
        prev = self._snapshot()
        running = twin.setpoints
        with np.errstate(over="ignore", invalid="ignore"):  # huge actions: inf, the guard rejects
            targets = self._lower + (actions + 1.0) * self._half_span
        proposals = self.schema.setpoint_array(targets, running)
        new = running.copy()
        target = self.applied()
        fallback = np.zeros(self.n, dtype=bool)
        reasons: list[tuple[str, ...]] = [() for _ in range(self.n)]
        rows = np.flatnonzero(active)
        if rows.size:  # one batched guard pass, each copy with its own last-known-good
            last_good = self.last_good[rows]
            res = self.guard.check_many(proposals[rows], running[rows], last_good)
            self.last_good[rows] = last_good
            new[rows] = res.setpoints
            fallback[rows] = res.fallback
            target[rows] = self.schema.setpoint_features(res.targets)
            for k, i in enumerate(rows):
                reasons[i] = tuple(str(r) for r in res.reasons[k])
        twin.set_setpoints(new, source="setpoint guard")
        target = np.where(fallback[:, None], self.schema.setpoint_features(new), target)
        snap = twin.step(self.decision_s)
        kpis = window_kpis(prev, snap)
        self._prev = snap
        self.steps += 1
        self._recent = kpis.throughput_per_hour.copy()
        return StepResult(
            obs=self.observe(),
            reward=kpis.profit_per_hour,
            truncated=self.steps >= self.n_steps,
            kpis=kpis,
            setpoints=self.schema.setpoint_features(new),
            target=target,
            reasons=reasons,
            fallback=fallback,
        )

    def check_actions(self, actions: object, shape: tuple[int, ...]) -> np.ndarray:
        """Return `actions` as a float64 array of `shape`, or raise ReplayError naming it."""
        try:
            a = np.asarray(actions, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise ReplayError(f"action must be an array of numbers, got {actions!r}") from exc
        if a.shape != shape:
            raise ReplayError(f"action must have shape {shape}, got {a.shape}")
        return a

    def _twin(self) -> Twin:
        if self.twin is None:
            raise ReplayError("the environment must be reset before it is stepped")
        return self.twin

    def _snapshot(self) -> Snapshot:
        if self._prev is None:
            raise ReplayError("the environment must be reset before it is stepped")
        return self._prev
