"""Advance one scenario of a serial line, event by event, exactly: the twin's only dynamics.

Every function here handles one scenario `s` of the state arrays (see `twin.layout`) and is
written in the subset of Python that numba compiles both for CPU threads (`twin.engine_cpu`)
and for CUDA threads (`twin.engine_cuda`): scalars, `math`, array indexing, no allocation.

The model: stations in series with unlimited supply and sink, finite buffers, blocking after
service, processing times with mean cycle_time / speed (deterministic, exponential, gamma or
lognormal), failures that strike only while processing (exponential or Weibull in busy time,
their hazard scaled up by wear) and resume the interrupted part after a repair (exponential or
lognormal), scrap drawn per finished part from speed and temperature, first-order
temperature in closed form, energy integrated per status. Events are exact in continuous time:
nothing is discretised, so step size never biases a result.
"""

import math

import numpy as np
from numba import njit, prange

from linetwin.twin.layout import (
    BLOCKED,
    BUSY,
    C_OUT,
    C_RELEASED,
    C_SCRAP,
    DOWN,
    F_AGE,
    F_ENERGY,
    F_LEFT,
    F_LIFE,
    F_RUN_KW,
    F_SINCE,
    F_SPEED,
    F_T0,
    F_TBUSY,
    F_TDONE,
    F_TEMP,
    F_TFAIL,
    F_TREF,
    F_TREPAIR,
    F_TSET,
    F_WEAR,
    F_WEAR_RATE,
    I_DONE,
    I_FAILS,
    I_SCRAP,
    I_STATUS,
    LAW_GAMMA,
    LAW_LOGNORMAL,
    LAW_WEIBULL,
    P_AMBIENT,
    P_CYCLE,
    P_ENERGY_EXP,
    P_EXPO,
    P_FAIL,
    P_FAIL_LAW,
    P_FAIL_SCALE,
    P_FAIL_SHAPE,
    P_HEAT_PER_C,
    P_IDEAL_HI,
    P_IDEAL_LO,
    P_IDLE_KW,
    P_MTTR,
    P_PROC_LAW,
    P_PROC_SHAPE,
    P_REPAIR_LAW,
    P_REPAIR_SIGMA,
    P_RUN_KW,
    P_SCRAP_BASE,
    P_SCRAP_MAX,
    P_SCRAP_SPEED,
    P_SCRAP_TEMP,
    P_SPEED_NOM,
    P_TAU,
    P_THERMAL,
    P_WEAR_EXP,
    P_WEAR_GAIN,
    R_FAIL,
    R_WORK,
    S_SPEED,
    S_TEMP,
    STARVED,
)

# Inlined at numba-IR level: calls between separately compiled functions cost array-struct
# copies and reference counting per call, which made an event 2-9x slower (docs/design.md).
_jit = njit(cache=True, nogil=True, error_model="numpy", inline="always")

INF = math.inf
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_S30 = np.uint64(30)
_S27 = np.uint64(27)
_S31 = np.uint64(31)
_S11 = np.uint64(11)
_INV53 = 1.0 / 9007199254740992.0
_TWO_PI = 2.0 * math.pi


@_jit
def uniform(rng, s, i, k):
    """Draw U[0, 1) from the splitmix64 stream `rng[s, i, k]` and advance it."""
    x = rng[s, i, k] + _GOLDEN
    rng[s, i, k] = x
    z = (x ^ (x >> _S30)) * _MIX1
    z = (z ^ (z >> _S27)) * _MIX2
    z = z ^ (z >> _S31)
    return float(z >> _S11) * _INV53


@_jit
def exponential(rng, s, i, k):
    """Draw Exp(1) from stream `rng[s, i, k]`."""
    return -math.log(1.0 - uniform(rng, s, i, k))


@_jit
def normal(rng, s, i, k):
    """Draw N(0, 1) from stream `rng[s, i, k]` (Box-Muller: always two uniforms)."""
    r = math.sqrt(-2.0 * math.log(1.0 - uniform(rng, s, i, k)))
    angle = _TWO_PI * uniform(rng, s, i, k)
    return r * math.cos(angle)


@_jit
def lognormal_unit(rng, s, i, k, sigma):
    """Draw a lognormal variate of mean 1 and log-sd `sigma` from stream `rng[s, i, k]`."""
    return math.exp(sigma * normal(rng, s, i, k) - 0.5 * sigma * sigma)


@_jit
def gamma_unit(rng, s, i, k, shape):
    """Draw Gamma(shape) / shape (mean 1, cv 1/sqrt(shape)) from stream `rng[s, i, k]`.

    Marsaglia and Tsang's squeeze-and-reject method (exact); below shape 1 it draws
    Gamma(shape + 1) * U ** (1 / shape). How many uniforms a draw takes depends on the
    uniforms only, never on the speed, so common random numbers stay aligned across speeds.
    """
    a = shape
    boost = 1.0
    if a < 1.0:
        boost = (1.0 - uniform(rng, s, i, k)) ** (1.0 / a)
        a += 1.0
    d = a - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)
    while True:
        z = normal(rng, s, i, k)
        v = 1.0 + c * z
        if v <= 0.0:
            continue
        v = v * v * v
        u = 1.0 - uniform(rng, s, i, k)
        z2 = z * z
        if u < 1.0 - 0.0331 * z2 * z2 or math.log(u) < 0.5 * z2 + d * (1.0 - v + math.log(v)):
            return d * v * boost / shape


@_jit
def temperature_at(fs, par, s, i, t):
    """Return the temperature of station i at time t, °C (closed-form first-order response)."""
    target = fs[s, i, F_TSET]
    return target + (fs[s, i, F_TEMP] - target) * math.exp(-(t - fs[s, i, F_TREF]) / par[i, P_TAU])


@_jit
def settle(fs, ist, par, s, i, t):
    """Account status time and electrical energy of station i up to time t."""
    dt = t - fs[s, i, F_SINCE]
    if dt > 0.0:
        st = ist[s, i, I_STATUS]
        fs[s, i, F_T0 + st] += dt
        kw = fs[s, i, F_RUN_KW] if st == BUSY else par[i, P_IDLE_KW]
        fs[s, i, F_ENERGY] += kw * dt / 3600.0
    fs[s, i, F_SINCE] = t


@_jit
def set_status(fs, ist, par, s, i, status, t):
    """Change the status of station i at time t, settling the old status first."""
    settle(fs, ist, par, s, i, t)
    ist[s, i, I_STATUS] = status


@_jit
def hazard(fs, par, s, i):
    """Return the failure rate of station i while busy, 1/s."""
    return par[i, P_FAIL] * (1.0 + par[i, P_WEAR_GAIN] * fs[s, i, F_WEAR])


@_jit
def arm(fs, tnext, s, i):
    """Set station i's next event time from its pending completion and failure."""
    tnext[s, i] = min(fs[s, i, F_TDONE], fs[s, i, F_TFAIL])


@_jit
def weibull_spent(fs, par, s, i, age):
    """Return the base cumulative hazard of a Weibull station at busy age `age` s."""
    return (age / par[i, P_FAIL_SCALE]) ** par[i, P_FAIL_SHAPE]


@_jit
def begin_busy(fs, par, tnext, s, i, t):
    """Start an uninterrupted busy stretch at t: schedule the failure that may end it.

    The failure comes when the hazard spent since the last repair uses up the Exp(1) budget
    F_LIFE. Exponential: the hazard is constant over the stretch. Weibull: the base hazard
    grows with the busy age F_AGE, times the wear multiplier held over the stretch.
    """
    fs[s, i, F_TBUSY] = t
    h = hazard(fs, par, s, i)
    if h <= 0.0:
        fs[s, i, F_TFAIL] = INF
    elif par[i, P_FAIL_LAW] == LAW_WEIBULL:
        age = fs[s, i, F_AGE]
        target = weibull_spent(fs, par, s, i, age) + fs[s, i, F_LIFE] * par[i, P_FAIL] / h
        reach = par[i, P_FAIL_SCALE] * target ** (1.0 / par[i, P_FAIL_SHAPE])
        fs[s, i, F_TFAIL] = t + max(reach - age, 0.0)
    else:
        fs[s, i, F_TFAIL] = t + fs[s, i, F_LIFE] / h
    arm(fs, tnext, s, i)


@_jit
def end_busy(fs, par, s, i, t):
    """Close a busy stretch at t: spend hazard budget, age and accrue wear."""
    busy = t - fs[s, i, F_TBUSY]
    h = hazard(fs, par, s, i)
    if h > 0.0:
        if par[i, P_FAIL_LAW] == LAW_WEIBULL:
            age = fs[s, i, F_AGE]
            base = weibull_spent(fs, par, s, i, age + busy) - weibull_spent(fs, par, s, i, age)
            spent = base * h / par[i, P_FAIL]
        else:
            spent = h * busy
        fs[s, i, F_LIFE] = max(fs[s, i, F_LIFE] - spent, 0.0)
    fs[s, i, F_AGE] += busy
    fs[s, i, F_WEAR] += busy * fs[s, i, F_WEAR_RATE] / 3600.0
    fs[s, i, F_TBUSY] = t


@_jit
def start(fs, ist, par, rng, tnext, s, i, t):
    """Start processing a new part at station i at time t."""
    set_status(fs, ist, par, s, i, BUSY, t)
    mean = par[i, P_CYCLE] / fs[s, i, F_SPEED]
    if par[i, P_EXPO] > 0.0:
        mean *= exponential(rng, s, i, R_WORK)
    elif par[i, P_PROC_LAW] == LAW_GAMMA:
        mean *= gamma_unit(rng, s, i, R_WORK, par[i, P_PROC_SHAPE])
    elif par[i, P_PROC_LAW] == LAW_LOGNORMAL:
        mean *= lognormal_unit(rng, s, i, R_WORK, par[i, P_PROC_SHAPE])
    fs[s, i, F_TDONE] = t + mean
    begin_busy(fs, par, tnext, s, i, t)


@_jit
def free(fs, ist, par, lev, cnt, rng, tnext, s, i, t):
    """Station i has just let go of its part at t: pull work downstream-first, upstream."""
    j = i
    while True:
        if j == 0:
            cnt[s, C_RELEASED] += 1
            start(fs, ist, par, rng, tnext, s, 0, t)
            return
        up = j - 1
        if lev[s, up] > 0:
            lev[s, up] -= 1
            start(fs, ist, par, rng, tnext, s, j, t)
            if ist[s, up, I_STATUS] != BLOCKED:
                return
            lev[s, up] += 1  # the blocked upstream station drops its part into the buffer
        elif ist[s, up, I_STATUS] == BLOCKED:
            start(fs, ist, par, rng, tnext, s, j, t)  # direct hand-off (zero-capacity buffer)
        else:
            set_status(fs, ist, par, s, j, STARVED, t)
            fs[s, j, F_TDONE] = INF
            fs[s, j, F_TFAIL] = INF
            tnext[s, j] = INF
            return
        j = up


@_jit
def scrap_probability(fs, par, s, i, t):
    """Return the probability that the part station i finishes at t is scrapped."""
    p = par[i, P_SCRAP_BASE]
    over = fs[s, i, F_SPEED] - par[i, P_SPEED_NOM]
    if over > 0.0:
        p += par[i, P_SCRAP_SPEED] * over * over
    if par[i, P_THERMAL] > 0.0:
        temp = temperature_at(fs, par, s, i, t)
        d = max(par[i, P_IDEAL_LO] - temp, temp - par[i, P_IDEAL_HI], 0.0)
        p += par[i, P_SCRAP_TEMP] * d * d
    return min(p, par[i, P_SCRAP_MAX])


@_jit
def complete(fs, ist, par, cap, lev, cnt, rng, tnext, s, i, t):
    """Station i finishes its part at t: scrap it, pass it on, or block."""
    end_busy(fs, par, s, i, t)
    fs[s, i, F_TDONE] = INF
    fs[s, i, F_TFAIL] = INF
    ist[s, i, I_DONE] += 1
    n = ist.shape[1]
    if uniform(rng, s, i, R_WORK) < scrap_probability(fs, par, s, i, t):
        ist[s, i, I_SCRAP] += 1
        cnt[s, C_SCRAP] += 1
    elif i == n - 1:
        cnt[s, C_OUT] += 1
    elif ist[s, i + 1, I_STATUS] == STARVED:
        start(fs, ist, par, rng, tnext, s, i + 1, t)
    elif lev[s, i] < cap[i]:
        lev[s, i] += 1
    else:
        set_status(fs, ist, par, s, i, BLOCKED, t)
        tnext[s, i] = INF
        return
    free(fs, ist, par, lev, cnt, rng, tnext, s, i, t)


@_jit
def fail(fs, ist, par, rng, tnext, s, i, t):
    """Station i breaks down at t while processing; its part waits for the repair."""
    end_busy(fs, par, s, i, t)
    fs[s, i, F_LEFT] = fs[s, i, F_TDONE] - t
    fs[s, i, F_TDONE] = INF
    fs[s, i, F_TFAIL] = INF
    set_status(fs, ist, par, s, i, DOWN, t)
    ist[s, i, I_FAILS] += 1
    if par[i, P_REPAIR_LAW] == LAW_LOGNORMAL:
        draw = lognormal_unit(rng, s, i, R_FAIL, par[i, P_REPAIR_SIGMA])
    else:
        draw = exponential(rng, s, i, R_FAIL)
    fs[s, i, F_TREPAIR] = t + par[i, P_MTTR] * draw
    tnext[s, i] = fs[s, i, F_TREPAIR]


@_jit
def repair(fs, ist, par, rng, tnext, s, i, t):
    """Station i is repaired at t: wear resets and the interrupted part resumes."""
    fs[s, i, F_TREPAIR] = INF
    fs[s, i, F_WEAR] = 0.0
    fs[s, i, F_AGE] = 0.0
    fs[s, i, F_LIFE] = exponential(rng, s, i, R_FAIL)
    set_status(fs, ist, par, s, i, BUSY, t)
    fs[s, i, F_TDONE] = t + fs[s, i, F_LEFT]
    fs[s, i, F_LEFT] = 0.0
    begin_busy(fs, par, tnext, s, i, t)


@_jit
def apply_setpoints(fs, ist, par, sp, tnext, s, t):
    """Bring the setpoints `sp[s]` into force at t; parts in process finish at the new speed."""
    n = ist.shape[1]
    for i in range(n):
        speed = sp[s, i, S_SPEED]
        old = fs[s, i, F_SPEED]
        if speed != old:
            settle(fs, ist, par, s, i, t)
            status = ist[s, i, I_STATUS]
            if status == BUSY:
                end_busy(fs, par, s, i, t)
                fs[s, i, F_TDONE] = t + (fs[s, i, F_TDONE] - t) * old / speed
            elif status == DOWN:
                fs[s, i, F_LEFT] *= old / speed
            ratio = speed / par[i, P_SPEED_NOM]
            fs[s, i, F_SPEED] = speed
            fs[s, i, F_RUN_KW] = par[i, P_RUN_KW] * ratio ** par[i, P_ENERGY_EXP]
            fs[s, i, F_WEAR_RATE] = ratio ** par[i, P_WEAR_EXP]
            if status == BUSY:
                begin_busy(fs, par, tnext, s, i, t)
        if par[i, P_THERMAL] > 0.0 and sp[s, i, S_TEMP] != fs[s, i, F_TSET]:
            fs[s, i, F_TEMP] = temperature_at(fs, par, s, i, t)
            fs[s, i, F_TREF] = t
            fs[s, i, F_TSET] = sp[s, i, S_TEMP]


@_jit
def heat(fs, par, s, i, t0, t1):
    """Charge the heating energy of station i over [t0, t1] and move its temperature to t1."""
    dt = t1 - t0
    if dt <= 0.0:
        return
    target = fs[s, i, F_TSET]
    tau = par[i, P_TAU]
    start_temp = temperature_at(fs, par, s, i, t0)
    decay = math.exp(-dt / tau)
    integral = target * dt + (start_temp - target) * tau * (1.0 - decay)  # ∫ T dt, °C·s
    excess = integral - par[i, P_AMBIENT] * dt
    if excess > 0.0:
        fs[s, i, F_ENERGY] += par[i, P_HEAT_PER_C] * excess / 3600.0
    fs[s, i, F_TEMP] = target + (start_temp - target) * decay
    fs[s, i, F_TREF] = t1


@_jit
def advance(fs, ist, par, cap, lev, cnt, rng, tnext, sp, s, t0, t1):
    """Advance scenario s from t0 to t1 under setpoints `sp[s]`; return events processed."""
    n = ist.shape[1]
    apply_setpoints(fs, ist, par, sp, tnext, s, t0)
    if ist[s, 0, I_STATUS] == STARVED:  # only before the first part: the line starts here
        free(fs, ist, par, lev, cnt, rng, tnext, s, 0, t0)
    events = 0
    while True:
        k = -1
        tk = t1
        for i in range(n):
            if tnext[s, i] <= tk:
                tk = tnext[s, i]
                k = i
        if k < 0:
            break
        events += 1
        if ist[s, k, I_STATUS] == DOWN:
            repair(fs, ist, par, rng, tnext, s, k, tk)
        elif fs[s, k, F_TFAIL] < fs[s, k, F_TDONE]:
            fail(fs, ist, par, rng, tnext, s, k, tk)
        else:
            complete(fs, ist, par, cap, lev, cnt, rng, tnext, s, k, tk)
    for i in range(n):
        settle(fs, ist, par, s, i, t1)
        if par[i, P_THERMAL] > 0.0:
            heat(fs, par, s, i, t0, t1)
    return events


# The CPU drivers live in this file on purpose: numba's cache is keyed on each function's own
# source file, so a driver cached elsewhere would keep running a stale copy of the kernel.


@njit(cache=True, parallel=True, error_model="numpy")
def advance_all_parallel(fs, ist, par, cap, lev, cnt, rng, tnext, sp, t0, t1, events):
    """Advance every scenario from t0 to t1 on CPU threads; `events[s]` gets each count."""
    for s in prange(fs.shape[0]):
        events[s] = advance(fs, ist, par, cap, lev, cnt, rng, tnext, sp, s, t0, t1)


@njit(cache=True, error_model="numpy")
def advance_all_serial(fs, ist, par, cap, lev, cnt, rng, tnext, sp, t0, t1, events):
    """Advance every scenario from t0 to t1 in this thread (cheaper for one scenario)."""
    for s in range(fs.shape[0]):
        events[s] = advance(fs, ist, par, cap, lev, cnt, rng, tnext, sp, s, t0, t1)
