"""Fixtures shared by the api tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from clirun import Result

from api.cli import main


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
