"""Checkpoints shipped with the package, for the bundled lines (4-hour horizon, the optimizer's).

`bundled_checkpoint(spec)` returns the folder of the shipped model trained for exactly that
spec, or None: a changed spec never gets a stale model.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

from linetwin.twin.spec import LineSpec

NAMES = ("example",)


def bundled_checkpoint(spec: LineSpec) -> Path | None:
    """Return the shipped checkpoint folder trained for `spec`, or None if there is none."""
    want = spec.spec_hash()
    for name in NAMES:
        folder = Path(str(resources.files("linetwin.models.pretrained") / name))
        meta = folder / "model.json"
        if meta.is_file() and json.loads(meta.read_text(encoding="utf-8")).get("spec_hash") == want:
            return folder
    return None
