"""The calibration's error: a `TwinError`, so the command line reports it in one line."""

from __future__ import annotations

from linetwin.twin.errors import TwinError


class CalibrationError(TwinError, ValueError):
    """A log cannot be calibrated on: the message names the file and the offending value."""
