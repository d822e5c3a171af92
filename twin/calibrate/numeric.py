"""Small numerical tools of the fits: a Nelder-Mead minimiser, a numerical Hessian, the
normal distribution and Gauss-Legendre nodes (numpy only: the package does not need scipy)."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

_ERFC = np.frompyfunc(math.erfc, 1, 1)
_GL_X, _GL_W = np.polynomial.legendre.leggauss(20)


def norm_sf(z: np.ndarray) -> np.ndarray:
    """Upper tail of the standard normal distribution, elementwise, accurate in the far tail."""
    return np.asarray(_ERFC(np.asarray(z, dtype=float) / math.sqrt(2.0)), dtype=float) * 0.5


def norm_logsf(z: np.ndarray) -> np.ndarray:
    """log of `norm_sf`, without -inf before z = 37."""
    return np.log(np.maximum(norm_sf(z), 1e-300))


def nelder_mead(
    f: Callable[[np.ndarray], float],
    x0: np.ndarray,
    step: float = 0.3,
    tol: float = 1e-9,
    max_iter: int = 600,
) -> tuple[np.ndarray, float]:
    """Minimise `f` from `x0` (a few dimensions); return the minimiser and the minimum.

    Non-finite values of `f` count as +inf, so a bounded problem can return inf outside.
    """

    def g(x: np.ndarray) -> float:
        v = f(x)
        return v if math.isfinite(v) else math.inf

    n = x0.size
    pts = [np.asarray(x0, dtype=float)]
    for i in range(n):
        p = pts[0].copy()
        p[i] += step
        pts.append(p)
    vals = [g(p) for p in pts]
    for _ in range(max_iter):
        order = np.argsort(vals)
        pts = [pts[i] for i in order]
        vals = [vals[i] for i in order]
        if (
            abs(vals[-1] - vals[0]) <= tol * (1.0 + abs(vals[0]))
            and np.max(np.abs(np.array(pts[1:]) - pts[0])) < 1e-7
        ):
            break
        centre = np.mean(pts[:-1], axis=0)
        worst = pts[-1]
        refl = centre + (centre - worst)
        fr = g(refl)
        if fr < vals[0]:
            exp = centre + 2.0 * (centre - worst)
            fe = g(exp)
            pts[-1], vals[-1] = (exp, fe) if fe < fr else (refl, fr)
        elif fr < vals[-2]:
            pts[-1], vals[-1] = refl, fr
        else:
            con = (
                centre + 0.5 * (worst - centre)
                if fr >= vals[-1]
                else centre + 0.5 * (refl - centre)
            )
            fc = g(con)
            if fc < min(fr, vals[-1]):
                pts[-1], vals[-1] = con, fc
            else:
                pts = [pts[0] + 0.5 * (p - pts[0]) for p in pts]
                vals = [vals[0]] + [g(p) for p in pts[1:]]
    best = int(np.argmin(vals))
    return pts[best], vals[best]


def hessian(f: Callable[[np.ndarray], float], x: np.ndarray, h: float = 1e-3) -> np.ndarray:
    """Central-difference Hessian of `f` at `x`, `(n, n)`."""
    n = x.size
    out = np.zeros((n, n))
    f0 = f(x)
    for i in range(n):
        for j in range(i, n):
            ei = np.zeros(n)
            ej = np.zeros(n)
            ei[i] = h
            ej[j] = h
            if i == j:
                v = (f(x + ei) - 2.0 * f0 + f(x - ei)) / (h * h)
            else:
                v = (f(x + ei + ej) - f(x + ei - ej) - f(x - ei + ej) + f(x - ei - ej)) / (
                    4.0 * h * h
                )
            out[i, j] = out[j, i] = v
    return out


def covariance(f: Callable[[np.ndarray], float], x: np.ndarray) -> np.ndarray | None:
    """Inverse observed information of a negative log-likelihood `f` at its minimum `x`;
    None where the Hessian is not positive definite (a flat or degenerate fit)."""
    hm = hessian(f, x)
    if not np.isfinite(hm).all():
        return None
    try:
        np.linalg.cholesky(hm)
    except np.linalg.LinAlgError:
        return None
    return np.asarray(np.linalg.inv(hm))


def tri_nodes(centre: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and weights, both `(m, 40)`, of the integral of g(x) * max(0, 1 - |x - c|) over
    x in [lo, hi], for each centre c of `centre (m,)` and bounds `lo`, `hi (m,)`: Gauss-Legendre
    on the parts of [c - 1, c] and [c, c + 1] inside the bounds, so a law much narrower than
    the log interval is still integrated accurately (its mass is where the nodes are)."""
    u = 0.5 * (_GL_X + 1.0)  # nodes on (0, 1)
    w = 0.5 * _GL_W
    a1 = np.maximum(centre - 1.0, lo)
    b1 = np.minimum(centre, hi)
    a2 = np.maximum(centre, lo)
    b2 = np.minimum(centre + 1.0, hi)
    len1 = np.maximum(b1 - a1, 0.0)[:, None]
    len2 = np.maximum(b2 - a2, 0.0)[:, None]
    left = a1[:, None] + len1 * u[None, :]
    right = a2[:, None] + len2 * u[None, :]
    nodes = np.concatenate([left, right], axis=1)
    wl = len1 * w[None, :] * (1.0 - (centre[:, None] - left))
    wr = len2 * w[None, :] * (1.0 - (right - centre[:, None]))
    return nodes, np.concatenate([wl, wr], axis=1)
