"""Run the kernel over all scenarios on CUDA threads, one thread per scenario (numba-cuda).

The per-scenario code is `twin.kernel.advance`, the same compiled function the CPU engine
runs: numba-cuda compiles `@njit` functions called from a CUDA kernel for the device. The state
stays on the GPU between steps; snapshots copy it back.
"""

from __future__ import annotations

import numpy as np

from linetwin.twin.errors import DeviceError
from linetwin.twin.params import LineParams
from linetwin.twin.state import TwinState

_THREADS_PER_BLOCK = 128


def cuda_available() -> bool:
    """Return whether numba-cuda is installed and sees a usable GPU."""
    try:
        from numba import cuda
    except ImportError:
        return False
    try:
        return bool(cuda.is_available())
    except Exception:  # driver probing can fail in many ways; all mean "no GPU"
        return False


class CudaEngine:
    """Advance a GPU-resident copy of a TwinState with one CUDA thread per scenario."""

    name = "cuda"

    def __init__(self, lp: LineParams, state: TwinState) -> None:
        if not cuda_available():
            raise DeviceError(
                "device 'cuda' was requested but no CUDA GPU is usable here "
                "(install the 'cuda' extra and check the NVIDIA driver), use --device cpu"
            )
        from numba import cuda

        self._cuda = cuda
        self.lp = lp
        self._par = cuda.to_device(lp.params)
        self._cap = cuda.to_device(lp.capacity)
        self._arrays = {
            name: cuda.to_device(getattr(state, name))
            for name in ("fstate", "istate", "level", "counts", "rng", "tnext")
        }
        self._n = state.n_scenarios

    def advance(self, setpoints: np.ndarray, t0: float, t1: float) -> int:
        """Advance every scenario from t0 to t1 s; return the number of events processed."""
        cuda = self._cuda
        a = self._arrays
        events = cuda.device_array(self._n, dtype=np.int64)
        sp = cuda.to_device(np.ascontiguousarray(setpoints))
        blocks = (self._n + _THREADS_PER_BLOCK - 1) // _THREADS_PER_BLOCK
        from linetwin.twin.cuda_kernel import advance_all_cuda

        advance_all_cuda[blocks, _THREADS_PER_BLOCK](
            a["fstate"],
            a["istate"],
            self._par,
            self._cap,
            a["level"],
            a["counts"],
            a["rng"],
            a["tnext"],
            sp,
            float(t0),
            float(t1),
            events,
        )
        return int(events.copy_to_host().sum())

    def set_column(self, field: int, values: np.ndarray) -> None:
        """Overwrite per-station float state `fstate[:, :, field]` with `values (n_sc, n_st)`."""
        fs = self._arrays["fstate"].copy_to_host()
        fs[:, :, field] = values
        self._arrays["fstate"] = self._cuda.to_device(fs)

    def host_state(self) -> TwinState:
        """Copy the state back to the host."""
        a = self._arrays
        return TwinState(**{name: arr.copy_to_host() for name, arr in a.items()})
