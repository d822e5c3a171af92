"""Exact CTMC throughput of a serial exponential or Erlang production line (test ground truth).

The line has ``n`` stations in series separated by ``n - 1`` finite buffers.  Every
station holds at most one part and has exponential service with rate ``mu_i``
(parts per second), or Erlang-``k_i`` service with the same mean: ``k_i`` exponential
phases in a row, each at rate ``k_i * mu_i`` (a gamma law with cv ``1 / sqrt(k_i)``).
Blocking is *blocking after service* (BAS).  Station 0 never
starves (unlimited raw material) and the last station never blocks (unlimited sink).

Optional failures are *operation dependent*: station ``i`` fails at rate ``f_i``
(per second) only while it is BUSY, stays DOWN (holding its part) for an exponential
repair time with rate ``r_i`` (per second) and then resumes processing; by
memorylessness the remaining service time is again ``Exp(mu_i)`` (with phases: the part
resumes in the phase it was in, whose remainder is again exponential).

All instantaneous moves (hand-offs, unblocking cascades) are resolved inside one
transition, so the chain's states are the stable configurations only.  The states
reachable from the empty line are enumerated by breadth-first search, the generator
``Q`` is assembled with numpy and ``pi Q = 0, sum(pi) = 1`` is solved directly.

Public functions:

* :func:`exact_throughput` -- long-run departure rate of the last station (parts/s);
  ``phases`` gives stations Erlang service.
* :func:`state_count` -- number of reachable stable states (for sanity tests).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

import numpy as np

__all__ = ["BLOCKED", "BUSY", "DOWN", "STARVED", "exact_throughput", "state_count"]

#: Station is free and waiting for a part (never happens at station 0).
STARVED = 0
#: Station is processing a part.
BUSY = 1
#: Station has finished a part but cannot pass it on (downstream full).
BLOCKED = 2
#: Station failed while processing; it keeps its part until repaired.
DOWN = 3

# A state is ``stations + levels + phases``: n station codes, n - 1 buffer levels, and n
# phases (completed phases of the part in process; 0 unless busy or down).
State = tuple[int, ...]


def _validate(
    rates: Sequence[float],
    buffers: Sequence[int],
    failure_rates: Sequence[float] | None,
    repair_rates: Sequence[float] | None,
) -> tuple[list[float], list[int], list[float], list[float]]:
    """Check the arguments and return them as plain lists (failures default to zero)."""
    mu = [float(x) for x in rates]
    n = len(mu)
    if n < 1:
        raise ValueError("need at least one station")
    if any(not np.isfinite(x) or x <= 0.0 for x in mu):
        raise ValueError(f"service rates must be finite and > 0, got {mu}")
    caps = [int(b) for b in buffers]
    if len(caps) != n - 1:
        raise ValueError(f"need {n - 1} buffer capacities for {n} stations, got {len(caps)}")
    if any(b < 0 for b in caps):
        raise ValueError(f"buffer capacities must be >= 0, got {caps}")
    if failure_rates is None:
        if repair_rates is not None:
            raise ValueError("repair_rates given without failure_rates")
        return mu, caps, [0.0] * n, [1.0] * n
    if repair_rates is None:
        raise ValueError("failure_rates given without repair_rates")
    f = [float(x) for x in failure_rates]
    r = [float(x) for x in repair_rates]
    if len(f) != n or len(r) != n:
        raise ValueError("failure_rates and repair_rates need one entry per station")
    if any(not np.isfinite(x) or x < 0.0 for x in f):
        raise ValueError(f"failure rates must be finite and >= 0, got {f}")
    if any(not np.isfinite(x) or x <= 0.0 for x in r):
        raise ValueError(f"repair rates must be finite and > 0, got {r}")
    return mu, caps, f, r


def _validate_phases(phases: Sequence[int] | None, n: int) -> list[int]:
    """Check the Erlang phase counts and return them as a list (default: 1, exponential)."""
    if phases is None:
        return [1] * n
    k = [int(x) for x in phases]
    if len(k) != n or any(x < 1 or x != p for x, p in zip(k, phases, strict=True)):
        raise ValueError(f"phases need {n} integers >= 1, got {list(phases)}")
    return k


def _free(st: list[int], lv: list[int], i: int) -> None:
    """Station ``i`` has just passed its part on; refill it and cascade upstream in place."""
    while True:
        if i == 0:
            st[0] = BUSY  # unlimited raw material
            return
        up = i - 1
        if lv[up] > 0:
            lv[up] -= 1
            st[i] = BUSY
            if st[up] != BLOCKED:
                return
            lv[up] += 1  # the blocked upstream station pushes into the freed slot
        elif st[up] == BLOCKED:  # only possible with capacity 0: direct hand-off
            st[i] = BUSY
        else:
            st[i] = STARVED
            return
        i = up  # upstream station is now free as well


def _complete(state: State, n: int, caps: list[int], i: int) -> State:
    """Stable state reached when busy station ``i`` finishes its current part."""
    st = list(state[:n])
    lv = list(state[n : 2 * n - 1])
    ph = list(state[2 * n - 1 :])
    ph[i] = 0  # a station that is not processing has no phase; one that starts starts at 0
    if i < n - 1:
        if st[i + 1] == STARVED:
            st[i + 1] = BUSY  # buffer i is necessarily empty: direct hand-off
        elif lv[i] < caps[i]:
            lv[i] += 1
        else:
            st[i] = BLOCKED
            return tuple(st + lv + ph)
    _free(st, lv, i)
    return tuple(st + lv + ph)


def _initial_state(n: int) -> State:
    """Empty line: station 0 busy on its first part, all others starved, buffers empty."""
    return (BUSY, *((STARVED,) * (n - 1)), *((0,) * (n - 1)), *((0,) * n))


def _explore(
    mu: list[float],
    caps: list[int],
    f: list[float],
    r: list[float],
    k: list[int] | None = None,
) -> tuple[list[State], np.ndarray, np.ndarray, np.ndarray]:
    """Breadth-first enumeration of reachable states.

    Returns the states and the off-diagonal generator entries as COO arrays
    ``(rows, cols, vals)`` with ``vals`` in 1/s (duplicates are to be summed).  Events
    that leave the state unchanged are omitted; they do not affect ``pi`` (throughput
    is computed from the probability that the last station is busy, not from ``Q``).
    """
    n = len(mu)
    k = [1] * n if k is None else k
    start = _initial_state(n)
    index: dict[State, int] = {start: 0}
    states: list[State] = [start]
    rows: list[int] = []
    cols: list[int] = []
    vals: list[float] = []
    queue: deque[State] = deque([start])

    def add(src: int, dst_state: State, rate: float) -> None:
        if dst_state == states[src]:
            return  # self-loop (e.g. a lone station finishing a part): no state change
        dst = index.get(dst_state)
        if dst is None:
            dst = len(states)
            index[dst_state] = dst
            states.append(dst_state)
            queue.append(dst_state)
        rows.append(src)
        cols.append(dst)
        vals.append(rate)

    while queue:
        state = queue.popleft()
        src = index[state]
        for i in range(n):
            s = state[i]
            if s == BUSY:
                phase = state[2 * n - 1 + i]
                if phase < k[i] - 1:
                    j = 2 * n - 1 + i
                    add(src, (*state[:j], phase + 1, *state[j + 1 :]), k[i] * mu[i])
                else:
                    add(src, _complete(state, n, caps, i), k[i] * mu[i])
                if f[i] > 0.0:
                    add(src, (*state[:i], DOWN, *state[i + 1 :]), f[i])
            elif s == DOWN:
                add(src, (*state[:i], BUSY, *state[i + 1 :]), r[i])
    return (
        states,
        np.asarray(rows, dtype=np.intp),
        np.asarray(cols, dtype=np.intp),
        np.asarray(vals, dtype=float),
    )


def _wip(states: list[State], n: int) -> np.ndarray:
    """Work in process of each state: parts held by stations plus parts in buffers."""
    return np.fromiter(
        (sum(x != STARVED for x in s[:n]) + sum(s[n : 2 * n - 1]) for s in states),
        dtype=np.intp,
        count=len(states),
    )


def state_count(
    rates: Sequence[float],
    buffers: Sequence[int],
    failure_rates: Sequence[float] | None = None,
    repair_rates: Sequence[float] | None = None,
    phases: Sequence[int] | None = None,
) -> int:
    """Number of stable states reachable from the empty line.

    Arguments are as for :func:`exact_throughput`.  A station whose failure rate is 0
    never goes DOWN, so it adds no states.
    """
    mu, caps, f, r = _validate(rates, buffers, failure_rates, repair_rates)
    return len(_explore(mu, caps, f, r, _validate_phases(phases, len(mu)))[0])


def _stationary_dense(m: int, rows: np.ndarray, cols: np.ndarray, vals: np.ndarray) -> np.ndarray:
    """Stationary distribution by one dense solve (O(m^3); reference for small chains).

    ``pi Q = 0`` is transposed to ``Q^T pi = 0`` and its last equation replaced by
    ``sum(pi) = 1``.
    """
    Q = np.zeros((m, m))
    np.add.at(Q, (rows, cols), vals)
    Q[np.arange(m), np.arange(m)] = -Q.sum(axis=1)
    A = Q.T.copy()
    A[-1, :] = 1.0
    b = np.zeros(m)
    b[-1] = 1.0
    return np.linalg.solve(A, b)


def _stationary_levels(
    level: np.ndarray, rows: np.ndarray, cols: np.ndarray, vals: np.ndarray
) -> np.ndarray:
    """Stationary distribution of a level-structured CTMC by linear level reduction.

    ``level[s]`` is an integer level of state ``s`` such that every transition changes
    the level by at most one, so ``Q`` is block tridiagonal when ordered by level.  With
    ``D_k``, ``U_k`` and ``L_k`` the diagonal, up and down blocks of level ``k`` the
    balance equations give ``pi_k = pi_{k-1} R_k`` where, from the top level down,

        ``S_top = D_top``,  ``S_k = D_k + R_{k+1} L_{k+1}``,  ``R_k = -U_{k-1} S_k^{-1}``,

    and ``pi_0 S_0 = 0``.  This is Gaussian elimination of the (M-matrix) generator by
    blocks without pivoting, which is numerically stable; the cost is the sum of
    cubes of the block sizes instead of the cube of the state count.
    """
    m = len(level)
    lo = int(level.min())
    lev = level - lo
    n_lev = int(lev.max()) + 1
    if np.any(np.abs(lev[rows] - lev[cols]) > 1):
        raise AssertionError("transition skips a level; level reduction does not apply")
    order = np.argsort(lev, kind="stable")
    sizes = np.bincount(lev, minlength=n_lev)
    local = np.empty(m, dtype=np.intp)
    starts = np.concatenate(([0], np.cumsum(sizes)))
    local[order] = np.arange(m) - starts[lev[order]]

    exit_rate = np.bincount(rows, weights=vals, minlength=m)
    D = [np.zeros((k, k)) for k in sizes]
    U = [np.zeros((sizes[k], sizes[k + 1])) for k in range(n_lev - 1)]
    L = [np.zeros((0, 0))] + [np.zeros((sizes[k], sizes[k - 1])) for k in range(1, n_lev)]
    lr, lc, r_loc, c_loc = lev[rows], lev[cols], local[rows], local[cols]
    for k in range(n_lev):
        sel = lr == k
        same = sel & (lc == k)
        np.add.at(D[k], (r_loc[same], c_loc[same]), vals[same])
        if k + 1 < n_lev:
            up = sel & (lc == k + 1)
            np.add.at(U[k], (r_loc[up], c_loc[up]), vals[up])
        if k > 0:
            down = sel & (lc == k - 1)
            np.add.at(L[k], (r_loc[down], c_loc[down]), vals[down])
        mine = order[starts[k] : starts[k + 1]]
        D[k][np.arange(sizes[k]), local[mine]] -= exit_rate[mine]

    R: list[np.ndarray] = [np.zeros((0, 0))] * n_lev
    S = D[n_lev - 1]
    for k in range(n_lev - 1, 0, -1):
        # R_k = -U_{k-1} S_k^{-1}  <=>  S_k^T R_k^T = -U_{k-1}^T
        R[k] = np.linalg.solve(S.T, -U[k - 1].T).T
        S = D[k - 1] + R[k] @ L[k]

    # pi_0 S_0 = 0 with a provisional normalisation sum(pi_0) = 1.
    A = S.T.copy()
    A[-1, :] = 1.0
    b = np.zeros(sizes[0])
    b[-1] = 1.0
    blocks = [np.linalg.solve(A, b)]
    for k in range(1, n_lev):
        blocks.append(blocks[-1] @ R[k])
    pi_sorted = np.concatenate(blocks)
    pi = np.empty(m)
    pi[order] = pi_sorted
    return pi / pi.sum()


def exact_throughput(
    rates: Sequence[float],
    buffers: Sequence[int],
    failure_rates: Sequence[float] | None = None,
    repair_rates: Sequence[float] | None = None,
    phases: Sequence[int] | None = None,
) -> float:
    """Exact long-run throughput of a serial BAS line with exponential or Erlang stations.

    Args:
        rates: service rate ``mu_i`` of each station, parts per second (exponential
            service; mean service time ``1 / mu_i`` seconds).
        buffers: the ``len(rates) - 1`` capacities (parts) of the buffers between
            station ``i`` and ``i + 1``; 0 means direct hand-off only.
        failure_rates: operation-dependent failure rate ``f_i`` per second of busy
            time (a station fails only while processing), or ``None`` for no failures.
        repair_rates: exponential repair rate ``r_i`` per second (mean repair time
            ``1 / r_i`` seconds); required exactly when ``failure_rates`` is given.
        phases: Erlang phases ``k_i`` of each station's service (default 1: exponential);
            the mean service time stays ``1 / mu_i``, its cv is ``1 / sqrt(k_i)``.

    Returns:
        Long-run rate at which parts leave the last station, in parts per second.
    """
    mu, caps, f, r = _validate(rates, buffers, failure_rates, repair_rates)
    n = len(mu)
    k = _validate_phases(phases, n)
    states, rows, cols, vals = _explore(mu, caps, f, r, k)
    # Work in process (parts in stations and buffers) changes by at most one per
    # transition: a completion at station 0 adds a part unless it blocks, a completion
    # at the last station removes one unless the cascade reaches station 0, which then
    # starts a new part; every other move keeps it.  Hence Q is block tridiagonal.
    pi = _stationary_levels(_wip(states, n), rows, cols, vals)
    # The last station finishes a part at rate k * mu from its last phase.
    last_phase = np.fromiter(
        (s[n - 1] == BUSY and s[-1] == k[-1] - 1 for s in states), dtype=bool, count=len(states)
    )
    return float(k[-1] * mu[-1] * pi[last_phase].sum())
