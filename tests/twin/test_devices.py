"""Device choice, and the CUDA engine run on numba's CUDA simulator (no GPU needed)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from linetwin.twin import DeviceError, Twin, bundled_spec, resolve_device
from linetwin.twin.engine_cuda import cuda_available

ROOT = Path(__file__).resolve().parents[2]

SIMULATED = textwrap.dedent(
    """
    import sys, warnings
    import numpy as np
    # Pure-Python uint64 arithmetic wraps as intended but numpy warns about it.
    warnings.filterwarnings("ignore", "overflow encountered", RuntimeWarning)
    from linetwin.twin import Twin, bundled_spec
    twin = Twin(bundled_spec(sys.argv[2]), 5, seed=4, device="cuda")
    assert twin.device == "cuda"
    twin.step(900.0)
    twin.set_setpoints(np.where(twin.params.present, np.nan_to_num(twin.params.upper), 0.0))
    snap = twin.step(900.0)
    np.savez(sys.argv[1], fstate=snap.state.fstate, istate=snap.state.istate,
             counts=snap.state.counts, level=snap.state.level, rng=snap.state.rng)
    """
)


@pytest.mark.skipif(cuda_available(), reason="a real GPU is present: the simulator is not used")
def test_cuda_requested_without_a_gpu_is_a_clear_error():
    with pytest.raises(DeviceError, match="no CUDA GPU is usable here"):
        Twin(bundled_spec(), 2, seed=0, device="cuda")
    assert resolve_device("auto") == "cpu"


def test_unknown_device_is_refused():
    with pytest.raises(DeviceError, match="unknown device 'tpu'"):
        resolve_device("tpu")


@pytest.mark.parametrize("line", ["two-station", "example", "varied"])
def test_cuda_engine_matches_the_cpu_engine_bit_for_bit(tmp_path, line):
    """The CUDA driver on numba's simulator runs the same kernel as the compiled CPU engine."""
    out = tmp_path / "cuda.npz"
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1", NUMBA_DISABLE_JIT="1", PYTHONPATH=str(ROOT))
    subprocess.run(
        [sys.executable, "-c", SIMULATED, str(out), line], env=env, check=True, timeout=300
    )
    got = np.load(out)
    cpu = Twin(bundled_spec(line), 5, seed=4, device="cpu")
    cpu.step(900.0)
    cpu.set_setpoints(np.where(cpu.params.present, np.nan_to_num(cpu.params.upper), 0.0))
    snap = cpu.step(900.0)
    assert snap.completed.sum() > 0
    for name in ("fstate", "istate", "counts", "level", "rng"):
        assert np.array_equal(got[name], getattr(snap.state, name)), name
