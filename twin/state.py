"""Hold the twin's exact state: plain arrays with a leading scenario axis."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np

from linetwin.twin import layout as L
from linetwin.twin.params import LineParams


@dataclass
class TwinState:
    """Exact state of `n_scenarios` copies of a line at one instant (arrays on the host).

    fstate `(n_scenarios, n_stations, N_FSTATE)` float64, istate `(…, N_ISTATE)` int64,
    level `(n_scenarios, n_stations)` int64 buffer contents (the last column is unused),
    counts `(n_scenarios, N_COUNTS)` int64, rng `(n_scenarios, n_stations, N_STREAMS)` uint64,
    tnext `(n_scenarios, n_stations)` float64 next event time per station, s.
    """

    fstate: np.ndarray
    istate: np.ndarray
    level: np.ndarray
    counts: np.ndarray
    rng: np.ndarray
    tnext: np.ndarray

    @property
    def n_scenarios(self) -> int:
        """Number of scenarios."""
        return int(self.fstate.shape[0])

    def copy(self) -> TwinState:
        """Return a deep copy."""
        return TwinState(*(getattr(self, f.name).copy() for f in fields(self)))

    def take(self, index: np.ndarray | list[int]) -> TwinState:
        """Return the scenarios at `index` (repeats allowed), as a new state."""
        idx = np.asarray(index, dtype=np.int64)
        return TwinState(*(getattr(self, f.name)[idx].copy() for f in fields(self)))

    def put(self, index: np.ndarray | list[int], other: TwinState) -> None:
        """Overwrite the scenarios at `index` with the scenarios of `other`, in order."""
        idx = np.asarray(index, dtype=np.int64)
        for f in fields(self):
            getattr(self, f.name)[idx] = getattr(other, f.name)


def concat_states(states: Sequence[TwinState]) -> TwinState:
    """Return one state holding the scenarios of `states` one after the other."""
    return TwinState(
        *(np.concatenate([getattr(s, f.name) for s in states]) for f in fields(TwinState))
    )


def seed_streams(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Draw splitmix64 stream states of `shape` from `rng` (uint64)."""
    return rng.integers(0, 2**64, size=shape, dtype=np.uint64, endpoint=False)


def initial_state(
    lp: LineParams, n_scenarios: int, rng: np.random.Generator, time_s: float = 0.0
) -> TwinState:
    """Return an empty line at `time_s`: every station starved, buffers empty, clocks seeded."""
    n = lp.params.shape[0]
    p = lp.params
    fs = np.zeros((n_scenarios, n, L.N_FSTATE))
    fs[:, :, [L.F_TDONE, L.F_TFAIL, L.F_TREPAIR]] = math.inf
    fs[:, :, L.F_LIFE] = rng.standard_exponential((n_scenarios, n))
    nom = np.nan_to_num(lp.nominal, nan=0.0)
    fs[:, :, L.F_SPEED] = nom[:, L.S_SPEED]
    ratio = nom[:, L.S_SPEED] / p[:, L.P_SPEED_NOM]
    fs[:, :, L.F_RUN_KW] = p[:, L.P_RUN_KW] * ratio ** p[:, L.P_ENERGY_EXP]
    fs[:, :, L.F_WEAR_RATE] = ratio ** p[:, L.P_WEAR_EXP]
    fs[:, :, L.F_TSET] = nom[:, L.S_TEMP]
    fs[:, :, L.F_TEMP] = nom[:, L.S_TEMP]
    fs[:, :, L.F_SINCE] = time_s
    fs[:, :, L.F_TREF] = time_s
    ist = np.zeros((n_scenarios, n, L.N_ISTATE), dtype=np.int64)
    ist[:, :, L.I_STATUS] = L.STARVED
    return TwinState(
        fstate=fs,
        istate=ist,
        level=np.zeros((n_scenarios, n), dtype=np.int64),
        counts=np.zeros((n_scenarios, L.N_COUNTS), dtype=np.int64),
        rng=seed_streams(rng, (n_scenarios, n, L.N_STREAMS)),
        tnext=np.full((n_scenarios, n), math.inf),
    )


def set_initial_temperature(state: TwinState, station: int, temperature_c: float) -> None:
    """Set the temperature of one station in every scenario (before the first step), °C."""
    state.fstate[:, station, L.F_TEMP] = temperature_c


def redraw_memoryless(
    state: TwinState, lp: LineParams, rng: np.random.Generator, time_s: float
) -> None:
    """Redraw every clock that is memoryless, so forks of one state evolve independently.

    Redrawn, which leaves each fork's law unchanged: the failure budgets (Exp(1) units of
    cumulative hazard, whatever the failure law: given the busy age a Weibull station has
    survived to, the hazard still to be spent before its failure is Exp(1) again), and the
    remaining exponential processing and repair times (exponential with their full means).
    Kept, as the state they are: the remaining times of deterministic, gamma and lognormal
    processing and of lognormal repairs, and every station's busy age and wear.
    """
    fs, ist = state.fstate, state.istate
    p = lp.params
    shape = fs.shape[:2]
    status = ist[:, :, L.I_STATUS]
    expo = p[:, L.P_EXPO] > 0
    mean = p[:, L.P_CYCLE] / fs[:, :, L.F_SPEED]
    fs[:, :, L.F_LIFE] = rng.standard_exponential(shape)
    busy = status == L.BUSY
    redo = busy & expo
    fs[:, :, L.F_TDONE] = np.where(
        redo, time_s + mean * rng.standard_exponential(shape), fs[:, :, L.F_TDONE]
    )
    down = status == L.DOWN
    fs[:, :, L.F_LEFT] = np.where(
        down & expo, mean * rng.standard_exponential(shape), fs[:, :, L.F_LEFT]
    )
    repair_expo = p[:, L.P_REPAIR_LAW] == L.LAW_EXPONENTIAL
    fs[:, :, L.F_TREPAIR] = np.where(
        down & repair_expo,
        time_s + p[:, L.P_MTTR] * rng.standard_exponential(shape),
        fs[:, :, L.F_TREPAIR],
    )
    tfail = failure_times(fs, p, busy, time_s)
    fs[:, :, L.F_TFAIL] = tfail
    fs[:, :, L.F_TBUSY] = np.where(busy, time_s, fs[:, :, L.F_TBUSY])
    state.tnext[...] = np.where(
        busy,
        np.minimum(fs[:, :, L.F_TDONE], tfail),
        np.where(down, fs[:, :, L.F_TREPAIR], math.inf),
    )


def failure_times(fs: np.ndarray, p: np.ndarray, busy: np.ndarray, time_s: float) -> np.ndarray:
    """Return when busy stations fail if their busy stretch starts at `time_s`, s.

    `fs (n_scenarios, n_stations, N_FSTATE)`, `p (n_stations, N_PARAMS)`, `busy` a mask
    `(n_scenarios, n_stations)`; inf where not busy or never failing. The same schedule as
    the kernel's `begin_busy`, over arrays.
    """
    h = p[:, L.P_FAIL] * (1.0 + p[:, L.P_WEAR_GAIN] * fs[:, :, L.F_WEAR])
    live = busy & (h > 0)
    safe_h = np.where(h > 0, h, 1.0)
    after = fs[:, :, L.F_LIFE] / safe_h
    weibull = p[:, L.P_FAIL_LAW] == L.LAW_WEIBULL
    if weibull.any():
        scale = np.where(weibull, p[:, L.P_FAIL_SCALE], 1.0)
        beta = np.where(weibull, p[:, L.P_FAIL_SHAPE], 1.0)
        age = fs[:, :, L.F_AGE]
        target = (age / scale) ** beta + fs[:, :, L.F_LIFE] * p[:, L.P_FAIL] / safe_h
        reach = np.maximum(scale * target ** (1.0 / beta) - age, 0.0)
        after = np.where(weibull, reach, after)
    return np.where(live, time_s + after, math.inf)
