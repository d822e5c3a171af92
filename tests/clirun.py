"""Run the `linetwin` command line in the test process and capture what it printed."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Result:
    """Exit code, stdout and stderr of one `linetwin` run."""

    code: int
    out: str
    err: str
