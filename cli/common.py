"""What the commands share: one-line errors, loading a line or a model, progress bars."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, NoReturn

import click

from linetwin.api.errors import UsageError
from linetwin.twin.spec import BUNDLED_LINES, LineSpec, bundled_spec, load_spec


def fail(message: str) -> NoReturn:
    """Print a one-line error to stderr and exit with status 2."""
    click.echo(f"linetwin: error: {' | '.join(message.splitlines())}", err=True)
    sys.exit(2)


def load_line(line: str | None) -> LineSpec:
    """Load `--line`: a TOML file path, or the name of a bundled line; default: the example."""
    if line is None:
        return bundled_spec("example")
    path = Path(line)
    if not path.exists() and line in BUNDLED_LINES:
        return bundled_spec(line)
    return load_spec(path)


def read_setpoints_file(path: str) -> dict[str, Any]:
    """Read a `--setpoints` JSON file: `{station: {setpoint: value}}`."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"{path}: cannot read setpoints file: {exc.strerror or exc}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(
            f"{path}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
        ) from None
    if not isinstance(data, dict):
        raise UsageError(f"{path}: expected a JSON object of stations, got {type(data).__name__}")
    return data


def load_or_train(spec: LineSpec, model_dir: str | None, quiet: bool) -> Any:
    """Load `--model`, or the line's shipped or cached default model, training it first if
    there is none (with a progress bar unless `quiet`)."""
    from linetwin.api.storage import default_data_dir
    from linetwin.models.resolve import load_or_train as resolve

    def training(folder: Path) -> None:
        click.echo(
            f"no model given and none cached for line {spec.name!r}: training the default "
            f"model (a few minutes on 2 cores) into {folder}",
            err=True,
        )

    with StageBar(enabled=not quiet) as progress:
        return resolve(
            spec, model_dir, cache_root=default_data_dir() / "models", progress=progress,
            on_train=training,
        )  # fmt: skip


class ProgressBar:
    """A rich progress bar on stderr for long runs (shown only on a terminal)."""

    def __init__(self, enabled: bool, description: str = "simulating") -> None:
        from rich.console import Console
        from rich.progress import Progress

        console = Console(stderr=True)
        self.bar = Progress(
            console=console, transient=True, disable=not (enabled and console.is_terminal)
        )
        self.task = self.bar.add_task(description, total=1.0)

    def __enter__(self) -> Any:
        self.bar.start()
        return lambda done: self.bar.update(self.task, completed=done)

    def __exit__(self, *exc: object) -> None:
        self.bar.stop()


class StageBar:
    """A rich progress bar with one task per named stage (shown only on a terminal)."""

    def __init__(self, enabled: bool, description: str = "simulating") -> None:
        from rich.console import Console
        from rich.progress import Progress

        console = Console(stderr=True)
        self.bar = Progress(
            console=console, transient=True, disable=not (enabled and console.is_terminal)
        )
        self.tasks: dict[str, Any] = {}

    def __enter__(self) -> Any:
        self.bar.start()

        def update(stage: str, done: float) -> None:
            if stage not in self.tasks:
                self.tasks[stage] = self.bar.add_task(stage, total=1.0)
            self.bar.update(self.tasks[stage], completed=done)

        return update

    def __exit__(self, *exc: object) -> None:
        self.bar.stop()
