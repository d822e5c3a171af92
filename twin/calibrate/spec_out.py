"""Write the fitted line spec: the skeleton with the fitted values put in, as TOML.

The file is the skeleton's spec with every default filled in (so it says everything the twin
will use), a header naming the log it was fitted on, and it loads back with `load_spec` to the
same spec (checked before the file is written).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from linetwin.twin.calibrate.errors import CalibrationError
from linetwin.twin.errors import SpecError
from linetwin.twin.spec import LineSpec, loads_spec, parse_spec


def fitted_spec(skeleton: LineSpec, updates: Mapping[str, Mapping[str, Any]]) -> LineSpec:
    """Return `skeleton` with `updates` `{station: {dotted key: value}}` applied (a value of
    None removes the key, for law parameters a new law does not take)."""
    data = skeleton.model_dump(mode="json", exclude_none=True)
    for st in data["stations"]:
        for key, value in updates.get(st["name"], {}).items():
            node = st
            *path, last = key.split(".")
            for part in path:
                node = node.setdefault(part, {})
            if value is None:
                node.pop(last, None)
            else:
                node[last] = value
    try:
        return parse_spec(data, "<fitted spec>")
    except SpecError as exc:  # a fit outside the spec's ranges is a bug worth a clear message
        raise CalibrationError(f"the fitted values do not make a valid spec: {exc}") from None


def spec_toml(spec: LineSpec, header: str = "") -> str:
    """Return `spec` as TOML text (every default filled in), `header` as leading comments."""
    data = spec.model_dump(mode="json", exclude_none=True)
    lines = [f"# {h}".rstrip() for h in header.splitlines()]
    _table(lines, [], {k: v for k, v in data.items() if k != "stations"})
    for st in data["stations"]:
        lines.append("")
        lines.append("[[stations]]")
        _table(lines, ["stations"], st)
    text = "\n".join(lines).strip("\n") + "\n"
    back = loads_spec(text, "<fitted spec text>")
    if back != spec:
        raise CalibrationError("the fitted spec does not read back as written (a bug)")
    return text


def write_spec(path: str | os.PathLike[str], spec: LineSpec, header: str = "") -> None:
    """Write `spec` as TOML to `path` atomically (a temporary file renamed into place)."""
    target = Path(path)
    text = spec_toml(spec, header)
    tmp = target.with_name(f".{target.name}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(target)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise CalibrationError(
            f"{target}: cannot write the fitted spec: {exc.strerror or exc}"
        ) from None


def _table(lines: list[str], path: list[str], data: Mapping[str, Any]) -> None:
    subs = []
    for key, value in data.items():
        if isinstance(value, Mapping):
            subs.append((key, value))
        else:
            lines.append(f"{key} = {_value(value)}")
    for key, value in subs:
        lines.append(f"[{'.'.join([*path, key])}]")
        _table(lines, [*path, key], value)


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            raise CalibrationError(f"cannot write the non-finite value {v} to a spec")
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    raise CalibrationError(f"cannot write {v!r} to a spec")
