"""`linetwin train`: writes a loadable checkpoint and reports held-out metrics as JSON."""

from __future__ import annotations

import contextlib
import io
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from linetwin.cli.main import main
from linetwin.models import checkpoint
from linetwin.models.errors import CheckpointError
from linetwin.twin import bundled_spec


@dataclass
class Run:
    code: int
    out: str
    err: str
    seconds: float


def run_cli(*args: str | Path) -> Run:
    """Run `linetwin ARGS...` in this process; return exit code, stdout, stderr, wall time."""
    out, err = io.StringIO(), io.StringIO()
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return Run(code, out.getvalue(), err.getvalue(), time.perf_counter() - t0)


def strict_json(text: str) -> Any:
    """Parse JSON, refusing NaN and infinities."""

    def refuse(name: str) -> None:
        raise ValueError(f"non-standard JSON constant {name}")

    return json.loads(text, parse_constant=refuse)


@pytest.fixture(scope="module")
def trained_cli(tmp_path_factory: pytest.TempPathFactory) -> tuple[Run, Path]:
    """One `linetwin train` run of the two-station line with 512 samples on the CPU."""
    mp = pytest.MonkeyPatch()
    mp.delenv("LINETWIN_TRACEBACK", raising=False)
    try:
        folder = tmp_path_factory.mktemp("cli-train") / "model"
        args = ("train", "--line", "two-station", "--samples", "512", "--out", folder)
        res = run_cli(*args, "--json", "--device", "cpu")
    finally:
        mp.undo()
    return res, folder


def test_train_prints_one_json_object_with_metrics(trained_cli: tuple[Run, Path]) -> None:
    res, folder = trained_cli
    assert res.code == 0, res.err
    assert res.out.endswith("\n") and res.out.count("\n") == 1  # one JSON object, one line
    report = strict_json(res.out)
    assert report["checkpoint"] == str(folder)
    assert report["device"] == "cpu"
    m, tr = report["metrics"], report["training"]
    assert m["device"] == "cpu"
    r2 = m["kpis"]["throughput_per_hour"]["r2"]
    assert isinstance(r2, float) and 0.5 < r2 <= 1.0
    cal = m["calibration"]
    assert cal["nominal"] == 0.9 and 0.5 <= cal["coverage_mean"] <= 1.0
    assert set(cal["coverage"]) >= {"energy_kwh_per_hour", "utilisation.a", "utilisation.b"}
    assert tr["samples"] == 512 and tr["train"] + tr["valid"] == 512
    for key in ("total_seconds", "fit_seconds", "data_seconds"):
        assert isinstance(tr[key], float) and 0 < tr[key] <= res.seconds
    assert tr["total_seconds"] >= tr["fit_seconds"]
    assert m["ood"]["threshold"] > 0


def test_train_writes_a_checkpoint_that_loads(trained_cli: tuple[Run, Path]) -> None:
    res, folder = trained_cli
    assert res.code == 0, res.err
    spec = bundled_spec("two-station")
    model = checkpoint.load(folder, spec)
    report = strict_json(res.out)
    assert model.ood_threshold == report["metrics"]["ood"]["threshold"]
    assert model.metadata["training"]["samples"] == 512
    rng = np.random.default_rng(0)
    schema = model.schema
    state = model.ood_reference[:1, : schema.n_state]
    sp = schema.lower + rng.random((50, schema.n_setpoints)) * (schema.upper - schema.lower)
    pred = model.predict(state, sp)
    assert np.isfinite(pred.mean).all() and pred.mean.shape == (50, schema.n_outputs)
    # faster stations make more good parts: the model learned the obvious
    slow = model.predict(state, schema.lower[None, :]).mean[0, 0]
    fast = model.predict(state, schema.upper[None, :]).mean[0, 0]
    assert fast > slow
    with pytest.raises(CheckpointError, match="another line"):
        checkpoint.load(folder, bundled_spec("example"))


def test_checkpoint_metadata_is_strict_json(trained_cli: tuple[Run, Path]) -> None:
    res, folder = trained_cli
    assert res.code == 0, res.err
    meta = strict_json((folder / checkpoint.META).read_text(encoding="utf-8"))
    assert meta["format_version"] == checkpoint.FORMAT_VERSION


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is present")
def test_train_on_cuda_without_a_gpu_fails_with_one_line(tmp_path: Path) -> None:
    out = tmp_path / "model"
    args = ("train", "--line", "two-station", "--samples", "512", "--out", out)
    res = run_cli(*args, "--json", "--device", "cuda")
    assert res.code == 2
    assert res.out == ""
    assert res.err.startswith("linetwin: error: ") and res.err.count("\n") == 1
    assert "cuda" in res.err and "Traceback" not in res.err
    assert not out.exists()  # refused before any work
    assert res.seconds < 10


def test_train_refuses_too_few_samples(tmp_path: Path) -> None:
    res = run_cli("train", "--line", "two-station", "--samples", "10", "--out", tmp_path / "m")
    assert res.code == 2
    assert "--samples" in res.err
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("horizon", ["0", "-5", "nan", "inf"])
def test_train_refuses_a_non_positive_horizon(tmp_path: Path, horizon: str) -> None:
    out = tmp_path / "m"
    res = run_cli("train", "--line", "two-station", "--horizon-s", horizon, "--out", out)
    assert res.code == 2
    assert res.err.startswith("linetwin: error: ") and res.err.count("\n") == 1
    assert "--horizon-s" in res.err
    assert not out.exists()
