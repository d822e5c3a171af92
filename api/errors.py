"""Errors raised by the api package (service, CLI)."""


class ApiError(Exception):
    """Base class of every error the api package raises on purpose."""


class UsageError(ApiError, ValueError):
    """A command-line input is invalid: the message names the value and where it came from."""
