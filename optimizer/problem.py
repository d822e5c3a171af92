"""State one optimisation: decision box, objective weights, caps, locks and trust region."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import numpy as np

from linetwin.models.features import FeatureSchema
from linetwin.models.surrogate import OUT_ENERGY, OUT_GOOD, OUT_SCRAP
from linetwin.optimizer.errors import ProblemError
from linetwin.twin.spec import Economics, LineSpec

MOVE_MIN_GAIN_PER_HOUR = 2.0
"""Default least predicted profit gain, currency per hour, for which the controller moves its
setpoint target (see `Objective`; measured in `bench/steadiness.py`)."""

MOVE_SIGNIFICANCE = 0.1
"""Default significance level of the move test: the gain's lower one-sided 90% bound must
exceed the minimum gain."""


@dataclass(frozen=True)
class Objective:
    """Profit rate weights and optional caps an engineer can change.

    profit/h = good_weight * good/h - scrap_weight * scrap/h - energy_weight * kWh/h; the
    defaults are the spec's economics (price per good part, cost per scrapped part, energy
    price). Caps: energy in kWh/h, scrap rate as a fraction of parts finished.

    Move suppression (`optimizer/steady.py`): the controller moves its setpoint target to a new
    optimum only when the predicted profit gain over the target it holds and over what the
    plant runs, paired over the surrogate's members and calibrated, is significant: its lower
    one-sided bound at significance level `move_significance` exceeds `move_min_gain_per_hour`
    (currency per hour). Defaults: `MOVE_MIN_GAIN_PER_HOUR` and `MOVE_SIGNIFICANCE`; a
    significance of 1 turns the test off (every cycle's optimum becomes the target, as before
    issue 14).
    """

    good_weight: float
    scrap_weight: float
    energy_weight: float
    energy_cap_kwh_per_hour: float | None = None
    scrap_rate_cap: float | None = None
    move_min_gain_per_hour: float = MOVE_MIN_GAIN_PER_HOUR
    move_significance: float = MOVE_SIGNIFICANCE

    def __post_init__(self) -> None:
        for name in ("good_weight", "scrap_weight", "energy_weight"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 0):
                raise ProblemError(
                    f"objective.{name} must be a finite number >= 0, got {v}", field=name
                )
        cap = self.energy_cap_kwh_per_hour
        if cap is not None and not (math.isfinite(cap) and cap > 0):
            raise ProblemError(
                f"objective.energy_cap_kwh_per_hour must be > 0, got {cap}",
                field="energy_cap_kwh_per_hour",
            )
        rate = self.scrap_rate_cap
        if rate is not None and not (math.isfinite(rate) and 0 < rate < 1):
            raise ProblemError(
                f"objective.scrap_rate_cap must be in (0, 1), got {rate}", field="scrap_rate_cap"
            )
        gain = self.move_min_gain_per_hour
        if isinstance(gain, bool) or not (
            isinstance(gain, int | float) and math.isfinite(gain) and gain >= 0
        ):
            raise ProblemError(
                f"objective.move_min_gain_per_hour must be a finite number >= 0, got {gain!r}",
                field="move_min_gain_per_hour",
            )
        alpha = self.move_significance
        if isinstance(alpha, bool) or not (
            isinstance(alpha, int | float) and math.isfinite(alpha) and 0 < alpha <= 1
        ):
            raise ProblemError(
                f"objective.move_significance must be in (0, 1], got {alpha!r}",
                field="move_significance",
            )

    @classmethod
    def from_economics(cls, eco: Economics) -> Objective:
        """The profit rate of the spec's economics, without caps."""
        return cls(eco.price_per_good_part, eco.cost_per_scrap_part, eco.energy_price_per_kwh)

    def weights(self, n_outputs: int) -> np.ndarray:
        """The objective as weights on the surrogate's outputs `(n_outputs,)`."""
        w = np.zeros(n_outputs)
        w[OUT_GOOD], w[OUT_SCRAP], w[OUT_ENERGY] = (
            self.good_weight,
            -self.scrap_weight,
            -self.energy_weight,
        )
        return w

    def constraint_rows(self, n_outputs: int) -> list[tuple[np.ndarray, float]]:
        """Caps as linear constraints on the outputs: rows (a, b) meaning a · outputs <= b."""
        rows = []
        if self.energy_cap_kwh_per_hour is not None:
            a = np.zeros(n_outputs)
            a[OUT_ENERGY] = 1.0
            rows.append((a, self.energy_cap_kwh_per_hour))
        if self.scrap_rate_cap is not None:
            # scrap / (good + scrap) <= c  <=>  (1 - c) scrap - c good <= 0
            c = self.scrap_rate_cap
            a = np.zeros(n_outputs)
            a[OUT_SCRAP], a[OUT_GOOD] = 1.0 - c, -c
            rows.append((a, 0.0))
        return rows


@dataclass(frozen=True)
class Problem:
    """One steady-state setpoint optimisation for one line state.

    Vectors are in the surrogate's setpoint-feature order `(n_setpoints,)`: `current` is what the
    plant runs, `lower`/`upper` the decision box (locked setpoints have lower = upper =
    current), `grid` the step of gridded setpoints (0: continuous), `max_move` an optional
    bound on this cycle's move from `current` (NaN: none). `ood_limit` bounds the surrogate's
    OOD score, `spread_limit` the members' std of the profit rate (None: no limit);
    `risk_aversion` k makes the objective pessimistic: mean profit minus k member stds.
    """

    schema: FeatureSchema
    state: np.ndarray
    current: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    grid: np.ndarray
    objective: Objective
    ood_limit: float = math.inf
    spread_limit: float | None = None
    max_move: np.ndarray | None = None
    risk_aversion: float = 0.0
    locked: tuple[str, ...] = field(default_factory=tuple)

    @property
    def box(self) -> tuple[np.ndarray, np.ndarray]:
        """Bounds of this cycle's decision: the limits, narrowed by `max_move` around current."""
        lo, hi = self.lower.copy(), self.upper.copy()
        if self.max_move is not None:
            m = np.where(np.isfinite(self.max_move), self.max_move, np.inf)
            lo = np.maximum(lo, self.current - m)
            hi = np.minimum(hi, self.current + m)
        return lo, np.maximum(hi, lo)

    def with_objective(self, objective: Objective) -> Problem:
        """The same problem under another objective."""
        return replace(self, objective=objective)


RISK_AVERSION = 1.0
"""Default pessimism of the optimizer's objective: the ensemble-mean profit rate minus this many
standard deviations of the members' profit rates. Maximising the mean alone climbs into corners
where the members disagree and their mean flatters (the long line: 0.957 of the twin search's
profit); a fixed bound on the disagreement either fenced in good setpoints or let bad ones in,
depending on the model. With one standard deviation all three benchmark lines reach >= 0.99
(docs/design.md, bench/RESULTS.md)."""


def make_problem(
    spec: LineSpec,
    schema: FeatureSchema,
    state: np.ndarray,
    current: np.ndarray,
    objective: Objective | None = None,
    *,
    locked: Mapping[str, object] | tuple[str, ...] = (),
    ood_limit: float = math.inf,
    spread_limit: float | None = None,
    max_move: np.ndarray | None = None,
    risk_aversion: float = 0.0,
) -> Problem:
    """Build a problem from the spec's limits; `locked` names stations whose setpoints stay."""
    cur = np.asarray(current, dtype=float).reshape(-1)
    if cur.shape != (schema.n_setpoints,) or not np.isfinite(cur).all():
        raise ProblemError(
            f"current setpoints must be {schema.n_setpoints} finite numbers, got {cur!r}"
        )
    lo, hi = schema.lower.copy(), schema.upper.copy()
    cur = np.clip(cur, lo, hi)
    grid = np.zeros(schema.n_setpoints)
    for j, (i, k) in enumerate(schema.setpoint_slots):
        st = spec.stations[i]
        sp = st.setpoints.speed if k == 0 else st.setpoints.temperature
        grid[j] = (sp.grid or 0.0) if sp is not None else 0.0
    names = tuple(locked)
    for name in names:
        if name not in schema.station_names:
            raise ProblemError(f"locked station {name!r} is not on line {spec.name!r}")
        i = schema.station_names.index(name)
        for j, (st_i, _k) in enumerate(schema.setpoint_slots):
            if st_i == i:
                lo[j] = hi[j] = cur[j]
                grid[j] = 0.0
    return Problem(
        schema,
        np.asarray(state, dtype=float).reshape(-1),
        cur,
        lo,
        hi,
        grid,
        objective or Objective.from_economics(spec.economics),
        ood_limit,
        spread_limit,
        max_move,
        risk_aversion=risk_aversion,
        locked=names,
    )
