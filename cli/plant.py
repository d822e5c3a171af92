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
@click.argument("url", required=False)
@click.option("--key", envvar="LINETWIN_KEY", help="API key [env: LINETWIN_KEY].")
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
@click.option(
    "--opcua",
    "opcua",
    metavar="MAPPING.toml",
    help="Serve the emulated line as an OPC UA server on the mapping's endpoint and nodes "
    "(instead of posting to URL); certificates are made in the mapping's certs folder when "
    "missing, the password comes from the mapping's password_env.",
)
def emulate(
    url: str | None,
    key: str | None,
    line: str | None,
    mismatch: str,
    speed: float,
    tick_s: float,
    batch_rows: int,
    seed: int,
    hours: float | None,
    no_poll: bool,
    opcua: str | None,
) -> None:
    """Run a twin of the line, perturbed by --mismatch, as a real line at URL's service: post
    its rows to URL/v1/plant/snapshots and apply the setpoints polled from URL/v1/setpoints
    (or, with --opcua, serve them as an OPC UA server for `serve --opcua`). Prints one JSON
    line of what it did when it stops (--hours, or Ctrl-C)."""
    from linetwin.api.emulator import Emulator, parse_mismatch

    spec = load_line(line)
    if opcua is not None:
        _serve_opcua(spec, opcua, parse_mismatch(mismatch), seed, speed, tick_s, hours)
        return
    if not url or not key:
        raise click.UsageError("URL and --key (or LINETWIN_KEY) are needed without --opcua")
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


def _serve_opcua(
    spec: Any,
    mapping_path: str,
    mismatch: Any,
    seed: int,
    speed: float,
    tick_s: float,
    hours: float | None,
) -> None:
    """Serve the perturbed line's real-time twin on the mapping's OPC UA nodes until Ctrl-C
    or `hours` of plant time."""
    from linetwin.api.emulator import perturb
    from linetwin.api.opcua_certs import demo_certificates
    from linetwin.api.opcua_mapping import load_mapping
    from linetwin.api.opcua_server import serve_opcua
    from linetwin.twin.realtime import RealtimeTwin
    from linetwin.twin.sim import Twin

    mapping = load_mapping(mapping_path, spec)  # the line as given: names and limits
    server_pair: dict[str, Any] = {"server_certificate": None, "server_private_key": None}
    trusted = mapping.security.server_certificate
    if trusted is not None:
        certs = demo_certificates(trusted.parent)  # kept when they exist
        server_pair = {k: certs[k] for k in server_pair}
    twin = RealtimeTwin(Twin(perturb(spec, mismatch), 1, seed=seed), tick_s, speed)
    server = serve_opcua(spec, mapping, twin, **server_pair)
    click.echo(f"serving line {spec.name!r} over OPC UA at {mapping.endpoint}", err=True)
    stop = threading.Event()
    previous = signal.signal(signal.SIGINT, lambda *_: stop.set())
    twin.start()
    try:
        end = float("inf") if hours is None else hours * 3600.0
        while not stop.wait(0.2):
            latest = twin.latest
            if latest is not None and latest.time_s >= end:
                break
    finally:
        signal.signal(signal.SIGINT, previous)
        twin.stop()
        server.stop()
    latest = twin.latest
    out = {
        "line": spec.name,
        "mismatch": asdict(mismatch),
        "endpoint": mapping.endpoint,
        "time_s": None if latest is None else latest.time_s,
        "writes_applied": server.writes_applied,
        "writes_refused": server.writes_refused,
    }
    click.echo(json.dumps(out))
