"""Wait for a condition in tests that run servers and threads."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_until(cond: Callable[[], object], timeout: float = 20.0, poll_s: float = 0.02) -> None:
    """Return once `cond()` is true; fail the test after `timeout` s."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met in {timeout:g} s")
        time.sleep(poll_s)
