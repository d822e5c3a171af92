"""Fit the laws of processing, failure and repair times by maximum likelihood, and choose
among them by Akaike's information criterion (AIC = 2 k - 2 log L, smaller is better).

Why AIC and not a Kolmogorov-Smirnov or Anderson-Darling statistic: the candidates are fitted
by maximum likelihood on the same data, processing times are only seen to the logging interval
(ties everywhere, which the KS and AD tables do not allow for), and failures and repairs are
censored at the end of the log (which they do not allow for either). The likelihood handles
both exactly, and AIC charges the two-parameter laws (gamma, lognormal, Weibull) for the
parameter they add over the one-parameter ones, so a deterministic or exponential station is
not dressed up with a coefficient of variation it does not need. A law with fewer parameters
whose AIC is within 2 of the smallest is preferred (the usual reading of AIC differences: it
cuts the picks of a needless extra parameter from about 16% to about 5%).

Processing times are measured between two completions of a station that stayed busy, at one
speed, without failing: on a log with interval dt the observed count of intervals D of a time
X (in intervals) has P(D = d | X = x) = max(0, 1 - |x - d|) (the start falls uniformly within
an interval), so the likelihood of each law is its density smoothed by that triangle, computed
by Gauss-Legendre quadrature. A 1% share of intervals one log interval longer, the same for
every law, absorbs the few that hide an unlogged pause shorter than one interval (a uniform
contamination instead would eat the tail of wide laws and bias their mean and cv down).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, get_args

import numpy as np

from linetwin.twin.calibrate.numeric import covariance, nelder_mead, norm_logsf, tri_nodes
from linetwin.twin.spec import Station

CONTAMINATION = 0.01
AIC_MARGIN = 2.0  # a law with fewer parameters within this of the smallest AIC is preferred
Z95 = 1.959963984540054
_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)


def available_laws() -> dict[str, tuple[str, ...]]:
    """The laws the installed line spec accepts: processing, failure and repair."""
    fields = Station.model_fields
    out = {"processing": tuple(get_args(fields["processing"].annotation))}
    out["failure"] = (
        tuple(get_args(fields["failure_law"].annotation))
        if "failure_law" in fields
        else ("exponential",)
    )
    out["repair"] = (
        tuple(get_args(fields["repair_law"].annotation))
        if "repair_law" in fields
        else ("exponential",)
    )
    return out


@dataclass
class LawFit:
    """One law fitted by maximum likelihood: its mean (s), cv or shape, their standard errors
    and 95% intervals (NaN where not defined), its log-likelihood and AIC."""

    law: str
    mean: float
    mean_se: float
    mean_low: float
    mean_high: float
    log_lik: float
    n_params: int
    shape: float = math.nan  # cv (gamma, lognormal) or Weibull shape
    shape_se: float = math.nan
    shape_low: float = math.nan
    shape_high: float = math.nan

    @property
    def aic(self) -> float:
        """Akaike's information criterion, 2 k - 2 log L."""
        return 2.0 * self.n_params - 2.0 * self.log_lik

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready summary."""
        return {
            "law": self.law,
            "mean": self.mean,
            "shape": None if math.isnan(self.shape) else self.shape,
            "log_lik": self.log_lik,
            "aic": self.aic,
        }


@dataclass
class LawChoice:
    """The law chosen for one station's processing, failure or repair times, and why."""

    what: str
    chosen: LawFit | None
    candidates: list[LawFit] = field(default_factory=list)
    reason: str = ""

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready summary."""
        return {
            "what": self.what,
            "law": None if self.chosen is None else self.chosen.law,
            "criterion": "AIC",
            "reason": self.reason,
            "candidates": [c.as_dict() for c in self.candidates],
        }


def _log_interval(value: float, se_log: float) -> tuple[float, float, float]:
    """SE and 95% interval of a positive estimate with standard error `se_log` of its log."""
    if not math.isfinite(se_log):
        return math.nan, math.nan, math.nan
    return value * se_log, value * math.exp(-Z95 * se_log), value * math.exp(Z95 * se_log)


def choose(what: str, fits: list[LawFit]) -> LawChoice:
    """Pick the fit with the smallest AIC and say why, with the runner-up's AIC difference."""
    ok = [f for f in fits if math.isfinite(f.log_lik)]
    if not ok:
        return LawChoice(what, None, fits, "no law could be fitted")
    ok.sort(key=lambda f: f.aic)
    best = ok[0]
    if len(ok) == 1:
        return LawChoice(what, best, fits, f"{best.law}: the only law that fits")
    near = [f for f in ok if f.aic - best.aic < AIC_MARGIN and f.n_params < best.n_params]
    if near:
        simple = min(near, key=lambda f: (f.n_params, f.aic))
        reason = (
            f"AIC within {AIC_MARGIN:g} of {best.law}'s ({simple.aic - best.aic:.1f} more) "
            f"with fewer parameters"
        )
        return LawChoice(what, simple, fits, reason)
    gap = ok[1].aic - best.aic
    reason = f"smallest AIC ({best.aic:.1f}); next {ok[1].law} by {gap:.1f}"
    return LawChoice(what, best, fits, reason)


# ---------------------------------------------------------------- processing times


@dataclass(frozen=True)
class IntervalData:
    """Clean processing intervals of one station, grouped: `d (m,)` whole log intervals,
    `v (m,)` work per log interval (speed times interval, s of work at speed 1.0), `n (m,)`
    how many intervals had that (d, v)."""

    d: np.ndarray
    v: np.ndarray
    n: np.ndarray

    @property
    def count(self) -> int:
        """Number of intervals."""
        return int(self.n.sum())


def _smoothed(data: IntervalData, law: str, mean: float, cv: float) -> np.ndarray:
    """P(D = d) for each group under `law` with `mean` (s of work) and `cv`, `(m,)`."""
    scale = mean / data.v  # mean in log intervals
    if law == "deterministic":
        return np.maximum(0.0, 1.0 - np.abs(scale - data.d))
    if law == "exponential":
        rel = (0.0, 40.0)
    elif law == "gamma":
        rel = (max(0.0, 1.0 - 7.0 * cv), 1.0 + 14.0 * cv)
    else:
        sig = math.sqrt(math.log1p(cv * cv))
        rel = (math.exp(-0.5 * sig * sig - 7.0 * sig), math.exp(-0.5 * sig * sig + 9.0 * sig))
    nodes, weights = tri_nodes(data.d.astype(float), rel[0] * scale, rel[1] * scale)
    x = np.maximum(nodes / scale[:, None], 1e-300)  # in units of the mean
    pos = nodes > 0
    if law == "exponential":
        dens = np.exp(-x)
    elif law == "gamma":
        k = 1.0 / (cv * cv)
        dens = np.exp(k * math.log(k) + (k - 1.0) * np.log(x) - k * x - math.lgamma(k))
    else:  # lognormal
        s2 = math.log1p(cv * cv)
        s = math.sqrt(s2)
        z = (np.log(x) + 0.5 * s2) / s
        dens = np.exp(-0.5 * z * z - _LOG_SQRT_2PI) / (s * x)
    dens = np.where(pos, dens, 0.0) / scale[:, None]
    return np.asarray((dens * weights).sum(axis=1))


def _processing_nll(data: IntervalData, law: str, mean: float, cv: float) -> float:
    p = _smoothed(data, law, mean, cv)
    late = _smoothed(IntervalData(data.d - 1, data.v, data.n), law, mean, cv)
    mix = (1.0 - CONTAMINATION) * p + CONTAMINATION * late + 1e-12
    return float(-(data.n * np.log(mix)).sum())


def fit_processing(data: IntervalData, laws: tuple[str, ...], mean0: float) -> list[LawFit]:
    """Fit each processing law of `laws` to the intervals; `mean0` (s) starts the search."""
    fits = []
    # a start for the cv: the moments of the work per interval, less the rounding's v² / 6
    w = data.d * data.v
    m1 = float((data.n * w).sum() / data.n.sum())
    var = float(
        (data.n * (w - m1) ** 2).sum() / data.n.sum()
        - (data.n * data.v**2).sum() / (6 * data.n.sum())
    )
    cv0 = min(max(math.sqrt(max(var, 0.0)) / max(m1, 1e-9), 0.05), 0.95)
    for law in laws:
        if law in ("exponential", "deterministic"):

            def f1(x: np.ndarray, law: str = law) -> float:
                return _processing_nll(data, law, math.exp(x[0]), 1.0)

            if law == "deterministic":  # piecewise linear: a grid first
                grid = np.log(mean0) + np.linspace(-0.3, 0.3, 121)
                start = grid[int(np.argmin([f1(np.array([g])) for g in grid]))]
                x, v = nelder_mead(f1, np.array([start]), step=0.002)
            else:
                x, v = nelder_mead(f1, np.array([math.log(mean0)]), step=0.05)
            cov = covariance(f1, x)
            se_log = math.sqrt(cov[0, 0]) if cov is not None else math.nan
            mean = math.exp(x[0])
            se, lo, hi = _log_interval(mean, se_log)
            fits.append(LawFit(law, mean, se, lo, hi, -v, 1))
            continue

        def f2(x: np.ndarray, law: str = law) -> float:
            cv = math.exp(x[1])
            if not 0.02 <= cv <= (1.0 if law == "gamma" else 3.0):
                return math.inf
            return _processing_nll(data, law, math.exp(x[0]), cv)

        x, v = nelder_mead(f2, np.array([math.log(mean0), math.log(cv0)]), step=0.1)
        cov = covariance(f2, x)
        mean, cv = math.exp(x[0]), math.exp(x[1])
        se_m = math.sqrt(cov[0, 0]) if cov is not None else math.nan
        se_c = math.sqrt(cov[1, 1]) if cov is not None else math.nan
        m_se, m_lo, m_hi = _log_interval(mean, se_m)
        c_se, c_lo, c_hi = _log_interval(cv, se_c)
        fits.append(LawFit(law, mean, m_se, m_lo, m_hi, -v, 2, cv, c_se, c_lo, c_hi))
    return fits


# ---------------------------------------------------------------- failures and repairs


@dataclass(frozen=True)
class Lifetimes:
    """Busy times to failure (or repair times) of one station, s: `start (m,)` the age at
    which each observation starts (left truncation, 0 for none), `end (m,)` its age at the
    failure or at the end of the log, `event (m,)` True for an observed failure (False:
    censored)."""

    start: np.ndarray
    end: np.ndarray
    event: np.ndarray

    @property
    def n_events(self) -> int:
        """Number of observed events."""
        return int(self.event.sum())

    @property
    def exposure(self) -> float:
        """Total time at risk, s."""
        return float((self.end - self.start).sum())


def fit_exponential(life: Lifetimes) -> LawFit:
    """Exponential law with censoring: mean = exposure / events; the interval of the log-mean
    uses its standard error 1 / sqrt(events)."""
    r = life.n_events
    mean = life.exposure / r
    se, lo, hi = _log_interval(mean, 1.0 / math.sqrt(r))
    ll = -r * math.log(mean) - life.exposure / mean
    return LawFit("exponential", mean, se, lo, hi, ll, 1)


def _weibull_nll(life: Lifetimes, eta: float, k: float) -> float:
    t = np.maximum(life.end, 1e-9) / eta
    a = life.start / eta
    ev = life.event
    ll = (ev * (math.log(k) - math.log(eta) + (k - 1.0) * np.log(t))).sum()
    ll -= (t**k - a**k).sum()
    return float(-ll)


def fit_weibull(life: Lifetimes, shape: float | None = None) -> LawFit:
    """Weibull law with censoring and left truncation; `shape` fixed if given. `mean` is
    scale * Gamma(1 + 1 / shape); the intervals come from the observed information."""
    if shape is not None:
        k = shape
        eta = float(((life.end**k - life.start**k).sum() / life.n_events) ** (1.0 / k))
        mean = eta * math.gamma(1.0 + 1.0 / k)
        se, lo, hi = _log_interval(mean, 1.0 / (k * math.sqrt(life.n_events)))
        return LawFit("weibull", mean, se, lo, hi, -_weibull_nll(life, eta, k), 1, k)

    def f(x: np.ndarray) -> float:
        k = math.exp(x[1])
        if not 0.1 <= k <= 20.0:
            return math.inf
        return _weibull_nll(life, math.exp(x[0]), k)

    eta0 = life.exposure / life.n_events
    x, v = nelder_mead(f, np.array([math.log(eta0), 0.0]), step=0.2)
    eta, k = math.exp(x[0]), math.exp(x[1])
    mean = eta * math.gamma(1.0 + 1.0 / k)
    cov = covariance(f, x)
    if cov is None:
        return LawFit("weibull", mean, math.nan, math.nan, math.nan, -v, 2, k)
    h = 1e-5
    dlg = (math.lgamma(1.0 + 1.0 / (k * math.exp(h))) - math.lgamma(1.0 + 1.0 / k)) / h
    grad = np.array([1.0, dlg])
    se_log_mean = math.sqrt(max(float(grad @ cov @ grad), 0.0))
    m_se, m_lo, m_hi = _log_interval(mean, se_log_mean)
    k_se, k_lo, k_hi = _log_interval(k, math.sqrt(cov[1, 1]))
    return LawFit("weibull", mean, m_se, m_lo, m_hi, -v, 2, k, k_se, k_lo, k_hi)


def _lognormal_nll(life: Lifetimes, mu: float, sigma: float) -> float:
    t = np.maximum(life.end, 1e-9)
    z = (np.log(t) - mu) / sigma
    ev = life.event
    ll = (-np.log(t[ev]) - math.log(sigma) - _LOG_SQRT_2PI - 0.5 * z[ev] ** 2).sum()
    ll += norm_logsf(z[~ev]).sum()
    return float(-ll)


def fit_lognormal(life: Lifetimes, cv: float | None = None) -> LawFit:
    """Lognormal law of repair times with censoring; `cv` fixed if given. Mean and cv with
    intervals from the observed information."""
    logs = np.log(np.maximum(life.end[life.event], 1e-9))
    if cv is not None:
        sigma = math.sqrt(math.log1p(cv * cv))

        def f1(x: np.ndarray) -> float:
            return _lognormal_nll(life, x[0], sigma)

        x, v = nelder_mead(f1, np.array([float(logs.mean())]), step=0.1)
        mean = math.exp(x[0] + 0.5 * sigma * sigma)
        se, lo, hi = _log_interval(mean, sigma / math.sqrt(life.n_events))
        return LawFit("lognormal", mean, se, lo, hi, -v, 1, cv)

    def f(x: np.ndarray) -> float:
        s = math.exp(x[1])
        if not 0.01 <= s <= 3.0:
            return math.inf
        return _lognormal_nll(life, x[0], s)

    s0 = float(logs.std()) if logs.size > 1 and logs.std() > 0.02 else 0.5
    x, v = nelder_mead(f, np.array([float(logs.mean()), math.log(s0)]), step=0.2)
    mu, s = x[0], math.exp(x[1])
    mean = math.exp(mu + 0.5 * s * s)
    cv = math.sqrt(math.expm1(s * s))
    cov = covariance(f, x)
    if cov is None:
        return LawFit("lognormal", mean, math.nan, math.nan, math.nan, -v, 2, cv)
    # log mean = mu + s^2 / 2 with s = exp(x1): gradient (1, s^2)
    g = np.array([1.0, s * s])
    m_se, m_lo, m_hi = _log_interval(mean, math.sqrt(max(float(g @ cov @ g), 0.0)))
    # log cv = 0.5 log(expm1(s^2)): d/dx1 = s^2 exp(s^2) / expm1(s^2)
    dc = s * s * math.exp(s * s) / math.expm1(s * s)
    c_se, c_lo, c_hi = _log_interval(cv, abs(dc) * math.sqrt(cov[1, 1]))
    return LawFit("lognormal", mean, m_se, m_lo, m_hi, -v, 2, cv, c_se, c_lo, c_hi)
