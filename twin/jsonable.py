"""Make data strict JSON: NaN and infinities become null (shared by every package)."""

from __future__ import annotations

import math
from typing import Any


def finite_json(value: Any) -> Any:
    """Replace NaN and infinities by None, recursively, in dicts, lists and tuples."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite_json(v) for v in value]
    return value
