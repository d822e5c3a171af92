"""The batched line twin: `Twin.step` advances every scenario and returns a snapshot."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from linetwin.twin import layout as L
from linetwin.twin.engine_cpu import CpuEngine
from linetwin.twin.engine_cuda import CudaEngine, cuda_available
from linetwin.twin.errors import DeviceError, TwinError
from linetwin.twin.params import (
    LineParams,
    compile_params,
    nominal_setpoints,
    setpoints_from_mapping,
    validate_setpoint_array,
)
from linetwin.twin.sensors import SensorFault, Sensors
from linetwin.twin.snapshot import Snapshot
from linetwin.twin.spec import LineSpec
from linetwin.twin.state import (
    TwinState,
    concat_states,
    initial_state,
    redraw_memoryless,
    seed_streams,
    set_initial_temperature,
)

DEVICES = ("auto", "cpu", "cuda")

SetpointInput = np.ndarray | Mapping[str, Mapping[str, float]]


def resolve_device(device: str) -> str:
    """Map 'auto' | 'cpu' | 'cuda' to the device to use; raise DeviceError if impossible."""
    if device not in DEVICES:
        raise DeviceError(f"unknown device {device!r} (choose one of: {', '.join(DEVICES)})")
    if device == "auto":
        return "cuda" if cuda_available() else "cpu"
    return device


def start_state(
    spec: LineSpec,
    n_scenarios: int,
    rng: np.random.Generator | Sequence[np.random.Generator],
    time_s: float = 0.0,
    params: LineParams | None = None,
) -> TwinState:
    """Return `n_scenarios` empty lines at `time_s` s: the state a new twin starts from.

    Every station starved, buffers empty, clocks seeded, thermal stations at their spec's
    initial temperature. `rng` is one Generator for every scenario, or one Generator per
    scenario: scenario k then draws from `rng[k]` exactly what `Twin(spec, 1, rng=rng[k])`
    draws for its state, so it starts as that twin would.
    """
    lp = compile_params(spec) if params is None else params
    if isinstance(rng, np.random.Generator):
        state = initial_state(lp, n_scenarios, rng, float(time_s))
    else:
        if len(rng) != n_scenarios:
            raise TwinError(f"{len(rng)} generators given for {n_scenarios} scenarios")
        state = concat_states([initial_state(lp, 1, g, float(time_s)) for g in rng])
    for i, st in enumerate(spec.stations):
        if st.thermal is not None and st.thermal.initial_c is not None:
            set_initial_temperature(state, i, st.thermal.initial_c)
    return state


class Twin:
    """`n_scenarios` independent copies of one line, advanced together.

    Every random draw comes from `rng` (or `np.random.default_rng(seed)`): the same seed,
    setpoints and steps give the same run, bit for bit, on a given device.
    """

    def __init__(
        self,
        spec: LineSpec,
        n_scenarios: int = 1,
        *,
        seed: int | None = None,
        rng: np.random.Generator | None = None,
        device: str = "cpu",
        setpoints: SetpointInput | None = None,
        faults: Sequence[SensorFault] = (),
        state: TwinState | None = None,
        time_s: float = 0.0,
    ) -> None:
        if isinstance(n_scenarios, bool) or not isinstance(n_scenarios, int) or n_scenarios < 1:
            raise TwinError(f"n_scenarios must be a positive integer, got {n_scenarios!r}")
        if rng is None:
            rng = np.random.default_rng(seed)
        self.spec = spec
        self.params: LineParams = compile_params(spec)
        self.n_scenarios = n_scenarios
        if state is None:
            state = start_state(spec, n_scenarios, rng, float(time_s), self.params)
        elif state.n_scenarios != n_scenarios:
            raise TwinError(f"state has {state.n_scenarios} scenarios, expected {n_scenarios}")
        self.time_s = float(time_s)
        self.events = 0
        self._setpoints = nominal_setpoints(self.params, n_scenarios)
        if setpoints is not None:
            self.set_setpoints(setpoints)
        self.sensors = Sensors(
            spec,
            self.params,
            np.random.default_rng(seed_streams(rng, (4,))),
            faults,
            n_scenarios,
        )
        self.device = resolve_device(device)
        self._engine = self._make_engine(state)

    def _make_engine(self, state: TwinState) -> CpuEngine | CudaEngine:
        """Return an engine of this twin's device that holds `state`."""
        if self.device == "cuda":
            return CudaEngine(self.params, state)
        return CpuEngine(self.params, state)

    @property
    def setpoints(self) -> np.ndarray:
        """Setpoints in force, a copy `(n_scenarios, n_stations, 2)`: speed, temperature °C."""
        return self._setpoints.copy()

    def set_setpoints(self, setpoints: SetpointInput, source: str = "setpoints") -> None:
        """Hold new setpoints from the next step on: an array or `{station: {name: value}}`.

        Raises SetpointError (naming `source`) for unknown names or values outside limits.
        """
        if isinstance(setpoints, Mapping):
            sp = setpoints_from_mapping(self.spec, self.params, setpoints, self.n_scenarios, source)
        else:
            sp = np.array(setpoints, dtype=np.float64)
            if sp.ndim == 2:
                sp = np.broadcast_to(sp, (self.n_scenarios, *sp.shape)).copy()
            validate_setpoint_array(self.params, sp, source)
            if sp.shape[0] != self.n_scenarios:
                raise TwinError(
                    f"{source}: {sp.shape[0]} scenarios given, twin has {self.n_scenarios}"
                )
            sp = np.where(self.params.present, sp, 0.0)
        self._setpoints = sp

    def set_wear(self, wear_h: np.ndarray) -> None:
        """Set every station's wear since its last repair, equivalent busy hours
        `(n_scenarios, n_stations)` (for what-if runs and for sampling training states).

        The failure rate follows from the next busy stretch on. A Weibull station's busy age
        (busy seconds since its last repair) is set to match: `wear * 3600` divided by the
        wear rate at the speed in force.
        """
        w = np.asarray(wear_h, dtype=float)
        if w.shape != (self.n_scenarios, self.spec.n_stations) or not (
            np.isfinite(w).all() and (w >= 0).all()
        ):
            raise TwinError(
                f"wear must be finite, >= 0 and of shape ({self.n_scenarios}, "
                f"{self.spec.n_stations}), got shape {w.shape}"
            )
        self._engine.set_column(L.F_WEAR, w)
        weibull = self.params.params[:, L.P_FAIL_LAW] == L.LAW_WEIBULL
        if weibull.any():
            fs = self._engine.host_state().fstate
            rate = fs[:, :, L.F_WEAR_RATE]
            age = np.where(weibull, w * 3600.0 / np.where(rate > 0, rate, 1.0), fs[:, :, L.F_AGE])
            self._engine.set_column(L.F_AGE, age)

    def reset_scenarios(
        self,
        scenarios: Sequence[int] | np.ndarray,
        rng: np.random.Generator | Sequence[np.random.Generator],
    ) -> None:
        """Restart some scenarios as empty lines at nominal setpoints, at the current time.

        `scenarios` is a boolean mask `(n_scenarios,)` or distinct scenario indices; the other
        scenarios are untouched. Their new state is drawn as `start_state` draws it (one
        Generator for all, or one per restarted scenario, in order). Cumulative counters of the
        restarted scenarios start again from zero.
        """
        sel = np.asarray(scenarios)
        if sel.dtype == bool:
            if sel.shape != (self.n_scenarios,):
                raise TwinError(
                    f"scenario mask must have shape ({self.n_scenarios},), got {sel.shape}"
                )
            idx = np.flatnonzero(sel)
        else:
            if sel.size and not np.issubdtype(sel.dtype, np.integer):
                raise TwinError(f"scenarios must be integer indices or a mask, got {sel.dtype}")
            idx = sel.astype(np.int64).reshape(-1)
            bad = (idx < 0) | (idx >= self.n_scenarios)
            if bad.any():
                raise TwinError(
                    f"scenario {int(idx[bad][0])} is not in the twin (it has {self.n_scenarios})"
                )
            if np.unique(idx).size != idx.size:
                raise TwinError(f"scenarios to reset repeat an index: {idx.tolist()}")
        if idx.size == 0:
            return
        fresh = start_state(self.spec, int(idx.size), rng, self.time_s, self.params)
        state = self._engine.host_state()
        state.put(idx, fresh)
        self._engine = self._make_engine(state)
        self._setpoints[idx] = nominal_setpoints(self.params, int(idx.size))

    def advance(self, dt_s: float) -> None:
        """Advance every scenario by `dt_s` seconds of line time, without a snapshot."""
        if not np.isfinite(dt_s) or dt_s < 0:
            raise TwinError(f"step length must be a finite non-negative number of s, got {dt_s}")
        self.events += self._engine.advance(self._setpoints, self.time_s, self.time_s + dt_s)
        self.time_s += float(dt_s)

    def step(self, dt_s: float) -> Snapshot:
        """Advance every scenario by `dt_s` seconds and return the snapshot at the end."""
        self.advance(dt_s)
        return self.snapshot()

    def snapshot(self) -> Snapshot:
        """Return the line now: exact state, sensor readings and setpoints in force."""
        state = self._engine.host_state()
        readings = self.sensors.read(state.fstate, state.istate, self.time_s)
        return Snapshot(self.spec, self.time_s, state, self._setpoints.copy(), readings)

    def run(
        self,
        duration_s: float,
        tick_s: float | None = None,
        on_tick: Callable[[Snapshot], Any] | None = None,
    ) -> Snapshot:
        """Advance by `duration_s`; with `tick_s`, call `on_tick` with a snapshot every tick.

        Without ticks the whole duration is one kernel call (the fastest way to simulate).
        """
        if tick_s is None:
            self.advance(duration_s)
            snap = self.snapshot()
            if on_tick is not None:
                on_tick(snap)
            return snap
        if not tick_s > 0:
            raise TwinError(f"tick_s must be positive, got {tick_s}")
        n_ticks = int(np.ceil(duration_s / tick_s - 1e-9))
        end = self.time_s + duration_s
        snap = self.snapshot()
        for _ in range(n_ticks):
            snap = self.step(min(tick_s, end - self.time_s))
            if on_tick is not None:
                on_tick(snap)
        return snap

    @classmethod
    def fork(
        cls,
        snapshot: Snapshot,
        n_scenarios: int,
        *,
        scenario: int | Sequence[int] | np.ndarray = 0,
        seed: int | None = None,
        rng: np.random.Generator | None = None,
        device: str = "cpu",
        faults: Sequence[SensorFault] = (),
    ) -> Twin:
        """Start `n_scenarios` what-if runs from a snapshot.

        `scenario` names the snapshot scenario every fork starts from, or gives one source
        scenario per fork (a sequence of length `n_scenarios`). Each fork gets fresh random
        streams from `rng`/`seed` (so the forks differ); forking twice with the same seed gives
        the same streams (common random numbers). Memoryless clocks are redrawn (exact in law);
        the remaining times of non-memoryless ones (deterministic, gamma and lognormal parts,
        lognormal repairs) and the busy age of Weibull stations are state and are kept
        (`twin.state.redraw_memoryless`).
        """
        source = np.broadcast_to(np.asarray(scenario, dtype=np.int64), (n_scenarios,))
        bad = (source < 0) | (source >= snapshot.n_scenarios)
        if bad.any():
            raise TwinError(
                f"scenario {int(source[bad][0])} is not in the snapshot "
                f"(it has {snapshot.n_scenarios})"
            )
        if rng is None:
            rng = np.random.default_rng(seed)
        state = snapshot.state.take(source)
        state.rng[...] = seed_streams(rng, state.rng.shape)
        redraw_memoryless(state, compile_params(snapshot.spec), rng, snapshot.time_s)
        twin = cls(
            snapshot.spec,
            n_scenarios,
            rng=rng,
            device=device,
            state=state,
            time_s=snapshot.time_s,
            faults=faults,
        )
        twin.set_setpoints(snapshot.setpoints[source])
        return twin
