"""The setpoint guard: the only door through which any setpoint reaches the store and the plant.

Whoever proposes setpoints (the optimizer, an engineer's override, a rollback), the guard makes
what leaves finite, inside the engineering limits, on the setpoint's grid (or rounded to its
resolution: `Lattice`), within one cycle's rate of change from what the plant runs, and without
moves smaller than the actuator resolves. Rounding goes toward the running value, so it never
leaves the limits or the rate limit.
When the inputs are stale or bad, the model or the solver failed, or the proposal itself is
unusable, it falls back to the last-known-good setpoints and says why: it holds them, or, where
the plant runs something else, heads back to them at the same rate limit as any other move.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from linetwin.twin.params import compile_params
from linetwin.twin.spec import LineSpec


class Reason(StrEnum):
    """Why the guard published what it did."""

    OK = "ok"
    CLAMPED = "clamped"  # part of the target lay outside the limits
    RAMPED = "ramped"  # the move was cut to the rate limit
    DEADBAND = "deadband"  # moves below the actuator's resolution were not sent
    STALE_DATA = "stale_data"
    BAD_DATA = "bad_data"  # NaN, frozen or out-of-range sensor data
    MODEL_FAILED = "model_failed"
    OUT_OF_ENVELOPE = "out_of_envelope"  # the surrogate is outside its training data
    SOLVER_FAILED = "solver_failed"
    SOLVER_TIMEOUT = "solver_timeout"
    INFEASIBLE = "infeasible"  # the caps cannot be met inside the trusted region
    BAD_PROPOSAL = "bad_proposal"  # the proposal had non-finite values or the wrong shape


FALLBACKS = frozenset(
    {
        Reason.STALE_DATA,
        Reason.BAD_DATA,
        Reason.MODEL_FAILED,
        Reason.OUT_OF_ENVELOPE,
        Reason.SOLVER_FAILED,
        Reason.SOLVER_TIMEOUT,
        Reason.BAD_PROPOSAL,
    }
)


UNTRUSTED_RUNNING = frozenset({Reason.STALE_DATA, Reason.BAD_DATA})
"""Fallbacks whose snapshot, and so the running setpoints it reports, cannot be trusted."""


@dataclass(frozen=True)
class GuardResult:
    """What the guard lets through: setpoints `(n_stations, 2)` and the reasons.

    `fallback` is True when the proposal was rejected: the setpoints are the last-known-good
    ones, or one rate-limited move toward them from what the plant runs; `target` is the
    clamped proposal the ramp heads for (None on fallback).
    """

    setpoints: np.ndarray
    reasons: tuple[Reason, ...]
    fallback: bool
    target: np.ndarray | None


@dataclass(frozen=True)
class BatchResult:
    """What the guard lets through for many lines: setpoints and targets
    `(lines, n_stations, 2)` (a fallback line's target is its setpoints), fallback `(lines,)`
    and each line's reasons."""

    setpoints: np.ndarray
    targets: np.ndarray
    fallback: np.ndarray
    reasons: list[tuple[Reason, ...]]


class Lattice:
    """The values each setpoint may be published at: `min + k * grid` for a gridded setpoint,
    else `k * resolution` (a setpoint without resolution or grid is continuous), for the
    integers k that stay inside the limits.

    Values on a lattice are written with as many decimals as the grid's or resolution's own
    (and the minimum's, for a grid), so `1.15 + 0.05` is published as `1.2`, not
    `1.2000000000000002`. A slot whose limits hold no lattice value is left continuous.
    """

    def __init__(
        self,
        present: np.ndarray,
        lower: np.ndarray,
        upper: np.ndarray,
        resolution: np.ndarray,
        grid: np.ndarray,
    ) -> None:
        self.step = np.where(grid > 0, grid, resolution)
        self.origin = np.where(grid > 0, lower, 0.0)
        q = np.where(self.step > 0, self.step, 1.0)
        self.k_min = np.ceil((lower - self.origin) / q - 1e-9)
        self.k_max = np.floor((upper - self.origin) / q + 1e-9)
        self.on = present & (self.step > 0) & (self.k_min <= self.k_max)
        self.q = q
        decimals = np.full(present.shape, -1, dtype=np.int64)
        for idx in zip(*np.nonzero(self.on), strict=True):
            a, b = _decimals(float(self.origin[idx])), _decimals(float(self.step[idx]))
            decimals[idx] = -1 if a is None or b is None else max(a, b)
        self.decimals = decimals

    def snap(self, values: np.ndarray, toward: np.ndarray) -> np.ndarray:
        """Put `values` `(..., n_stations, 2)` on the lattice, rounding toward `toward`."""
        if not self.on.any():
            return values
        k = (values - self.origin) / self.q
        up, down = np.ceil(k - 1e-9), np.floor(k + 1e-9)
        k = np.clip(np.where(values >= toward, down, up), self.k_min, self.k_max)
        out = self.origin + k * self.q
        for d in np.unique(self.decimals[self.on]):
            if d >= 0:  # drop the binary noise of origin + k * step
                out = np.where(self.on & (self.decimals == d), np.round(out, int(d)), out)
        return np.where(self.on, out, values)


def _decimals(x: float, most: int = 12) -> int | None:
    """The fewest decimals that write `x` exactly (to 1e-12 relative), or None past `most`."""
    for d in range(most + 1):
        if abs(round(x, d) - x) <= 1e-12 * max(1.0, abs(x)):
            return d
    return None


class SetpointGuard:
    """Enforce a line's setpoint limits; remember the last-known-good setpoints."""

    def __init__(self, spec: LineSpec, last_good: np.ndarray | None = None) -> None:
        lp = compile_params(spec)
        self.present = lp.present
        self.lower = np.where(self.present, lp.lower, 0.0)
        self.upper = np.where(self.present, lp.upper, 0.0)
        nominal = np.where(self.present, lp.nominal, 0.0)
        shape = self.present.shape
        self.max_step = np.zeros(shape)
        self.resolution = np.zeros(shape)
        self.grid = np.zeros(shape)
        for i, st in enumerate(spec.stations):
            for k, sp in enumerate((st.setpoints.speed, st.setpoints.temperature)):
                if sp is not None:
                    self.max_step[i, k] = sp.max_step
                    self.resolution[i, k] = sp.resolution
                    self.grid[i, k] = sp.grid or 0.0
        self._lattice = Lattice(self.present, self.lower, self.upper, self.resolution, self.grid)
        start = nominal if last_good is None else self.sanitise(last_good)
        self.last_good = self.snap(start, start)

    def sanitise(self, values: np.ndarray, fallback: np.ndarray | None = None) -> np.ndarray:
        """Return `values` `(n_stations, 2)` or `(lines, n_stations, 2)` clipped into the
        limits, non-finite entries taken from `fallback` (default: the lower limits); absent
        setpoints are 0."""
        v = np.array(values, dtype=float, copy=True)
        if v.ndim not in (2, 3) or v.shape[-2:] != self.present.shape:
            raise ValueError(f"setpoints must have shape {self.present.shape}, got {v.shape}")
        v = np.where(np.isfinite(v), v, self.lower if fallback is None else fallback)
        return np.where(self.present, np.clip(v, self.lower, self.upper), 0.0)

    def snap(self, values: np.ndarray, toward: np.ndarray) -> np.ndarray:
        """Put values `(..., n_stations, 2)` on their setpoint's lattice (the grid
        `min + k * grid`, else multiples of the resolution), rounding toward `toward` (a value
        at or above it rounds down) and staying inside the limits; see `Lattice`."""
        return self._lattice.snap(values, toward)

    def reject(self, reason: Reason, running: np.ndarray | None = None) -> GuardResult:
        """Fall back to the last-known-good setpoints because of `reason`.

        From `running` (what the plant runs, sanitised; default: the last-known-good) the
        result heads back at most one cycle's move, like any other move: a plant that runs
        something else (an operator changed it at the panel) is never made to jump. When the
        data is stale or bad, the running values are not trusted and the last-known-good
        setpoints are held as they are.
        """
        now = self.last_good if running is None else running
        out, _, _ = self._ramp(now[None], self.last_good[None])
        return GuardResult(out[0], (reason,), True, None)

    def check(
        self,
        proposal: np.ndarray | None,
        running: np.ndarray | None = None,
        failure: Reason | None = None,
    ) -> GuardResult:
        """Turn a proposal into setpoints safe to publish, or fall back.

        `running` is what the plant runs now (default: the last-known-good setpoints);
        `failure` names an upstream failure (stale data, solver timeout...), which forces the
        fallback (`reject`). A result that is not a fallback becomes the new last-known-good.
        """
        now = self.last_good
        if running is not None:
            try:
                r = np.asarray(running, dtype=float)
                if r.shape != self.present.shape:
                    raise ValueError(f"running setpoints of shape {r.shape}")
                now = self.sanitise(r, self.last_good)
            except (TypeError, ValueError):  # unreadable plant values: ramp from last-known-good
                now = self.last_good
        if failure is not None:
            # Stale or bad data: the running values came with it; hold the last-known-good.
            return self.reject(failure, None if failure in UNTRUSTED_RUNNING else now)
        if proposal is None:
            return self.reject(Reason.BAD_PROPOSAL, now)
        try:
            p = np.asarray(proposal, dtype=float)
        except (TypeError, ValueError):  # ragged, text, objects: not a proposal
            return self.reject(Reason.BAD_PROPOSAL, now)
        if p.shape != self.present.shape or not np.isfinite(p[self.present]).all():
            return self.reject(Reason.BAD_PROPOSAL, now)
        last_good = self.last_good[None].copy()
        result = self.check_many(p[None], now[None], last_good)
        self.last_good = last_good[0]
        return GuardResult(result.setpoints[0], result.reasons[0], False, result.targets[0])

    def check_many(
        self, proposals: np.ndarray, running: np.ndarray, last_good: np.ndarray
    ) -> BatchResult:
        """`check` for many lines of this spec at once (one numpy pass, no loop over lines).

        `proposals`, `running` (what each plant runs) and `last_good` (each line's own
        last-known-good, updated in place for the lines that do not fall back) are
        `(lines, n_stations, 2)`. A line whose proposal has a non-finite entry falls back
        (`BAD_PROPOSAL`): one rate-limited move from what it runs toward its last-known-good.
        """
        p = np.asarray(proposals, dtype=float)
        if p.ndim != 3 or p.shape[1:] != self.present.shape:
            raise ValueError(f"proposals must be (lines, {self.present.shape}), got {p.shape}")
        now = self.sanitise(running, last_good)
        bad = np.asarray(~np.isfinite(np.where(self.present, p, 0.0)).all(axis=(1, 2)))
        target = np.where(self.present, np.clip(np.nan_to_num(p), self.lower, self.upper), 0.0)
        clamped = (self.present & (target != p)).any(axis=(1, 2)) & ~bad
        snapped = self.snap(target, now)
        # a move the resolution rounds away entirely is a move below it: not sent (DEADBAND)
        unsent = (self.resolution > 0) & (self.grid == 0) & (snapped == now)
        unsent = (unsent & (np.abs(target - now) > 1e-9)).any(axis=(1, 2))
        target = np.where(bad[:, None, None], last_good, snapped)
        out, ramped, deadband = self._ramp(now, target)
        deadband = deadband | unsent
        last_good[~bad] = out[~bad]
        reasons: list[tuple[Reason, ...]] = []
        for i in range(p.shape[0]):
            if bad[i]:
                reasons.append((Reason.BAD_PROPOSAL,))
                continue
            why = [r for r, on in ((Reason.CLAMPED, clamped[i]), (Reason.RAMPED, ramped[i]),
                                   (Reason.DEADBAND, deadband[i])) if on]  # fmt: skip
            reasons.append(tuple(why) or (Reason.OK,))
        targets = np.where(bad[:, None, None], out, target)
        return BatchResult(out, targets, bad, reasons)

    def _ramp(
        self, now: np.ndarray, target: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One cycle's move of each line `(lines, n_stations, 2)` from `now` toward `target`
        (on the grid, within the limits, no move below the resolution), and per line whether
        it fell short by the rate limit (RAMPED) or held a move below the resolution
        (DEADBAND)."""
        move = np.clip(target - now, -self.max_step, self.max_step)
        ramped = (np.abs(move - (target - now)) > 1e-12).any(axis=(1, 2))
        out = self.snap(now + move, now)
        over = np.abs(out - now) > self.max_step + 1e-12  # a grid step larger than the ramp
        away = (out - now) * (target - now) < 0  # snapping from off-grid went the wrong way
        out = np.where(over | away, now, out)
        small = (np.abs(out - now) < self.resolution) & (out != now)
        out = np.where(small, now, out)
        out = np.where(self.present, np.clip(out, self.lower, self.upper), 0.0)
        return out, ramped, small.any(axis=(1, 2))
