"""Pair the controller's predictions with what the line then did, and correct them by the bias.

Each cycle that predicts (not a fallback) opens a pair: the state it decided on and its
predicted KPIs at the target. Once the model's horizon has passed in line time, the pair is
closed with the KPIs realised over exactly that window (`twin.kpi.window_kpis` between the two
snapshots: measured snapshots on a real plant) and fed to a `models.residuals.BiasTracker`.
New predictions are published corrected by the tracked bias (mean minus bias, the std widened
by the bias's standard error), and `summary()` gives the engineer predicted against realised
over matching windows, the bias with its standard error, and the bands' coverage.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np

from linetwin.models.residuals import BiasTracker
from linetwin.twin.kpi import window_kpis
from linetwin.twin.snapshot import Snapshot

KPIS = ("throughput_per_hour", "scrap_rate", "energy_kwh_per_good_part", "profit_per_hour")
"""The KPIs tracked: the ones every decision predicts and the page shows."""

RECENT_PAIRS = 48
"""Closed pairs kept for the page (predicted against realised, newest last)."""

MAX_OPEN = 2048
"""Open pairs kept at most (a horizon of cycles; the oldest are dropped beyond)."""


@dataclass(frozen=True)
class Pair:
    """One closed pair: the window `[start_s, end_s]` (line s) and its KPIs."""

    start_s: float
    end_s: float
    predicted: dict[str, tuple[float, float]]  # KPI -> (mean, std) as published
    realised: dict[str, float | None]

    def to_json(self) -> dict[str, Any]:
        return {
            "start_time_s": self.start_s,
            "end_time_s": self.end_s,
            "predicted": {k: {"mean": m, "std": s} for k, (m, s) in self.predicted.items()},
            "realised": self.realised,
        }


class PredictionAudit:
    """Track the bias of the controller's predictions over `horizon_s` line seconds; decisions
    come every `period_s` (overlapping horizons widen the bias's standard error)."""

    def __init__(self, horizon_s: float, period_s: float, window: int = 256) -> None:
        self.horizon_s = float(horizon_s)
        self.tracker = BiasTracker(KPIS, window=window, overlap=max(1.0, horizon_s / period_s))
        self._open: deque[tuple[Snapshot, dict[str, tuple[float, float]]]] = deque(maxlen=MAX_OPEN)
        self.recent: deque[Pair] = deque(maxlen=RECENT_PAIRS)
        self._lock = threading.Lock()  # the controller feeds it; the API reads it

    def observe(self, snap: Snapshot, raw: dict[str, tuple[float, float]] | None) -> None:
        """Close the pairs whose horizon has passed at `snap` (scenario 0), then open one for
        this cycle's uncorrected prediction `raw` (None: nothing was predicted)."""
        with self._lock:
            self._observe(snap, raw)

    def _observe(self, snap: Snapshot, raw: dict[str, tuple[float, float]] | None) -> None:
        while self._open and snap.time_s - self._open[0][0].time_s >= self.horizon_s - 1e-9:
            start, predicted = self._open.popleft()
            k = window_kpis(start, snap)
            realised = {name: float(getattr(k, name)[0]) for name in KPIS}
            mean = [predicted[n][0] for n in KPIS]
            std = [predicted[n][1] for n in KPIS]
            self.tracker.update(
                mean, std, [v if math.isfinite(v) else math.nan for v in realised.values()]
            )
            self.recent.append(
                Pair(
                    start.time_s,
                    snap.time_s,
                    {n: predicted[n] for n in KPIS},
                    {n: (v if math.isfinite(v) else None) for n, v in realised.items()},
                )
            )
        if raw and all(n in raw and np.isfinite(raw[n]).all() for n in KPIS):
            self._open.append((snap, dict(raw)))

    def correct(self, predicted: dict[str, tuple[float, float]]) -> dict[str, tuple[float, float]]:
        """`predicted` with the tracked KPIs corrected by their bias (others unchanged)."""
        if not predicted or not all(n in predicted for n in KPIS):
            return predicted
        with self._lock:
            mean, std = self.tracker.correct(
                [predicted[n][0] for n in KPIS], [predicted[n][1] for n in KPIS]
            )
        out = dict(predicted)
        out.update({n: (float(mean[i]), float(std[i])) for i, n in enumerate(KPIS)})
        return out

    def summary(self) -> dict[str, Any]:
        """Per KPI the bias (predicted minus realised), its standard error, the closed pairs
        and the share of realised values inside the published 90% band; the recent pairs."""
        with self._lock:
            t = self.tracker
            bias, se, count, cover = t.bias, t.bias_se, t.count, t.coverage()
            recent = [p.to_json() for p in self.recent]
            opened = len(self._open)
        return {
            "horizon_s": self.horizon_s,
            "open_pairs": opened,
            "kpis": {
                n: {
                    "bias": float(bias[i]),
                    "bias_se": float(se[i]),
                    "pairs": int(count[i]),
                    "coverage_90": None if not math.isfinite(cover[i]) else float(cover[i]),
                }
                for i, n in enumerate(KPIS)
            },
            "recent": recent,
        }
