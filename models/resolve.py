"""Find the surrogate a job should use: a given checkpoint, the shipped one, or a cached one,
training the line's default model first when there is none.

    model = load_or_train(spec, None, cache_root=data_dir / "models")
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from linetwin.models.checkpoint import load, save
from linetwin.models.pipeline import Stage, TrainSettings, train_surrogate
from linetwin.models.pretrained import bundled_checkpoint
from linetwin.models.surrogate import Surrogate
from linetwin.twin.spec import LineSpec

STEADY_STATE_HORIZON_S = 4 * 3600.0
"""Horizon of the optimizer's default model, s: long enough that the start state fades (the
optimizer sets steady-state targets; a 30-minute model rewards draining buffers)."""


def model_cache_dir(cache_root: str | Path, spec: LineSpec) -> Path:
    """The folder that caches `spec`'s default model under `cache_root` (by spec hash)."""
    return Path(cache_root) / spec.spec_hash()[:16]


def load_or_train(
    spec: LineSpec,
    model_dir: str | Path | None,
    *,
    cache_root: str | Path,
    progress: Stage | None = None,
    on_train: Callable[[Path], None] | None = None,
) -> Surrogate:
    """Load `model_dir`; without one, the checkpoint shipped for `spec`, else the one cached
    under `cache_root`, else train the default model (`STEADY_STATE_HORIZON_S`), cache it and
    return it. `on_train(folder)` is told before a training starts (it takes minutes)."""
    if model_dir is not None:
        return load(model_dir, spec)
    shipped = bundled_checkpoint(spec)
    if shipped is not None:
        return load(shipped, spec)
    folder = model_cache_dir(cache_root, spec)
    if (folder / "model.json").is_file():
        return load(folder, spec)
    if on_train is not None:
        on_train(folder)
    model, _report = train_surrogate(
        spec, TrainSettings.for_horizon(STEADY_STATE_HORIZON_S), progress=progress
    )
    save(model, folder)
    return model
