"""`replay(...)`: decision replay and counterfactual runs of one recording.

    result = replay("run.parquet", policies, ReplaySettings(cadence_s=60, seeds=16))

`linetwin.replay.outputs.write_outputs` writes its tables, summary and report.

The same recording, policies, settings and seed give identical outputs (byte for byte for
the Parquet tables and the summary): no wall-clock time enters a decision or a file.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from linetwin.replay.counterfactual import Counterfactual, StartPoint, run_counterfactuals
from linetwin.replay.decisions import DecisionReplayer, DecisionRows, setpoint_spans
from linetwin.replay.errors import ReplayError
from linetwin.replay.policies import Policy
from linetwin.replay.scan import KPI_NAMES, scan
from linetwin.twin.jsonable import finite_json
from linetwin.twin.params import compile_params
from linetwin.twin.recorder import read_spec
from linetwin.twin.spec import LineSpec
from linetwin.twin.stats import mean_interval

Progress = Callable[[str, int, int], None]
"""`progress(stage, done, total)`: stage is "decisions" (ticks read) or "counterfactual"."""


@dataclass(frozen=True)
class ReplaySettings:
    """How to replay: decision cadence (line s), counterfactual seeds (0: none) and horizon
    (line s, a whole number of cadences), the recorded scenario, the seed of every draw, and
    whether optimizer policies run closed loop on the forks (default: the schedule they
    decided on the recorded line)."""

    cadence_s: float = 60.0
    seeds: int = 16
    horizon_s: float = 3600.0
    scenario: int = 0
    seed: int = 0
    closed_loop: bool = False

    def check(self) -> None:
        """Raise ReplayError naming the first bad setting."""
        if not (math.isfinite(self.cadence_s) and self.cadence_s > 0):
            raise ReplayError(f"cadence_s must be a positive number of s, got {self.cadence_s}")
        if self.seeds < 0 or self.seeds == 1:
            raise ReplayError(f"seeds must be 0 (no counterfactuals) or >= 2, got {self.seeds}")
        steps = self.horizon_s / self.cadence_s
        if not (math.isfinite(steps) and steps >= 1 and abs(steps - round(steps)) < 1e-9):
            raise ReplayError(
                f"horizon_s ({self.horizon_s:g} s) must be a whole number (>= 1) of "
                f"cadences ({self.cadence_s:g} s)"
            )

    @property
    def steps(self) -> int:
        """Decision periods per counterfactual run."""
        return round(self.horizon_s / self.cadence_s)


@dataclass(frozen=True)
class ReplayResult:
    """Everything a replay produced (see `write_outputs`)."""

    recording: str
    spec: LineSpec
    policies: list[Policy]
    settings: ReplaySettings
    windows: dict[str, np.ndarray]  # time_s and KPI_NAMES, one entry per decision point
    decisions: DecisionRows
    counterfactual: Counterfactual | None

    def summary(self) -> dict[str, Any]:
        """The JSON summary: settings, per policy decision statistics and counterfactual KPI
        means with 95% intervals, differences to the reference policy, regression diffs."""
        rows = self.decisions
        policy = np.array(rows.policy)
        out: dict[str, Any] = {
            "recording": self.recording,
            "line": self.spec.name,
            "spec_hash": self.spec.spec_hash(),
            "settings": {
                "cadence_s": self.settings.cadence_s,
                "seeds": self.settings.seeds,
                "horizon_s": self.settings.horizon_s,
                "scenario": self.settings.scenario,
                "seed": self.settings.seed,
                "closed_loop": self.settings.closed_loop,
            },
            "decision_points": int(self.windows["time_s"].size),
            "recorded": {k: mean_interval(self.windows[k]).as_dict() for k in KPI_NAMES},
            "policies": {},
        }
        for p in self.policies:
            mine = policy == p.name
            entry: dict[str, Any] = {"kind": p.kind, "model": p.model_dir}
            entry["decisions"] = {
                "fallbacks": int(np.array(rows.fallback)[mine].sum()),
                "changed_share": float(np.mean(np.array(rows.change)[mine] > 1e-9)),
                "predicted_difference_vs_recorded": {
                    k: mean_interval(np.array(rows.diff[k])[mine]).as_dict() for k in KPI_NAMES
                },
            }
            out["policies"][p.name] = entry
        deciders = [p.name for p in self.policies if p.decides]
        if len(deciders) >= 2:
            out["regression"] = {
                f"{other} vs {deciders[0]}": self._regression(deciders[0], other)
                for other in deciders[1:]
            }
        cf = self.counterfactual
        if cf is not None:
            means, diffs = cf.means(), cf.differences()
            out["counterfactual"] = {
                "reference": cf.reference,
                "starts": int(cf.start_time_s.size),
                "horizon_s": cf.horizon_s,
            }
            for name in cf.policies:
                entry = out["policies"][name]
                entry["kpis"] = {k: v.as_dict() for k, v in means[name].items()}
                if name in diffs:
                    entry["difference_vs_reference"] = {
                        k: v.as_dict() for k, v in diffs[name].items()
                    }
        return finite_json(out)

    def _regression(self, a: str, b: str) -> dict[str, Any]:
        """Where and how much the decisions of optimizer policies `a` and `b` differ."""
        rows = self.decisions
        policy = np.array(rows.policy)
        sa = np.stack([rows.setpoints[i] for i in np.flatnonzero(policy == a)])
        sb = np.stack([rows.setpoints[i] for i in np.flatnonzero(policy == b)])
        span = setpoint_spans(compile_params(self.spec))
        rel = np.nan_to_num(np.abs(sa - sb)) / span  # (points, stations, 2)
        per_point = rel.reshape(rel.shape[0], -1).max(axis=1)
        worst_station = rel.max(axis=2).argmax(axis=1)
        names = [st.name for st in self.spec.stations]
        differs = per_point > 0.01
        counts = np.bincount(worst_station[differs], minlength=len(names))
        profit_a = np.array(rows.diff["profit_per_hour"])[policy == a]
        profit_b = np.array(rows.diff["profit_per_hour"])[policy == b]
        times = self.windows["time_s"]
        return {
            "points": int(per_point.size),
            "differ_share": float(differs.mean()),
            "max_relative_difference": float(per_point.max()),
            "mean_relative_difference": float(per_point.mean()),
            "first_differing_time_s": float(times[np.argmax(differs)]) if differs.any() else None,
            "stations_most_often_differing": {
                names[i]: int(counts[i]) for i in np.argsort(-counts)[:5] if counts[i] > 0
            },
            "predicted_profit_gain_difference": mean_interval(profit_b - profit_a).as_dict(),
        }


def replay(
    recording: str | Path,
    policies: Sequence[Policy],
    settings: ReplaySettings | None = None,
    progress: Progress | None = None,
) -> ReplayResult:
    """Replay decisions of `policies` on the recording and run their counterfactuals."""
    settings = settings or ReplaySettings()
    settings.check()
    spec = read_spec(recording)
    for p in policies:
        if p.model is not None and p.model.schema.spec_hash != spec.spec_hash():
            raise ReplayError(
                f"policy {p.name!r}: model {p.model_dir} was trained for another line than "
                f"the recording's ({spec.name!r})"
            )
    replayer = DecisionReplayer(spec, policies)
    points: list[StartPoint] = []  # not the points: their snapshots would add up over a day
    chosen: list[dict[str, np.ndarray]] = []
    windows: dict[str, list[float]] = {k: [] for k in ("time_s", *KPI_NAMES)}

    def read(done: int, total: int) -> None:
        if progress is not None:
            progress("decisions", done, total)

    for point in scan(
        recording,
        settings.cadence_s,
        scenario=settings.scenario,
        seed=settings.seed,
        seeds=settings.seeds,
        start_every=settings.steps,
        on_progress=read,
    ):
        chosen.append(replayer.add(point))
        points.append(StartPoint.of(point))
        windows["time_s"].append(point.time_s)
        for k in KPI_NAMES:
            windows[k].append(point.window[k])
    counterfactual = None
    if settings.seeds:

        def ran(done: int, total: int) -> None:
            if progress is not None:
                progress("counterfactual", done, total)

        counterfactual = run_counterfactuals(
            spec, points, chosen, policies, settings.steps, settings.cadence_s, seed=settings.seed,
            closed_loop=settings.closed_loop, on_progress=ran,
        )  # fmt: skip
    return ReplayResult(
        recording=str(recording),
        spec=spec,
        policies=list(policies),
        settings=settings,
        windows={k: np.array(v) for k, v in windows.items()},
        decisions=replayer.rows,
        counterfactual=counterfactual,
    )
