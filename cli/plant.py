"""`linetwin plant`: a plant to connect the service to (`plant emulate`)."""

from __future__ import annotations

import json
import signal
import threading
from dataclasses import asdict
from typing import Any

import click

from linetwin.cli.common import load_line


@click.group("plant")
def plant_group() -> None:
    """An emulated plant for the service's external mode (`serve --plant external`)."""


@plant_group.command("emulate")
@click.argument("url")
@click.option("--key", envvar="LINETWIN_KEY", required=True, help="API key [env: LINETWIN_KEY].")
@click.option("--line", "line", metavar="FILE", help="Line spec TOML (or a bundled name).")
@click.option(
    "--mismatch",
    default="",
    metavar="NAME=FACTOR,...",
    help="Hidden factors on the emulated line: cycle, scrap, mtbf, mttr, energy "
    "(e.g. cycle=1.15,scrap=1.2,mtbf=0.9).",
)
@click.option(
    "--speed",
    type=click.FloatRange(0, min_open=True),
    default=1.0,
    show_default=True,
    help="Plant seconds per wall second.",
)
@click.option(
    "--tick",
    "tick_s",
    type=click.FloatRange(0, min_open=True),
    default=1.0,
    show_default=True,
    help="Plant seconds between rows.",
)
@click.option(
    "--batch-rows",
    type=click.IntRange(1, 100_000),
    default=10,
    show_default=True,
    help="Rows per POST.",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--hours",
    type=click.FloatRange(0, min_open=True),
    default=None,
    help="Stop after this many plant hours.",
)
@click.option("--no-poll", is_flag=True, help="Do not poll or apply published setpoints.")
def emulate(
    url: str,
    key: str,
    line: str | None,
    mismatch: str,
    speed: float,
    tick_s: float,
    batch_rows: int,
    seed: int,
    hours: float | None,
    no_poll: bool,
) -> None:
    """Run a twin of the line, perturbed by --mismatch, as a real line at URL's service: post
    its rows to URL/v1/plant/snapshots and apply the setpoints polled from URL/v1/setpoints.
    Prints one JSON line of what it did when it stops (--hours, or Ctrl-C)."""
    from linetwin.api.emulator import Emulator, parse_mismatch

    spec = load_line(line)
    emulator = Emulator(
        spec,
        url,
        key,
        mismatch=parse_mismatch(mismatch),
        seed=seed,
        speed=speed,
        tick_s=tick_s,
        batch_rows=batch_rows,
        poll=not no_poll,
    )
    stop = threading.Event()
    previous = signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        stats = emulator.run(stop, hours=hours)
    finally:
        signal.signal(signal.SIGINT, previous)
        emulator.close()
    out: dict[str, Any] = asdict(stats)
    out["versions"] = stats.versions[-5:]
    out.update(line=spec.name, mismatch=asdict(emulator.mismatch), pending_rows=emulator.pending)
    click.echo(json.dumps(out))
