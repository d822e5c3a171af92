"""Run the kernel over all scenarios on CPU threads (numba prange)."""

from __future__ import annotations

import numpy as np

from linetwin.twin.kernel import advance_all_parallel, advance_all_serial
from linetwin.twin.params import LineParams
from linetwin.twin.state import TwinState


class CpuEngine:
    """Advance a host-resident TwinState with compiled CPU code."""

    name = "cpu"

    def __init__(self, lp: LineParams, state: TwinState, parallel_from: int = 2) -> None:
        self.lp = lp
        self.state = state
        self.parallel_from = parallel_from

    def advance(self, setpoints: np.ndarray, t0: float, t1: float) -> int:
        """Advance every scenario from t0 to t1 s; return the number of events processed."""
        st = self.state
        events = np.zeros(st.n_scenarios, dtype=np.int64)
        run = advance_all_parallel if st.n_scenarios >= self.parallel_from else advance_all_serial
        run(
            st.fstate,
            st.istate,
            self.lp.params,
            self.lp.capacity,
            st.level,
            st.counts,
            st.rng,
            st.tnext,
            setpoints,
            float(t0),
            float(t1),
            events,
        )
        return int(events.sum())

    def set_column(self, field: int, values: np.ndarray) -> None:
        """Overwrite per-station float state `fstate[:, :, field]` with `values (n_sc, n_st)`."""
        self.state.fstate[:, :, field] = values

    def host_state(self) -> TwinState:
        """Return a copy of the state on the host."""
        return self.state.copy()
