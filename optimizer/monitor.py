"""Judge whether a snapshot can be trusted before the controller decides on it."""

from __future__ import annotations

import math

import numpy as np

from linetwin.optimizer.guard import Reason
from linetwin.twin.snapshot import Snapshot
from linetwin.twin.spec import LineSpec


class InputMonitor:
    """Judge whether a snapshot can be trusted: fresh, finite, in range, not frozen."""

    def __init__(self, spec: LineSpec, stale_after_s: float, frozen_after: int = 3) -> None:
        self.spec = spec
        self.stale_after_s = stale_after_s
        self.frozen_after = frozen_after
        self.thermal = [i for i, s in enumerate(spec.stations) if s.is_thermal]
        noisy = [spec.stations[i].sensors.temperature_noise_c > 0 for i in self.thermal]
        self.noisy = np.array(noisy, dtype=bool)
        self._last: np.ndarray | None = None
        self._same = np.zeros(len(self.thermal), dtype=np.int64)  # repeats per sensor
        self._last_time = -math.inf

    def check(self, snap: Snapshot, age_s: float) -> Reason | None:
        """Return a fallback reason, or None when the snapshot is usable."""
        if age_s > self.stale_after_s or snap.time_s < self._last_time:
            return Reason.STALE_DATA
        self._last_time = snap.time_s
        temp = snap.readings.temperature_c[0, self.thermal]
        valid = snap.readings.valid[0, self.thermal, 0]
        if not valid.all() or not np.isfinite(temp).all():
            return Reason.BAD_DATA
        if (temp < -50.0).any() or (temp > 1000.0).any():
            return Reason.BAD_DATA
        repeated = np.zeros(len(self.thermal), dtype=bool)
        if self._last is not None:
            repeated = (temp == self._last) & self.noisy  # a noisy sensor never repeats exactly
        self._same = np.where(repeated, self._same + 1, 0)
        self._last = temp.copy()
        if (self._same >= self.frozen_after - 1).any():
            return Reason.BAD_DATA
        return None
