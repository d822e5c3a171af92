"""Errors raised by the models package: one base class, a short tree."""


class ModelError(Exception):
    """Base class of every error the models package raises on purpose."""


class CheckpointError(ModelError, ValueError):
    """A checkpoint is missing, damaged, or made for another line."""


class DatasetError(ModelError, ValueError):
    """A dataset file is missing, damaged, or made for another line."""


class ModelDeviceError(ModelError, RuntimeError):
    """The requested torch device is not available (for example CUDA without a GPU)."""
