"""Track each KPI's prediction bias online and correct predictions by it.

As each decision's horizon completes, its prediction (mean and calibrated std) is paired with
what the line then realised over that horizon. `BiasTracker` keeps the recent residuals
(predicted minus realised) per KPI, estimates the bias as their mean with its standard error,
and corrects a new prediction: the mean minus the bias, the std widened by the bias's
uncertainty. A surrogate that is right on average leaves the bias near zero and the band
nearly as it was; a level offset (docs/surrogate.md, "Honest predictions") is taken out once
enough horizons have completed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from linetwin.models.errors import ModelError
from linetwin.models.surrogate import Z90

MIN_PAIRS = 3
"""Fewer completed pairs than this: no correction (the bias is not estimated yet)."""


@dataclass
class BiasTracker:
    """Residuals of predicted against realised KPIs, per KPI, over the last `window` pairs.

    `names` are the KPIs, in the column order of every array given or returned (`(n_kpis,)`
    for one pair, `(batch, n_kpis)` for several). `overlap` is how many decisions' horizons
    cover one instant (horizon / decision period, at least 1): residuals of overlapping
    horizons are correlated, so the standard error of their mean is widened by its square
    root. A NaN realised value (a KPI not measured over that horizon) is skipped for that KPI.
    """

    names: tuple[str, ...]
    window: int = 256
    overlap: float = 1.0
    _predicted: np.ndarray = field(init=False, repr=False)
    _std: np.ndarray = field(init=False, repr=False)
    _realised: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.names = tuple(self.names)
        if not self.names:
            raise ModelError("BiasTracker needs at least one KPI name")
        if not (isinstance(self.window, int) and self.window >= MIN_PAIRS):
            raise ModelError(f"BiasTracker window must be an int >= {MIN_PAIRS}, got {self.window}")
        if not (np.isfinite(self.overlap) and self.overlap >= 1.0):
            raise ModelError(f"BiasTracker overlap must be a number >= 1, got {self.overlap}")
        k = len(self.names)
        self._predicted = np.zeros((0, k))
        self._std = np.zeros((0, k))
        self._realised = np.zeros((0, k))

    # -- feeding ----------------------------------------------------------------------------
    def _rows(self, name: str, a: Any, allow_nan: bool) -> np.ndarray:
        x = np.atleast_2d(np.asarray(a, dtype=float))
        if x.ndim != 2 or x.shape[1] != len(self.names):
            raise ModelError(
                f"{name}: expected shape (n_kpis,) or (batch, n_kpis) with n_kpis = "
                f"{len(self.names)} ({', '.join(self.names)}), got {np.shape(a)}"
            )
        bad = ~np.isfinite(x) if not allow_nan else np.isinf(x)
        if bad.any():
            row, col = np.argwhere(bad)[0]
            raise ModelError(f"{name}: {self.names[col]} is {x[row, col]} in row {row}")
        return x

    def update(self, predicted_mean: Any, predicted_std: Any, realised: Any) -> None:
        """Add completed (prediction, outcome) pairs: each `(n_kpis,)` or `(batch, n_kpis)`."""
        m = self._rows("predicted_mean", predicted_mean, allow_nan=False)
        s = self._rows("predicted_std", predicted_std, allow_nan=False)
        r = self._rows("realised", realised, allow_nan=True)
        if not (m.shape == s.shape == r.shape):
            raise ModelError(
                f"predicted_mean {m.shape}, predicted_std {s.shape} and realised {r.shape} must "
                "have the same shape"
            )
        if (s < 0).any():
            raise ModelError(f"predicted_std must be >= 0, got {s.min()}")
        w = self.window
        self._predicted = np.concatenate([self._predicted, m])[-w:]
        self._std = np.concatenate([self._std, s])[-w:]
        self._realised = np.concatenate([self._realised, r])[-w:]

    # -- what it knows ----------------------------------------------------------------------
    @property
    def residuals(self) -> np.ndarray:
        """Predicted minus realised `(n_pairs, n_kpis)`, oldest first (NaN where not realised)."""
        return self._predicted - self._realised

    @property
    def count(self) -> np.ndarray:
        """Completed pairs per KPI `(n_kpis,)` in the window."""
        return np.isfinite(self.residuals).sum(axis=0)

    @property
    def bias(self) -> np.ndarray:
        """Tracked bias per KPI `(n_kpis,)`: the mean residual; 0 below `MIN_PAIRS` pairs."""
        res = self.residuals
        n = self.count
        total = np.where(np.isfinite(res), res, 0.0).sum(axis=0)
        return np.where(n >= MIN_PAIRS, total / np.maximum(n, 1), 0.0)

    @property
    def bias_se(self) -> np.ndarray:
        """Standard error of the bias per KPI `(n_kpis,)`; 0 below `MIN_PAIRS` pairs."""
        res = self.residuals
        n = self.count
        ok = np.isfinite(res)
        mean = np.where(ok, res, 0.0).sum(axis=0) / np.maximum(n, 1)
        dev = np.where(ok, res - mean, 0.0)
        var = (dev * dev).sum(axis=0) / np.maximum(n - 1, 1)
        se = np.sqrt(var / np.maximum(n, 1) * self.overlap)
        return np.where(n >= MIN_PAIRS, se, 0.0)

    def coverage(self, z: float = Z90) -> np.ndarray:
        """Share of realised values inside their prediction's band mean ± z std `(n_kpis,)`
        (NaN for a KPI with no pair): how honest the published bands have been."""
        res = self.residuals
        ok = np.isfinite(res)
        inside = (np.abs(np.where(ok, res, 0.0)) <= z * self._std) & ok
        n = ok.sum(axis=0)
        return np.where(n > 0, inside.sum(axis=0) / np.maximum(n, 1), np.nan)

    def correct(self, mean: Any, std: Any) -> tuple[np.ndarray, np.ndarray]:
        """Return the corrected (mean - bias, sqrt(std² + bias_se²)), shapes as given."""
        m = self._rows("mean", mean, allow_nan=False)
        s = self._rows("std", std, allow_nan=False)
        out_m = m - self.bias
        out_s = np.sqrt(s * s + self.bias_se**2)
        shape = np.shape(mean)
        return out_m.reshape(shape), out_s.reshape(shape)

    # -- persistence ------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        """Return the tracker as plain JSON data (NaN realised values as null)."""

        def rows(a: np.ndarray) -> list[list[float | None]]:
            return [[float(v) if np.isfinite(v) else None for v in row] for row in a]

        return {
            "names": list(self.names),
            "window": self.window,
            "overlap": self.overlap,
            "predicted": rows(self._predicted),
            "std": rows(self._std),
            "realised": rows(self._realised),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BiasTracker:
        """Rebuild a tracker from `to_json` output."""
        try:
            t = cls(tuple(data["names"]), int(data["window"]), float(data["overlap"]))

            def arr(key: str) -> np.ndarray:
                a = np.array(
                    [[np.nan if v is None else v for v in row] for row in data[key]], dtype=float
                )
                return a.reshape(-1, len(t.names))

            pairs = (arr("predicted"), arr("std"), arr("realised"))
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"bias tracker data is damaged or incomplete: {exc!r}") from None
        if len(pairs[0]):
            t.update(*pairs)
        return t
