"""Choose the torch device: `auto` takes CUDA when a GPU is usable, else the CPU."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from linetwin.models.errors import ModelDeviceError

DEVICES = ("auto", "cpu", "cuda")


def resolve_torch_device(name: str) -> torch.device:
    """Map 'auto' | 'cpu' | 'cuda' to a torch device; raise ModelDeviceError if impossible."""
    if name not in DEVICES:
        raise ModelDeviceError(f"unknown device {name!r} (choose one of: {', '.join(DEVICES)})")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ModelDeviceError(
            "device 'cuda' was requested but torch sees no CUDA GPU here "
            "(this torch build: " + torch.__version__ + "); use --device cpu"
        )
    return torch.device(name)


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with `n` torch intra-op threads, then restore the previous count.

    Small batches (the optimizer's per-cycle work) must not wait on a thread pool: on a 2-core
    machine with other work running, a 129-row ensemble forward took 82 ms on 2 threads and
    1.5 ms on 1 (docs/design.md).
    """
    before = torch.get_num_threads()
    if before == n:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
