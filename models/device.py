"""Choose the torch device: `auto` takes CUDA when a GPU is usable, else the CPU."""

from __future__ import annotations

import torch

from models.errors import ModelDeviceError

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
