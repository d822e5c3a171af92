"""The CUDA driver of the kernel: one thread per scenario (imported only when CUDA is used).

Kept apart from `twin.engine_cuda` because importing numba.cuda is slow, and with `cuda` as a
module global numba's CUDA simulator can stand in for a GPU in the tests.
"""

from numba import cuda

from linetwin.twin.kernel import advance


@cuda.jit
def advance_all_cuda(fs, ist, par, cap, lev, cnt, rng, tnext, sp, t0, t1, events):
    """Advance every scenario from t0 to t1 s; thread s handles scenario s."""
    s = cuda.grid(1)  # type: ignore[call-arg,var-annotated]
    if s < fs.shape[0]:
        events[s] = advance(fs, ist, par, cap, lev, cnt, rng, tnext, sp, s, t0, t1)
