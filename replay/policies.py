"""Name the policies a replay compares: what the plant did, nominal, and optimizer versions.

    recorded          the setpoints in the recording (what the plant ran)
    nominal           the line's nominal setpoints
    optimizer         the fast optimizer on the replay's model (`--model`, else the line's
                      bundled checkpoint)
    optimizer:DIR     the fast optimizer on the checkpoint in DIR (another model version)
    exact[:DIR]       the exact (MIP) method on that model

Each optimizer policy gets its own controller (closed mode, its own guard) and its
decisions are deterministic: the solver runs to its iteration limit, never to a wall-clock
deadline, so the same inputs give the same decisions on any machine load.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from linetwin.models.checkpoint import load
from linetwin.models.errors import ModelError
from linetwin.models.surrogate import Surrogate
from linetwin.replay.errors import ReplayError
from linetwin.twin.spec import LineSpec

KINDS = ("recorded", "nominal", "optimizer", "exact")
DEFAULT_POLICIES = ("recorded", "nominal", "optimizer")


@dataclass(frozen=True)
class Policy:
    """A named policy: `kind` one of KINDS; optimizer kinds carry their surrogate."""

    name: str
    kind: str
    model: Surrogate | None = None
    model_dir: str | None = None

    @property
    def decides(self) -> bool:
        """Whether the policy runs a controller (optimizer or exact)."""
        return self.kind in ("optimizer", "exact")


def load_model(model_dir: str | Path, spec: LineSpec, source: str) -> Surrogate:
    """Load the checkpoint in `model_dir` for `spec`; errors name `source` (flag or policy)."""
    try:
        return load(model_dir, spec)
    except (ModelError, OSError) as exc:
        raise ReplayError(f"{source}: cannot load model {str(model_dir)!r}: {exc}") from None


def parse_policies(
    names: Sequence[str], spec: LineSpec, default_model: str | Path | None
) -> list[Policy]:
    """Turn policy names (see the module docstring) into policies; the first is the
    reference the others are compared against."""
    if not names:
        names = DEFAULT_POLICIES
    seen: set[str] = set()
    out: list[Policy] = []
    loaded: dict[str, Surrogate] = {}
    for name in names:
        if name in seen:
            raise ReplayError(f"--policy {name!r} is given twice")
        seen.add(name)
        kind, _, arg = name.partition(":")
        if kind not in KINDS:
            raise ReplayError(
                f"--policy {name!r}: unknown policy (choose from recorded, nominal, "
                "optimizer[:DIR], exact[:DIR])"
            )
        if kind in ("recorded", "nominal"):
            if arg:
                raise ReplayError(f"--policy {name!r}: {kind} takes no model directory")
            out.append(Policy(name, kind))
            continue
        model_dir = arg or (None if default_model is None else str(default_model))
        if model_dir is None:
            raise ReplayError(
                f"--policy {name!r}: no model (give --model DIR or {kind}:DIR; only the "
                "bundled example line ships one)"
            )
        if model_dir not in loaded:
            loaded[model_dir] = load_model(model_dir, spec, f"--policy {name!r}")
        out.append(Policy(name, kind, loaded[model_dir], model_dir))
    return out
