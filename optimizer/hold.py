"""Why a cycle's target moved or held: the paired gain and the verdict `optimizer.steady` stores
in each decision (`Decision.hold`). Plain data with its JSON form, no model: the decision's
codec uses it without importing torch."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Gain:
    """A paired profit gain, currency per hour: the members' mean and the one-sided bounds at
    the significance level (`low` below, `high` above; None when the test is off)."""

    mean: float
    low: float | None
    high: float | None


@dataclass(frozen=True)
class HoldSummary:
    """Why a cycle's target moved or held (stored in the decision as `hold`).

    `gain` is the candidate's paired gain over the held target (over what the plant runs
    when no usable target was held), `running_gain` over what the plant runs; both per hour.
    `why`: `significant_gain` (moved to the candidate), `no_significant_gain` (held),
    `stopped` (the candidate beats the held target but not the running setpoints: the target
    becomes what the plant runs), `running_breaks_cap` (moved: staying would break a cap),
    `test_off` (significance 1: every optimum is taken). `dropped` says why a held target was
    given up before judging (`out_of_envelope`, `breaks_cap`, `locked`), else None.
    """

    moved: bool
    why: str
    gain: Gain
    running_gain: Gain
    min_gain_per_hour: float
    significance: float
    dropped: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The summary as JSON-ready data (bounds are null when the test is off)."""
        return {
            "moved": self.moved,
            "why": self.why,
            "gain_per_hour": self.gain.mean,
            "gain_low": self.gain.low,
            "gain_high": self.gain.high,
            "running_gain_per_hour": self.running_gain.mean,
            "running_gain_low": self.running_gain.low,
            "running_gain_high": self.running_gain.high,
            "min_gain_per_hour": self.min_gain_per_hour,
            "significance": self.significance,
            "dropped": self.dropped,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> HoldSummary:
        """Rebuild a summary from `to_json` data (for the decision codec)."""

        def bound(v: Any) -> float | None:
            return None if v is None else float(v)

        return cls(
            moved=bool(data["moved"]),
            why=str(data["why"]),
            gain=Gain(
                float(data["gain_per_hour"]), bound(data["gain_low"]), bound(data["gain_high"])
            ),
            running_gain=Gain(
                float(data["running_gain_per_hour"]),
                bound(data["running_gain_low"]),
                bound(data.get("running_gain_high")),
            ),
            min_gain_per_hour=float(data["min_gain_per_hour"]),
            significance=float(data["significance"]),
            dropped=None if data.get("dropped") is None else str(data["dropped"]),
        )
