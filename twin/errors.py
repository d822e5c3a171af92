"""Errors raised by the twin package: one base class, a short tree."""


class TwinError(Exception):
    """Base class of every error the twin raises on purpose."""


class SpecError(TwinError, ValueError):
    """A line spec is invalid: the message names the file, the key path and the bad value."""


class SetpointError(TwinError, ValueError):
    """Setpoints handed to the twin are malformed or outside their limits."""


class RecordingError(TwinError, ValueError):
    """A recording cannot be written or read back (bad file, wrong schema, damaged metadata)."""


class DeviceError(TwinError, RuntimeError):
    """The requested compute device is not available (for example CUDA without a GPU)."""
