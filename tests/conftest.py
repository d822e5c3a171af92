"""Fixtures shared by the tests of several packages (api, replay)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from clirun import Result

from linetwin.cli.main import main
from linetwin.models.checkpoint import save
from linetwin.models.device import torch_threads
from linetwin.models.pipeline import TrainSettings, train_surrogate
from linetwin.models.train import TrainConfig
from linetwin.twin import bundled_spec
from linetwin.twin.spec import LineSpec


@pytest.fixture(scope="session")
def two() -> LineSpec:
    """The bundled two-station line."""
    return bundled_spec("two-station")


@pytest.fixture(scope="session")
def model_dir(two: LineSpec, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny 4-hour surrogate of the two-station line, trained once per session, saved."""
    settings = TrainSettings.for_horizon(
        4 * 3600, samples=1500, eval_states=20, config=TrainConfig(hidden=(16, 16), max_epochs=40)
    )
    with torch_threads(1):
        model, _ = train_surrogate(two, settings)
    return save(model, tmp_path_factory.mktemp("model"))


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Any:
    """Run `linetwin ARGS...` in this process; return its exit code, stdout and stderr."""

    def run(*args: str | Path) -> Result:
        capsys.readouterr()
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        out, err = capsys.readouterr()
        return Result(code, out, err)

    return run
