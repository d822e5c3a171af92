"""Simulate a line spec with SimPy: the reference model the twin is benchmarked against.

The same line as `twin.kernel`, written the way a SimPy user would write it: one process per
station, one `simpy.Store` per buffer. Stations in series, unlimited supply before the first
and unlimited sink after the last, blocking after service (a finished part stays in its
station until the buffer behind has room; an idle downstream station takes it directly),
processing times with mean cycle_time_s / speed, deterministic, exponential, gamma or lognormal
with the station's cv (drawn with Python's `random` samplers), failures that strike only while
processing (exponential: hazard 1/mtbf_s times 1 + wear.failure_gain * wear-hours, wear
accruing (speed / nominal) ** wear.speed_exponent per busy hour and reset by repair, the hazard
multiplier held constant over each uninterrupted busy stretch as the kernel does; Weibull in
busy time since the last repair, with mean mtbf_s: without wear gain its busy lifetime is drawn
directly with `random.weibullvariate`, with a wear gain its base hazard is scaled by the same
multiplier), repairs exponential or lognormal with mean mttr_s, after which the interrupted
part resumes its remaining work, and scrap drawn at every finish from the speed and
temperature penalties. Energy is not modelled.

Failures split the processing timeout at the failure time instead of interrupting the
process: for failures that accrue in busy time only this is exact, and it is what a careful
SimPy model of operation-dependent failures does anyway.

SimPy refuses a `Store` of capacity 0, so a zero-capacity buffer is a one-slot store plus a
hand-shake: the upstream station puts an event in it and stays blocked until the downstream
station has taken it and triggered it.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping
from typing import Any

import simpy

from linetwin.twin.spec import LineSpec, Station


def _station_setpoints(
    spec: LineSpec, setpoints: Mapping[str, Mapping[str, float]] | None
) -> list[tuple[float, float | None]]:
    """Return (speed, temperature °C or None) per station: nominal unless `setpoints` says."""
    given = dict(setpoints or {})
    names = {st.name for st in spec.stations}
    unknown = sorted(set(given) - names)
    if unknown:
        raise ValueError(f"setpoints: unknown stations {unknown} (line has {sorted(names)})")
    out = []
    for st in spec.stations:
        entry = dict(given.get(st.name, {}))
        extra = sorted(set(entry) - {"speed", "temperature"})
        if extra or ("temperature" in entry and st.thermal is None):
            raise ValueError(f"setpoints: station {st.name!r} has no setpoint(s) {entry}")
        speed = float(entry.get("speed", st.setpoints.speed.nominal))
        temp = None
        if st.setpoints.temperature is not None:
            temp = float(entry.get("temperature", st.setpoints.temperature.nominal))
        out.append((speed, temp))
    return out


def _scrap_probability(st: Station, speed: float, temp_set: float | None):
    """Return `p(t)`, the scrap probability of a part finished at t s, or a float if constant."""
    p = st.scrap.base
    over = speed - st.setpoints.speed.nominal
    if over > 0.0:
        p += st.scrap.speed_gain * over * over
    th = st.thermal
    if th is None or temp_set is None or st.scrap.temperature_gain == 0.0:
        return min(p, st.scrap.max)
    nominal = st.setpoints.temperature.nominal if st.setpoints.temperature else temp_set
    temp0 = th.initial_c if th.initial_c is not None else nominal
    lo, hi, tau, gain, cap = (
        th.ideal_min_c,
        th.ideal_max_c,
        th.time_constant_s,
        st.scrap.temperature_gain,
        st.scrap.max,
    )

    def at(t: float) -> float:
        temp = temp_set + (temp0 - temp_set) * math.exp(-t / tau)
        d = max(lo - temp, temp - hi, 0.0)
        return min(p + gain * d * d, cap)

    if temp0 == temp_set:
        return at(0.0)
    return at


def _processing_sampler(st: Station, mean: float, rng: random.Random) -> Callable[[], float]:
    """Return a function that draws one gamma or lognormal processing time, s, of mean `mean`."""
    cv = float(st.cv or 1.0)
    if st.processing == "gamma":
        k = 1.0 / (cv * cv)
        return lambda: rng.gammavariate(k, mean / k)
    sigma = math.sqrt(math.log1p(cv * cv))
    mu = math.log(mean) - 0.5 * sigma * sigma
    return lambda: rng.lognormvariate(mu, sigma)


def _repair_sampler(st: Station, rng: random.Random) -> Callable[[], float]:
    """Return a function that draws one lognormal repair time, s, of mean `mttr_s`."""
    sigma = math.sqrt(math.log1p(float(st.repair_cv or 1.0) ** 2))
    mu = math.log(st.mttr_s or 1.0) - 0.5 * sigma * sigma
    return lambda: rng.lognormvariate(mu, sigma)


class SimpyLine:
    """A line spec as a SimPy model; `run(until_s)` advances it, counters say what happened."""

    def __init__(
        self,
        spec: LineSpec,
        seed: int,
        setpoints: Mapping[str, Mapping[str, float]] | None = None,
    ) -> None:
        self.spec = spec
        self.env = simpy.Environment()
        self.rng = random.Random(seed)
        self.station_ops = 0
        self.good_out = 0
        self.scrapped = 0
        self.failures = 0
        n = spec.n_stations
        self._buffers: list[simpy.Store] = []
        self._handoff: list[bool] = []
        for st in spec.stations[:-1]:
            cap = int(st.buffer_after or 0)
            self._buffers.append(simpy.Store(self.env, capacity=max(cap, 1)))
            self._handoff.append(cap == 0)
        sps = _station_setpoints(spec, setpoints)
        for i, st in enumerate(spec.stations):
            speed, temp = sps[i]
            upstream = self._buffers[i - 1] if i > 0 else None
            downstream = self._buffers[i] if i < n - 1 else None
            self.env.process(
                self._station(
                    st,
                    speed,
                    temp,
                    upstream,
                    self._handoff[i - 1] if i > 0 else False,
                    downstream,
                    self._handoff[i] if i < n - 1 else False,
                )
            )

    def run(self, until_s: float) -> None:
        """Advance the model to `until_s` seconds of line time."""
        self.env.run(until=until_s)

    def _station(
        self,
        st: Station,
        speed: float,
        temp_set: float | None,
        upstream: simpy.Store | None,
        take_handshake: bool,
        downstream: simpy.Store | None,
        give_handshake: bool,
    ):
        """The life of one station: take a part, process it through failures, pass it on."""
        env = self.env
        timeout = env.timeout
        rand = self.rng.random
        log = math.log
        mean = st.cycle_time_s / speed
        # Exponential and deterministic laws inline, as before the other laws came: the
        # benchmark's reference model stays as fast as it was.
        expo = st.processing == "exponential"
        other = None if st.processing in ("exponential", "deterministic") else st.processing
        work_time = _processing_sampler(st, mean, self.rng)
        fail_rate = 1.0 / st.mtbf_s if st.mtbf_s else 0.0
        mttr = st.mttr_s or 0.0
        repair_time = _repair_sampler(st, self.rng) if st.repair_law != "exponential" else None
        gain = st.wear.failure_gain
        weibull = st.failure_law == "weibull"
        beta = st.failure_shape or 1.0
        eta = (st.mtbf_s or 0.0) / math.gamma(1.0 + 1.0 / beta)
        direct = weibull and gain == 0.0  # busy lifetime drawn whole: Weibull(eta, beta)
        weibullvariate = self.rng.weibullvariate
        wear_rate = (speed / st.setpoints.speed.nominal) ** st.wear.speed_exponent / 3600.0
        scrap = _scrap_probability(st, speed, temp_set)
        scrap_at = scrap if callable(scrap) else None
        p_scrap = 0.0 if callable(scrap) else float(scrap)
        # Busy seconds left to the failure (direct), else the failure-hazard budget, Exp(1).
        life = weibullvariate(eta, beta) if direct else -log(1.0 - rand())
        wear = 0.0  # equivalent busy hours since the last repair
        age = 0.0  # busy seconds since the last repair
        get = upstream.get if upstream is not None else None
        put = downstream.put if downstream is not None else None
        while True:
            if get is not None:
                token = yield get()
                if take_handshake:
                    token.succeed()
            work = mean * -log(1.0 - rand()) if expo else (work_time() if other else mean)
            if fail_rate > 0.0:
                while True:  # one uninterrupted busy stretch per pass
                    m = 1.0 + gain * wear
                    if direct:
                        ttf = life
                    elif weibull:
                        spent = (age / eta) ** beta
                        ttf = eta * (spent + life / m) ** (1.0 / beta) - age
                    else:
                        ttf = life / (fail_rate * m)
                    if ttf < work:
                        yield timeout(ttf)
                        self.failures += 1
                        work -= ttf
                        wear += ttf * wear_rate
                        if repair_time is None:
                            yield timeout(mttr * -log(1.0 - rand()))
                        else:
                            yield timeout(repair_time())
                        wear = 0.0
                        age = 0.0
                        life = weibullvariate(eta, beta) if direct else -log(1.0 - rand())
                    else:
                        if direct:
                            life -= work
                        elif weibull:
                            used = m * (((age + work) / eta) ** beta - spent)
                            life = max(life - used, 0.0)
                        else:
                            life = max(life - fail_rate * m * work, 0.0)
                        age += work
                        wear += work * wear_rate
                        break
            yield timeout(work)
            self.station_ops += 1
            p = scrap_at(env.now) if scrap_at is not None else p_scrap
            if p > 0.0 and rand() < p:
                self.scrapped += 1
            elif put is None:
                self.good_out += 1
            elif give_handshake:
                taken = env.event()
                yield put(taken)
                yield taken
            else:
                yield put(None)


def simulate_simpy(
    spec: LineSpec,
    hours: float,
    seed: int,
    setpoints: Mapping[str, Mapping[str, float]] | None = None,
    *,
    warmup_hours: float = 0.0,
    batches: int = 1,
) -> dict[str, Any]:
    """Run the SimPy model of `spec` from an empty line and count what `hours` of it make.

    The counts cover `hours` after `warmup_hours`; `setpoints` is `{station: {name: value}}`
    held for the whole run (nominal where absent). Returns station_ops (parts finished by any
    station, scrapped ones included), good_out, scrapped, failures (of all stations), hours,
    and good_out_batches: good
    parts in each of `batches` equal consecutive windows (for batch-means standard errors).
    """
    if not hours > 0 or warmup_hours < 0 or batches < 1:
        raise ValueError(
            f"need hours > 0, warmup_hours >= 0, batches >= 1 (got {hours}, "
            f"{warmup_hours}, {batches})"
        )
    line = SimpyLine(spec, seed, setpoints)
    t0 = warmup_hours * 3600.0
    if t0 > 0:
        line.run(t0)
    ops0, good0, scrap0, fails0 = line.station_ops, line.good_out, line.scrapped, line.failures
    per_batch = []
    last = good0
    for b in range(1, batches + 1):
        line.run(t0 + hours * 3600.0 * b / batches)
        per_batch.append(line.good_out - last)
        last = line.good_out
    return {
        "station_ops": line.station_ops - ops0,
        "good_out": line.good_out - good0,
        "scrapped": line.scrapped - scrap0,
        "failures": line.failures - fails0,
        "hours": float(hours),
        "good_out_batches": per_batch,
    }
