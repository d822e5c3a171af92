"""Estimate each station's parameters from a `LogScan`, with standard errors and 95%
intervals, and say for every parameter whether it was fitted or kept from the skeleton, and why.

Estimators (s: speed setpoint, nominal: its nominal value):

- `cycle_time_s`: busy work per part, sum(busy time x speed) / parts finished (the twin's
  processing time is cycle_time_s / speed); batch-means standard error over consecutive
  stretches of the log (robust to the line's correlations), Student-t interval.
- speed scaling of the processing time (a check, not a spec key: the twin assumes time per
  part proportional to 1 / speed): the slope of log(busy time per part) on log(speed) over
  the speed levels of the log, weighted least squares; 1 is what the twin assumes.
- `processing` and `cv`: the law with the smallest AIC (`twin.calibrate.laws`).
- `mtbf_s` (and `failure_law`, `failure_shape`): maximum likelihood on the busy times
  between failures, censored at the end of the log; `mttr_s` (and `repair_law`,
  `repair_cv`) on the repair times, censored too.
- `scrap.base`, `scrap.speed_gain`, `scrap.temperature_gain`: least squares of scrapped on
  finished parts against (1, max(s - nominal, 0)², excess °C²), weighted 1 / parts, with the
  binomial sandwich covariance; a gain the log cannot show (no part finished above nominal
  speed, or outside the ideal window) keeps the skeleton's value.
- `energy.idle_kw`: mean power reading while not busy; `energy.run_kw` and
  `energy.speed_exponent`: weighted least squares of log(mean busy power) on log(s / nominal)
  over the speed levels (heating taken off the readings with the skeleton's heater).
- `thermal.time_constant_s`: from pairs of temperature readings one lag apart while the
  setpoint holds, (T(t + lag) - set) = (T(t) - set) exp(-lag / tau), least squares through
  the origin on the transients (further than 3 °C from the setpoint), the sum of squares
  corrected for the skeleton's temperature sensor noise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from linetwin.twin.calibrate.events import SPEED_QUANTUM, LogScan
from linetwin.twin.calibrate.laws import (
    Z95,
    IntervalData,
    LawChoice,
    LawFit,
    Lifetimes,
    choose,
    fit_exponential,
    fit_lognormal,
    fit_processing,
    fit_weibull,
)
from linetwin.twin.spec import Station
from linetwin.twin.stats import t975

MIN_PARTS = 20
MIN_INTERVALS = 50
MIN_FAILURES = 3
MIN_FAILURES_FOR_LAW = 10
MIN_PARTS_FOR_GAIN = 100
MIN_READINGS = 10
MIN_THERMAL_PAIRS = 30
N_BATCHES = 20


@dataclass
class ParamFit:
    """One parameter of one station: the value written to the fitted spec, its standard error
    and 95% interval (None where not estimated), whether it was `fitted` from the log or
    `kept` from the skeleton (or is a `check` outside the spec), and why."""

    station: str
    key: str
    value: Any
    status: str
    reason: str
    skeleton: Any = None
    se: float | None = None
    low: float | None = None
    high: float | None = None
    n: int | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        out = dict(self.__dict__)
        for k in ("value", "se", "low", "high", "skeleton"):
            v = out[k]
            if isinstance(v, float) and not math.isfinite(v):
                out[k] = None
        return out


@dataclass
class StationFit:
    """Everything fitted for one station: parameters, law choices and the spec updates."""

    params: list[ParamFit]
    laws: list[LawChoice]
    updates: dict[str, Any]
    intervals: IntervalData | None = None
    lifetimes: dict[str, Lifetimes] = field(default_factory=dict)  # "failures", "repairs"


def _num(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def _get(st: Station, key: str) -> Any:
    obj: Any = st
    for part in key.split("."):
        obj = getattr(obj, part, None) if obj is not None else None
    return obj


class _Fitter:
    def __init__(self, scan: LogScan, j: int, laws: dict[str, tuple[str, ...]]) -> None:
        self.scan = scan
        self.j = j
        self.st = scan.spec.stations[j]
        self.laws = laws
        self.params: list[ParamFit] = []
        self.choices: list[LawChoice] = []
        self.updates: dict[str, Any] = {}
        self.intervals: IntervalData | None = None
        self.lifetimes: dict[str, Lifetimes] = {}

    def fitted(
        self,
        key: str,
        value: Any,
        reason: str,
        se: float | None = None,
        low: float | None = None,
        high: float | None = None,
        n: int | None = None,
    ) -> None:
        self.updates[key] = value
        self.params.append(
            ParamFit(
                self.st.name, key, value, "fitted", reason, _get(self.st, key),
                _num(se), _num(low), _num(high), n,
            )
        )  # fmt: skip

    def kept(self, key: str, reason: str, n: int | None = None) -> None:
        value = _get(self.st, key)
        self.params.append(ParamFit(self.st.name, key, value, "kept", reason, value, n=n))

    # ------------------------------------------------------------ processing

    def processing(self) -> None:
        s = self.scan
        parts = np.array([b[self.j] for b in s.block_parts]) if s.block_parts else np.zeros(0)
        work = np.array([b[self.j] for b in s.block_work]) if s.block_work else np.zeros(0)
        total = float(parts.sum())
        cv_for_se = 1.0
        if total < MIN_PARTS:
            self.kept("cycle_time_s", f"only {total:.0f} parts finished in the fitting part "
                      f"of the log (need {MIN_PARTS})", int(total))  # fmt: skip
            self.kept("processing", "too few parts to tell the law")
            return
        mean = float(work.sum()) / total
        law_fit = self._law(mean)
        if law_fit is not None and math.isfinite(law_fit.shape):
            cv_for_se = law_fit.shape
        elif law_fit is not None and law_fit.law == "deterministic":
            cv_for_se = 0.0
        batches = min(N_BATCHES, parts.size)
        se = math.nan
        df = 0
        if batches >= 5:
            edges = np.linspace(0, parts.size, batches + 1).astype(int)
            wb = np.add.reduceat(work, edges[:-1])
            pb = np.add.reduceat(parts, edges[:-1])
            resid = (wb - mean * pb) / pb.mean()
            se = math.sqrt(float((resid**2).sum()) / (batches * (batches - 1)))
            df = batches - 1
        if not math.isfinite(se) or se <= 0:
            se = max(cv_for_se, 0.05) * mean / math.sqrt(total)
            df = max(int(total) - 1, 1)
        half = t975(df) * se
        self.fitted(
            "cycle_time_s", _round(mean), "busy work per finished part, batch-means interval",
            se, mean - half, mean + half, int(total),
        )  # fmt: skip
        self._speed_scaling(cv_for_se)

    def _law(self, mean: float) -> LawFit | None:
        s, j = self.scan, self.j
        rows = [(d, lev, c) for (jj, d, lev), c in s.intervals.items() if jj == j]
        count = sum(c for _, _, c in rows)
        if count < MIN_INTERVALS:
            self.kept("processing", f"only {count} clean processing intervals in the log "
                      f"(need {MIN_INTERVALS}): law kept", count)  # fmt: skip
            if self.st.processing in ("gamma", "lognormal"):
                self.kept("cv", "law kept")
            return None
        arr = np.array(rows, dtype=float)
        data = IntervalData(arr[:, 0].astype(np.int64), arr[:, 1] * SPEED_QUANTUM * s.dt, arr[:, 2])
        self.intervals = data
        fits = fit_processing(data, self.laws["processing"], mean)
        choice = choose(f"{self.st.name}: processing", fits)
        self.choices.append(choice)
        best = choice.chosen
        if best is None:
            self.kept("processing", choice.reason, count)
            return None
        self.fitted("processing", best.law, choice.reason, n=count)
        if best.law in ("gamma", "lognormal"):
            self.fitted(
                "cv", _round(best.shape), f"maximum likelihood under {best.law}",
                best.shape_se, best.shape_low, best.shape_high, count,
            )  # fmt: skip
        elif "cv" in Station.model_fields:
            self.updates["cv"] = None
        return best

    def _speed_scaling(self, cv: float) -> None:
        rows = [
            (lev * SPEED_QUANTUM, b, p)
            for (jj, lev), (b, p) in self.scan.by_speed.items()
            if jj == self.j and p >= MIN_PARTS and b > 0
        ]
        key = "speed_scaling"
        if len(rows) < 2 or _spread([r[0] for r in rows]) < 0.05:
            self.params.append(
                ParamFit(self.st.name, key, None, "check",
                         "not identifiable: the speed never moved far enough (need two speed "
                         "levels 5% apart with parts finished at each); the twin assumes 1")
            )  # fmt: skip
            return
        x = np.log([r[0] for r in rows])
        y = np.log([r[1] / r[2] for r in rows])
        w = np.array([r[2] for r in rows]) / max(cv, 0.05) ** 2
        slope, se = _wls_slope(x, y, w)
        self.params.append(
            ParamFit(self.st.name, key, -slope, "check",
                     "minus the slope of log(busy time per part) on log(speed); the twin "
                     "assumes 1", 1.0, se, -slope - Z95 * se, -slope + Z95 * se, len(rows))
        )  # fmt: skip

    # ------------------------------------------------------------ failures and repairs

    def failures(self) -> None:
        seg = self.scan.failures
        life = Lifetimes(
            np.array(seg.start[self.j]), np.array(seg.end[self.j]),
            np.array(seg.event[self.j], dtype=bool),
        )  # fmt: skip
        self.lifetimes["failures"] = life
        r = life.n_events
        hours = life.exposure / 3600.0 if life.start.size else 0.0
        if r < MIN_FAILURES:
            why = (
                "the station never failed" if r == 0 else f"the station failed only {r} times"
            ) + f" in {hours:.1f} busy hours (need {MIN_FAILURES})"
            if r == 0 and life.exposure > 0:
                why += (
                    f"; 95% lower bound on the mean busy time between failures: "
                    f"{life.exposure / 3.0:.4g} s"
                )
            self.kept("mtbf_s", why, r)
            return
        st = self.st
        laws = self.laws["failure"]
        if r >= MIN_FAILURES_FOR_LAW and "weibull" in laws:
            choice = choose(f"{st.name}: failures", [fit_exponential(life), fit_weibull(life)])
            best = choice.chosen
            why = choice.reason
            self.choices.append(choice)
        elif getattr(st, "failure_law", "exponential") == "weibull":
            best = fit_weibull(life, getattr(st, "failure_shape", None))
            why = f"{r} failures (fewer than {MIN_FAILURES_FOR_LAW}): Weibull shape kept"
        else:
            best = fit_exponential(life)
            why = (
                f"exponential ({r} failures: too few to choose a law)"
                if r < MIN_FAILURES_FOR_LAW
                else "exponential: the only law the spec has"
            )
        assert best is not None
        self.fitted(
            "mtbf_s", _round(best.mean),
            f"maximum likelihood, censored at the end of the log; law {best.law}: {why}",
            best.mean_se, best.mean_low, best.mean_high, r,
        )  # fmt: skip
        if "failure_law" in Station.model_fields:
            self.updates["failure_law"] = best.law
            if best.law == "weibull":
                if best.n_params == 2:
                    self.fitted("failure_shape", _round(best.shape), "maximum likelihood",
                                best.shape_se, best.shape_low, best.shape_high, r)  # fmt: skip
                else:
                    self.updates["failure_shape"] = best.shape
            else:
                self.updates["failure_shape"] = None

    def repairs(self) -> None:
        seg = self.scan.repairs
        life = Lifetimes(
            np.array(seg.start[self.j]), np.array(seg.end[self.j]),
            np.array(seg.event[self.j], dtype=bool),
        )  # fmt: skip
        self.lifetimes["repairs"] = life
        r = life.n_events
        st = self.st
        if r < MIN_FAILURES:
            self.kept("mttr_s", f"only {r} complete repairs in the log (need {MIN_FAILURES})", r)
            return
        laws = self.laws["repair"]
        if r >= MIN_FAILURES_FOR_LAW and "lognormal" in laws:
            choice = choose(f"{st.name}: repairs", [fit_exponential(life), fit_lognormal(life)])
            best = choice.chosen
            why = choice.reason
            self.choices.append(choice)
        elif getattr(st, "repair_law", "exponential") == "lognormal":
            best = fit_lognormal(life, getattr(st, "repair_cv", None))
            why = f"{r} repairs (fewer than {MIN_FAILURES_FOR_LAW}): lognormal cv kept"
        else:
            best = fit_exponential(life)
            why = "exponential"
        assert best is not None
        self.fitted(
            "mttr_s", _round(best.mean),
            f"maximum likelihood, censored at the end of the log; law {best.law}: {why}",
            best.mean_se, best.mean_low, best.mean_high, r,
        )  # fmt: skip
        if "repair_law" in Station.model_fields:
            self.updates["repair_law"] = best.law
            if best.law == "lognormal":
                if best.n_params == 2:
                    self.fitted("repair_cv", _round(best.shape), "maximum likelihood",
                                best.shape_se, best.shape_low, best.shape_high, r)  # fmt: skip
                else:
                    self.updates["repair_cv"] = best.shape
            else:
                self.updates["repair_cv"] = None

    # ------------------------------------------------------------ scrap

    def scrap(self) -> None:
        s, j, st = self.scan, self.j, self.st
        a, b, m3 = s.scrap_a[j], s.scrap_b[j], s.scrap_m3[j]
        parts = s.scrap_parts[j]
        keys = ("scrap.base", "scrap.speed_gain", "scrap.temperature_gain")
        skel = np.array([st.scrap.base, st.scrap.speed_gain, st.scrap.temperature_gain])
        if parts[0] < MIN_PARTS_FOR_GAIN:
            for k in keys if st.thermal else keys[:2]:
                self.kept(k, f"only {parts[0]:.0f} parts finished (need {MIN_PARTS_FOR_GAIN})")
            return
        free = [0]
        why: dict[int, str] = {}
        if parts[1] >= MIN_PARTS_FOR_GAIN:
            free.append(1)
        else:
            why[1] = (
                f"{parts[1]:.0f} parts finished above nominal speed (need "
                f"{MIN_PARTS_FOR_GAIN}): the speed penalty is not identifiable"
            )
        if st.thermal is not None:
            if parts[2] >= MIN_PARTS_FOR_GAIN:
                free.append(2)
            else:
                why[2] = (
                    f"{parts[2]:.0f} parts finished outside the ideal temperature window "
                    f"(need {MIN_PARTS_FOR_GAIN}): the temperature penalty is not identifiable"
                )
        theta = skel.copy()
        clipped: set[int] = set()
        cov = np.zeros((3, 3))
        while True:
            fixed = [i for i in range(3) if i not in free]
            rhs = b[free] - a[np.ix_(free, fixed)] @ theta[fixed]
            sub = a[np.ix_(free, free)]
            try:
                est = np.linalg.solve(sub, rhs)
            except np.linalg.LinAlgError:
                est = np.linalg.lstsq(sub, rhs, rcond=None)[0]
            neg = [free[i] for i in range(len(free)) if est[i] < 0 and free[i] != 0]
            if not neg:
                theta[free] = est
                break
            for i in neg:
                free.remove(i)
                clipped.add(i)
                theta[i] = 0.0
        theta[0] = max(theta[0], 0.0)
        meat = np.tensordot(m3, np.maximum(theta, 0.0), axes=([2], [0]))
        inv = np.linalg.pinv(a[np.ix_(free, free)])
        cov_free = inv @ meat[np.ix_(free, free)] @ inv
        for n_i, i in enumerate(free):
            cov[i, i] = cov_free[n_i, n_i]
        for i, key in enumerate(keys):
            if i == 2 and st.thermal is None:
                continue
            if i in free:
                se = math.sqrt(max(cov[i, i], 0.0))
                self.fitted(key, _round(theta[i]), "least squares of scrapped on finished parts",
                            se, max(theta[i] - Z95 * se, 0.0), theta[i] + Z95 * se,
                            int(parts[0]))  # fmt: skip
            elif i in clipped:
                self.fitted(key, 0.0, "the fit was negative (no effect the log can show): 0",
                            n=int(parts[0]))  # fmt: skip
            else:
                self.kept(key, why.get(i, "not identifiable"))
        if theta[0] > 1.0:
            self.updates["scrap.base"] = 1.0

    # ------------------------------------------------------------ energy

    def energy(self) -> None:
        s, j, st = self.scan, self.j, self.st
        s1, s2, c = s.power_idle[j]
        if c >= MIN_READINGS:
            m = s1 / c
            sd = math.sqrt(max(s2 / c - m * m, 0.0) * c / max(c - 1, 1))
            se = sd / math.sqrt(c)
            self.fitted("energy.idle_kw", _round(max(m, 0.0)), "mean power reading while not busy",
                        se, m - Z95 * se, m + Z95 * se, int(c))  # fmt: skip
        else:
            self.kept("energy.idle_kw", f"only {c:.0f} valid power readings while not busy")
        nom = st.setpoints.speed.nominal
        rows = []
        for (jj, lev), (a1, a2, n) in s.power_busy.items():
            if jj != j or n < MIN_READINGS:
                continue
            m = a1 / n
            sd = math.sqrt(max(a2 / n - m * m, 0.0) * n / max(n - 1, 1))
            rows.append((lev * SPEED_QUANTUM / nom, m, sd / math.sqrt(n), n))
        rows = [r for r in rows if r[1] > 0]
        if not rows:
            self.kept("energy.run_kw", "too few valid power readings while busy")
            self.kept("energy.speed_exponent", "too few valid power readings while busy")
            return
        n_total = int(sum(r[3] for r in rows))
        if len(rows) >= 2 and _spread([r[0] for r in rows]) >= 0.05:
            x = np.log([r[0] for r in rows])
            y = np.log([r[1] for r in rows])
            w = np.array([(r[1] / max(r[2], 1e-9)) ** 2 for r in rows])
            slope, se_slope, icpt, se_icpt = _wls(x, y, w)
            run = math.exp(icpt)
            self.fitted("energy.run_kw", _round(run), "log busy power on log speed ratio, at 1",
                        run * se_icpt, run * math.exp(-Z95 * se_icpt),
                        run * math.exp(Z95 * se_icpt), n_total)  # fmt: skip
            if slope < 0:
                self.fitted("energy.speed_exponent", 0.0,
                            "the fitted slope was negative: 0", n=n_total)  # fmt: skip
            else:
                self.fitted("energy.speed_exponent", _round(slope),
                            "slope of log busy power on log speed ratio", se_slope,
                            slope - Z95 * se_slope, slope + Z95 * se_slope, n_total)  # fmt: skip
            return
        e = st.energy.speed_exponent
        ratio, m, se, n = max(rows, key=lambda r: r[3])
        run = m / ratio**e
        self.fitted("energy.run_kw", _round(run),
                    f"mean busy power at speed ratio {ratio:.3g}, scaled with the kept exponent",
                    se / ratio**e, (m - Z95 * se) / ratio**e, (m + Z95 * se) / ratio**e,
                    int(n))  # fmt: skip
        self.kept("energy.speed_exponent",
                  "not identifiable: the speed never moved (one speed level)")  # fmt: skip

    # ------------------------------------------------------------ thermal

    def thermal(self) -> None:
        st = self.st
        if st.thermal is None:
            return
        acc = self.scan.thermal.get(self.j)
        key = "thermal.time_constant_s"
        if acc is None or acc[3] < MIN_THERMAL_PAIRS:
            count = 0 if acc is None else int(acc[3])
            why = f"{count} readings far from a held temperature setpoint (need "
            self.kept(key, why + f"{MIN_THERMAL_PAIRS}): the setpoint never moved far enough")
            return
        sxy, sxx, syy, n, slag = acc
        noise = st.sensors.temperature_noise_c**2 * n  # reading noise inflates sum x²
        sxx = max(sxx - noise, 0.5 * sxx)
        a = sxy / sxx
        lag = slag / n
        if not 0.0 < a < 1.0:
            self.kept(key, f"the temperature did not approach its setpoint (ratio {a:.3g})")
            return
        res = max(syy - a * sxy, 0.0) / max(n - 1, 1)
        se_a = math.sqrt(res / sxx)
        tau = -lag / math.log(a)
        se_tau = tau * se_a / (a * abs(math.log(a)))
        lo_a, hi_a = max(a - Z95 * se_a, 1e-9), min(a + Z95 * se_a, 1 - 1e-9)
        self.fitted(key, _round(tau), f"first-order response over {lag:.0f} s lags", se_tau,
                    -lag / math.log(lo_a), -lag / math.log(hi_a), int(n))  # fmt: skip


def fit_station(scan: LogScan, j: int, laws: dict[str, tuple[str, ...]]) -> StationFit:
    """Fit every parameter of station `j` of `scan.spec` from `scan`."""
    f = _Fitter(scan, j, laws)
    f.processing()
    f.failures()
    f.repairs()
    _pair_failures(f)
    f.scrap()
    f.energy()
    f.thermal()
    return StationFit(f.params, f.choices, f.updates, f.intervals, f.lifetimes)


def _pair_failures(f: _Fitter) -> None:
    """mtbf_s and mttr_s come together: fitting one where neither the log nor the skeleton
    gives the other would leave a spec the loader refuses; keep both then, and say so."""
    st = f.st
    has_mtbf = "mtbf_s" in f.updates or st.mtbf_s is not None
    has_mttr = "mttr_s" in f.updates or st.mttr_s is not None
    if has_mtbf and has_mttr:
        return
    for key in ("mtbf_s", "mttr_s", "failure_law", "failure_shape", "repair_law", "repair_cv"):
        f.updates.pop(key, None)
    for p in f.params:
        if p.key in ("mtbf_s", "mttr_s", "failure_shape", "repair_cv") and p.status == "fitted":
            p.status = "kept"
            p.reason += "; not written: mtbf_s and mttr_s come together and the other is unknown"
            p.value = p.skeleton


def _round(x: float) -> float:
    """`x` to 6 significant digits (the spec file stays readable)."""
    if x == 0 or not math.isfinite(x):
        return float(x)
    return float(f"{x:.6g}")


def _spread(values: list[float]) -> float:
    v = np.log(np.asarray(values, dtype=float))
    return float(v.max() - v.min())


def _wls(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> tuple[float, float, float, float]:
    """Weighted least squares y = a + b x with known variances 1 / w: b, se(b), a, se(a)."""
    sw, sx, sy = w.sum(), (w * x).sum(), (w * y).sum()
    sxx, sxy = (w * x * x).sum(), (w * x * y).sum()
    det = sw * sxx - sx * sx
    b = (sw * sxy - sx * sy) / det
    a = (sy - b * sx) / sw
    resid = y - a - b * x
    chi2 = float((w * resid**2).sum())
    scale = max(chi2 / max(x.size - 2, 1), 1.0) if x.size > 2 else 1.0
    return float(b), math.sqrt(scale * sw / det), float(a), math.sqrt(scale * sxx / det)


def _wls_slope(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> tuple[float, float]:
    b, se, _, _ = _wls(x, y, w)
    return b, se
