"""Steady setpoint targets: move the target only for a significant predicted gain (issue 14).

An optimizer that publishes each cycle's optimum hunts: the optimum of a noisy state wanders,
and the plant is sent back and forth for gains the model cannot tell from noise. Industrial
advanced process control answers this with steady-state targets that change only for a real
gain, and so does `SteadyHold`: each cycle it compares the new optimum (the candidate) with
the target it holds and with what the plant runs, over the surrogate's ensemble members paired
(the same member at both points, so what the members agree on cancels), scaled by the model's
calibration (`band_scale`, as the controller's predictions use it). The candidate replaces the
held target only when the lower one-sided bound of both gains, at the objective's significance
level, exceeds its minimum gain per hour; otherwise the held target stays (hysteresis), and the
guard keeps ramping toward it as before. The held target is re-judged from every new state.

The gains are paired over the members and over the states of the last `STATE_WINDOW_S` of line
time (the newest included): a steady target is a claim about the line's coming hours, not about
this minute's buffer levels. Judged from one state only, a poorly fitted model (the long line's
bench model) found a "significant" gain every few minutes, each from a different state, and the
target wandered nearly as much as without the test.

Gains are profit rates under the controller's `Objective` (currency per hour).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, replace
from statistics import NormalDist
from typing import Protocol

import numpy as np

from linetwin.models.surrogate import Surrogate
from linetwin.optimizer.hold import Gain, HoldSummary
from linetwin.optimizer.problem import Objective

__all__ = ["Gain", "HoldSummary", "HoldVerdict", "SteadyHold", "judge", "paired_gain", "unchanged"]

STATE_WINDOW_S = 900.0
"""Line seconds of recent states over which a gain is judged (`SteadyHold`)."""

MAX_STATES = 30
"""At most this many recent states are kept, however often the controller cycles."""

CAP_TOLERANCE = 1e-6
"""Relative slack when a held target or the running setpoints are checked against the caps."""


def paired_gain(new: np.ndarray, old: np.ndarray, scale: float, significance: float) -> Gain:
    """The gain of `new` over `old`, profit rates per member `(E,)`, paired member by member.

    The members' standard deviation of the paired differences, times the calibration `scale`,
    is the gain's standard deviation; the bounds are the mean minus and plus its normal
    quantile at `1 - significance`. A significance of 1 turns the test off (no bounds).
    """
    d = np.asarray(new, dtype=float) - np.asarray(old, dtype=float)
    mean = float(d.mean())
    if significance >= 1.0:
        return Gain(mean, None, None)
    spread = float(d.std()) * scale
    z = NormalDist().inv_cdf(1.0 - significance)
    return Gain(mean, mean - z * spread, mean + z * spread)


def judge(
    running: np.ndarray,
    held: np.ndarray | None,
    candidate: np.ndarray,
    *,
    scale: float,
    min_gain_per_hour: float,
    significance: float,
    running_ok: bool = True,
) -> tuple[str, HoldSummary]:
    """Decide where to head from the members' profit rates `(E,)` at the running setpoints,
    the held target (None: none usable) and the candidate.

    Returns which point becomes the target (`"candidate"`, `"held"` or `"running"`) and the
    summary. The candidate wins only when both paired gains (over the held target and over
    the running setpoints) have a lower bound above `min_gain_per_hour`; `running_ok` False
    (the running setpoints break a cap) makes it win outright.
    """
    over_running = paired_gain(candidate, running, scale, significance)
    over_held = over_running if held is None else paired_gain(candidate, held, scale, significance)

    def summary(moved: bool, why: str) -> HoldSummary:
        return HoldSummary(moved, why, over_held, over_running, min_gain_per_hour, significance)

    def significant(g: Gain) -> bool:
        return g.low is None or g.low > min_gain_per_hour

    if significance >= 1.0:
        return "candidate", summary(True, "test_off")
    if not running_ok:
        return "candidate", summary(True, "running_breaks_cap")
    if significant(over_held) and significant(over_running):
        return "candidate", summary(True, "significant_gain")
    if held is None:
        return "running", summary(False, "no_significant_gain")
    if significant(over_held):
        return "running", summary(False, "stopped")
    return "held", summary(False, "no_significant_gain")


@dataclass(frozen=True)
class HoldVerdict:
    """Where to head this cycle: setpoint features `(n_setpoints,)` and why."""

    target: np.ndarray
    summary: HoldSummary


class SteadyHold:
    """Hold a steady setpoint target; give it up only for a significantly better one.

    `target` is the held target in the surrogate's setpoint-feature order `(n_setpoints,)`,
    None until the first decision; gains are judged over the states of the last `window_s`
    line seconds (0: the newest state only).
    """

    def __init__(self, window_s: float = STATE_WINDOW_S) -> None:
        self.target: np.ndarray | None = None
        self.window_s = window_s
        self._states: deque[tuple[float, np.ndarray]] = deque(maxlen=MAX_STATES)

    def decide(
        self,
        model: Surrogate,
        objective: Objective,
        state: np.ndarray,
        running: np.ndarray,
        candidate: np.ndarray,
        locked: tuple[str, ...] = (),
        time_s: float | None = None,
    ) -> HoldVerdict:
        """Judge the new optimum `candidate` against the held target and `running` (setpoint
        features `(n_setpoints,)`, from state features `(n_state,)` at line time `time_s`, and
        the recent states kept from earlier calls) and remember the winner. Without `time_s`
        only this state counts.

        A held target is given up first when it left the model's envelope, breaks a cap of
        `objective`, or moves a `locked` station; its gain is then judged over the running
        setpoints alone.
        """
        schema = model.schema
        held = self.target
        if held is not None and held.shape != candidate.shape:
            held = None
        rows = [running, candidate] if held is None else [running, candidate, held]
        x = np.asarray(rows, dtype=float)
        state = np.asarray(state, dtype=float)
        states = self._window(state, time_s)  # (K, n_state), the newest last
        k, p = len(states), len(x)
        pred = model.predict(np.repeat(states, p, axis=0), np.tile(x, (k, 1)))
        n_out = schema.n_outputs
        # members' profit rates (E, K, rows): paired over members and states
        profit = (pred.members @ objective.weights(n_out)).reshape(-1, k, p)
        caps_ok = np.ones(p, dtype=bool)
        for a, b in objective.constraint_rows(n_out):  # at the newest state
            caps_ok &= pred.mean[-p:] @ a <= b + CAP_TOLERANCE * max(1.0, abs(b))
        dropped = None
        if held is not None:
            names = schema.station_names
            fixed = np.array([names[i] in locked for i, _k in schema.setpoint_slots], dtype=bool)
            if fixed.any() and not np.array_equal(held[fixed], running[fixed]):
                dropped = "locked"
            elif not caps_ok[2]:
                dropped = "breaks_cap"
            elif model.ood_score(state[None], held[None])[0] > model.ood_threshold:
                dropped = "out_of_envelope"
        usable = held is not None and dropped is None
        scale = float(np.mean(model.band_scale[:3]))  # member spread -> calibrated std
        which, summary = judge(
            profit[..., 0].ravel(),
            profit[..., 2].ravel() if usable else None,
            profit[..., 1].ravel(),
            scale=scale,
            min_gain_per_hour=objective.move_min_gain_per_hour,
            significance=objective.move_significance,
            running_ok=bool(caps_ok[0]),
        )
        if dropped is not None:
            summary = replace(summary, dropped=dropped)
        chosen = {"running": 0, "candidate": 1, "held": 2}[which]
        self.target = x[chosen].copy()
        return HoldVerdict(self.target.copy(), summary)

    def _window(self, state: np.ndarray, time_s: float | None) -> np.ndarray:
        """Keep `state` with the others of the last `window_s`; return them `(K, n_state)`."""
        if time_s is None:
            return state[None]
        while self._states and (
            self._states[-1][0] > time_s  # time went back (a new run): start afresh
            or self._states[-1][1].shape != state.shape
        ):
            self._states.clear()
        self._states.append((time_s, state.copy()))
        while self._states[0][0] < time_s - self.window_s:
            self._states.popleft()
        return np.stack([s for _t, s in self._states])


class _Publishable(Protocol):
    @property
    def mode(self) -> str: ...
    @property
    def setpoints(self) -> np.ndarray: ...
    @property
    def fallback(self) -> bool: ...
    @property
    def reasons(self) -> tuple[str, ...]: ...


def unchanged(last: _Publishable | None, new: _Publishable) -> bool:
    """Whether publishing `new` after `last` would change nothing: the same mode, the same
    setpoint vector bit for bit, and no change into, out of or between fallbacks."""
    if last is None or str(last.mode) != str(new.mode) or last.fallback != new.fallback:
        return False
    if new.fallback and tuple(last.reasons) != tuple(new.reasons):
        return False
    return bool(np.array_equal(last.setpoints, new.setpoints))
