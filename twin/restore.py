"""Rebuild the twin's state from one recorded row, to replay decisions on it or fork runs from it.

A recording holds what a plant can log (statuses, buffer levels, counters, energy, wear,
readings, setpoints), not the twin's hidden clocks (when the part in process will finish,
the failure budget). `restore` fills those in with draws from their conditional law:

- memoryless clocks (exponential processing, failure budgets, exponential repairs) are drawn
  fresh, as `Twin.fork` does (`twin.state.redraw_memoryless`): exact by memorylessness;
- the remaining time of a part in process (or held by a down station) whose law is not
  memoryless is drawn from the equilibrium residual law, the law of the time left on a job
  seen at a random instant: U * X with U uniform on (0, 1) and X the length-biased job
  length. Deterministic: uniform on (0, cycle); gamma(k): X ~ Gamma(k + 1) scaled to the
  cycle; lognormal(sigma): X lognormal with log-mean sigma²/2 above the law's. The same for
  the time left on a lognormal repair. This is an approximation: a row does not say when the
  part or the repair started, and the residual given that elapsed time would need it;
- the busy age of a Weibull station (busy seconds since its last repair) is recovered from
  its recorded wear, `wear * 3600 / (speed / nominal) ** wear.speed_exponent`: exact when
  the speed has not changed since the last repair. Given that age, the failure budget is
  Exp(1) again (drawn fresh as above), so the time to failure has its exact conditional law;
- temperatures start at the reading (the setpoint where the reading is missing or invalid);
- cumulative status times start at zero (KPIs are differences over a window, so this is
  harmless).

A state that a plant log makes inconsistent (a starved station with parts waiting upstream)
is not repaired by hand: the twin resolves it at the next upstream event, as the line would.
"""

from __future__ import annotations

import numpy as np

from linetwin.twin import layout as L
from linetwin.twin.errors import TwinError
from linetwin.twin.params import LineParams, compile_params
from linetwin.twin.recorder import Recording
from linetwin.twin.sensors import Readings
from linetwin.twin.snapshot import Snapshot
from linetwin.twin.state import TwinState, initial_state, redraw_memoryless


def restore(
    rec: Recording,
    index: int,
    scenario: int,
    rng: np.random.Generator,
    copies: int = 1,
    time_s: float | None = None,
    params: LineParams | None = None,
) -> Snapshot:
    """Return the line of row `index` (tick position in `rec`) of `scenario` as a snapshot.

    The snapshot has `copies` scenarios, each with its own draws of the hidden clocks from
    `rng` (so `Twin(spec, copies, state=snap.state.copy(), time_s=snap.time_s, ...)` runs
    `copies` independent continuations); readings are the recorded ones, repeated. `time_s`
    puts the snapshot at another line time (default: the recorded one); only differences of
    times matter to the twin, so forks of rows recorded at different times can share a twin.
    `params` saves compiling the spec again (`compile_params(rec.spec)`).
    """
    if not 0 <= index < rec.n_ticks:
        raise TwinError(f"row {index} is not in the recording chunk ({rec.n_ticks} ticks)")
    if not 0 <= scenario < rec.n_scenarios:
        raise TwinError(f"scenario {scenario} is not in the recording ({rec.n_scenarios})")
    spec = rec.spec
    lp = compile_params(spec) if params is None else params
    p = lp.params
    t = float(rec.time_s[index]) if time_s is None else float(time_s)
    n = spec.n_stations

    def row(a: np.ndarray) -> np.ndarray:
        return np.repeat(a[index, scenario][None], copies, axis=0)

    state = initial_state(lp, copies, rng, t)
    fs, ist = state.fstate, state.istate
    status = row(rec.status).astype(np.int64)
    ist[:, :, L.I_STATUS] = status
    ist[:, :, L.I_DONE] = row(rec.completed)
    ist[:, :, L.I_SCRAP] = row(rec.scrapped)
    ist[:, :, L.I_FAILS] = row(rec.failures)
    state.level[:, : n - 1] = row(rec.buffer_level)
    state.counts[:, L.C_RELEASED] = row(rec.released)
    state.counts[:, L.C_OUT] = row(rec.good_out)
    state.counts[:, L.C_SCRAP] = row(rec.scrap_total)
    fs[:, :, L.F_ENERGY] = row(rec.energy_kwh)
    fs[:, :, L.F_WEAR] = row(rec.wear)
    temperature = row(rec.temperature_c)
    setpoint_t = row(rec.temperature_setpoint_c)
    known = np.isfinite(temperature) & row(rec.temperature_valid)
    thermal = p[:, L.P_THERMAL] > 0
    fs[:, :, L.F_TEMP] = np.where(
        thermal, np.where(known, temperature, setpoint_t), fs[:, :, L.F_TEMP]
    )
    # The part in process runs at the nominal speed in this state (initial_state's); the
    # kernel rescales what is left when the recorded speed comes into force at the first step.
    cycle = p[:, L.P_CYCLE] / fs[:, :, L.F_SPEED]
    kept = p[:, L.P_EXPO] <= 0  # not memoryless: drawn here, kept by redraw_memoryless
    left = rng.uniform(size=(copies, n)) * cycle
    left *= length_biased_unit(p[:, L.P_PROC_LAW], p[:, L.P_PROC_SHAPE], rng, (copies, n))
    busy = status == L.BUSY
    down = status == L.DOWN
    fs[:, :, L.F_TDONE] = np.where(busy & kept, t + left, np.inf)
    fs[:, :, L.F_LEFT] = np.where(down & kept, left, 0.0)
    lognormal_repair = p[:, L.P_REPAIR_LAW] == L.LAW_LOGNORMAL
    if lognormal_repair.any():
        sigma = np.where(lognormal_repair, p[:, L.P_REPAIR_SIGMA], 0.0)
        z = rng.standard_normal((copies, n))
        repair_left = (
            p[:, L.P_MTTR] * rng.uniform(size=(copies, n)) * np.exp(sigma * z + sigma**2 / 2)
        )
        fs[:, :, L.F_TREPAIR] = np.where(down & lognormal_repair, t + repair_left, np.inf)
    weibull = p[:, L.P_FAIL_LAW] == L.LAW_WEIBULL
    if weibull.any():
        ratio = row(rec.speed) / p[:, L.P_SPEED_NOM]
        rate = np.where(ratio > 0, ratio, 1.0) ** p[:, L.P_WEAR_EXP]
        fs[:, :, L.F_AGE] = np.where(weibull, fs[:, :, L.F_WEAR] * 3600.0 / rate, 0.0)
    redraw_memoryless(state, lp, rng, t)
    readings = Readings(
        temperature_c=temperature,
        power_kw=row(rec.power_kw),
        vibration_mm_s=row(rec.vibration_mm_s),
        valid=np.stack(
            [row(rec.temperature_valid), row(rec.power_valid), row(rec.vibration_valid)], axis=-1
        ),
    )
    # The twin's convention: 0.0 where a station has no such setpoint (recordings hold NaN).
    setpoints = np.where(lp.present, np.stack([row(rec.speed), setpoint_t], axis=-1), 0.0)
    return Snapshot(spec, t, _checked(state), setpoints, readings)


def length_biased_unit(
    law: np.ndarray, shape_param: np.ndarray, rng: np.random.Generator, size: tuple[int, int]
) -> np.ndarray:
    """Draw length-biased processing lengths in units of the mean, `size (copies, n)`.

    `law` and `shape_param` are the stations' `P_PROC_LAW` and `P_PROC_SHAPE` `(n,)`. 1.0
    where the law is deterministic or exponential (exponential remainders are redrawn as
    memoryless clocks anyway); nothing is drawn from `rng` on a line without gamma or
    lognormal stations.
    """
    gamma = law == L.LAW_GAMMA
    lognormal = law == L.LAW_LOGNORMAL
    out = np.ones(size)
    if gamma.any():
        k = np.where(gamma, shape_param, 1.0)
        out = np.where(gamma, rng.gamma(np.broadcast_to(k + 1.0, size)) / k, out)
    if lognormal.any():
        sigma = np.where(lognormal, shape_param, 0.0)
        out = np.where(lognormal, np.exp(sigma * rng.standard_normal(size) + sigma**2 / 2), out)
    return out


def _checked(state: TwinState) -> TwinState:
    if (state.level < 0).any() or (state.istate < 0).any() or (state.counts < 0).any():
        raise TwinError("recorded counts or buffer levels are negative")
    return state
