"""Save and load surrogates: weights in safetensors, everything else in a JSON file beside them.

A checkpoint is a folder holding `model.safetensors` and `model.json`. Loading checks the
format version, that both files are intact and agree, and that the model was trained for the
line it is loaded for.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from linetwin.models.errors import CheckpointError, ModelError
from linetwin.models.features import FeatureSchema
from linetwin.models.network import EnsembleMLP
from linetwin.models.surrogate import Surrogate
from linetwin.twin.jsonable import finite_json
from linetwin.twin.spec import LineSpec

FORMAT_VERSION = 1
WEIGHTS = "model.safetensors"
META = "model.json"


def package_version() -> str:
    """Return the installed linetwin version, or 'unknown'."""
    try:
        return importlib_metadata.version("linetwin")
    except importlib_metadata.PackageNotFoundError:
        return "unknown"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save(surrogate: Surrogate, folder: str | Path) -> Path:
    """Write the surrogate into `folder` (created if needed); return the folder."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    net = surrogate.net
    tensors = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    tensors["band_scale"] = torch.as_tensor(surrogate.band_scale, dtype=torch.float64)
    tensors["ood_reference"] = torch.as_tensor(surrogate.ood_reference, dtype=torch.float64)
    fd, tmp = tempfile.mkstemp(dir=out, prefix=f".{WEIGHTS}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata={"spec_hash": surrogate.schema.spec_hash})
        os.replace(tmp, out / WEIGHTS)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    meta: dict[str, Any] = {
        **{k: v for k, v in surrogate.metadata.items() if k in ("training", "metrics", "dataset")},
        "format_version": FORMAT_VERSION,
        "package_version": package_version(),
        "spec_hash": surrogate.schema.spec_hash,
        "schema": surrogate.schema.to_json(),
        "architecture": {
            "hidden": list(net.hidden),
            "members": net.members,
            "n_in": net.n_in,
            "n_out": net.n_out,
            "activation": "relu",
        },
        "ood": {"threshold": surrogate.ood_threshold, "k": surrogate.ood_k},
        "weights_sha256": _sha256(out / WEIGHTS),
    }
    _write_atomic(out / META, json.dumps(finite_json(meta), indent=2, allow_nan=False).encode())
    return out


def load(
    folder: str | Path, spec: LineSpec | None = None, device: torch.device | str = "cpu"
) -> Surrogate:
    """Load a surrogate; with `spec`, refuse a model trained for another line."""
    src = Path(folder)
    meta_path, weights_path = src / META, src / WEIGHTS
    for p in (meta_path, weights_path):
        if not p.is_file():
            raise CheckpointError(f"{p}: missing (a checkpoint folder holds {META} and {WEIGHTS})")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        arch = meta["architecture"]
        version = meta["format_version"]
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{meta_path}: damaged checkpoint metadata ({exc!r})") from None
    if version != FORMAT_VERSION:
        raise CheckpointError(f"{meta_path}: checkpoint format {version!r} is not {FORMAT_VERSION}")
    if meta.get("weights_sha256") != _sha256(weights_path):
        raise CheckpointError(f"{weights_path}: damaged weights (checksum does not match {META})")
    try:
        schema = FeatureSchema.from_json(meta["schema"])
    except (KeyError, TypeError, ModelError) as exc:
        raise CheckpointError(f"{meta_path}: damaged feature schema ({exc})") from None
    if (schema.n_inputs, schema.n_outputs) != (arch.get("n_in"), arch.get("n_out")):
        raise CheckpointError(
            f"{meta_path}: schema has {schema.n_inputs} inputs and {schema.n_outputs} outputs "
            f"but the network {arch.get('n_in')} and {arch.get('n_out')}"
        )
    if spec is not None and schema.spec_hash != spec.spec_hash():
        raise CheckpointError(
            f"{src}: model was trained for another line (spec hash {schema.spec_hash[:12]}…, "
            f"line {spec.name!r} has {spec.spec_hash()[:12]}…)"
        )
    try:
        tensors = load_file(str(weights_path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{weights_path}: unreadable weights ({exc})") from None
    try:
        net = EnsembleMLP(
            int(arch["n_in"]), int(arch["n_out"]), tuple(arch["hidden"]), int(arch["members"])
        )
        band = tensors.pop("band_scale").numpy()
        ref = tensors.pop("ood_reference").numpy()
        net.load_state_dict(tensors)
        ood = meta["ood"]
        extra = {k: v for k, v in meta.items() if k in ("training", "metrics", "dataset")}
        return Surrogate(
            schema,
            net,
            np.asarray(band, dtype=float),
            np.asarray(ref, float),
            float(ood["threshold"]),
            int(ood["k"]),
            extra,
            torch.device(device),
        )
    except (KeyError, RuntimeError, ValueError, TypeError) as exc:
        raise CheckpointError(f"{src}: checkpoint does not match its metadata ({exc})") from None
