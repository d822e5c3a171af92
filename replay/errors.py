"""Errors of the replay package."""

from __future__ import annotations


class ReplayError(Exception):
    """Base of every error `replay` raises; the message names the bad value and its source."""


class ImportCsvError(ReplayError):
    """A plant log that does not follow the documented CSV layout (names row and column)."""
