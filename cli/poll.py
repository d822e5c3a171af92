"""`linetwin poll`: follow the setpoint service and print each new decision."""

from __future__ import annotations

import json
import threading
from typing import Any

import click

from linetwin.api.errors import UsageError


@click.command("poll")
@click.argument("url")
@click.option("--key", envvar="LINETWIN_KEY", required=True, help="API key [env: LINETWIN_KEY].")
@click.option("--once", is_flag=True, help="Return after the first decision.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object a line.")
@click.option(
    "--ack",
    is_flag=True,
    help="Acknowledge each applied decision as applied unchanged (needs a controller key).",
)
@click.option(
    "--wait", "wait_s", type=float, default=25.0, show_default=True, help="Long-poll wait, s."
)
@click.option(
    "--stale-after",
    "stale_after_s",
    type=float,
    default=30.0,
    show_default=True,
    help="Seconds without an answer before the setpoints count as stale.",
)
def poll(
    url: str, key: str, once: bool, as_json: bool, ack: bool, wait_s: float, stale_after_s: float
) -> None:
    """Long-poll the service at URL and print one line per new decision: its version, its
    setpoints, whether they are stale and whether the service applied them (false: advice
    awaiting an engineer, in advisory or manual mode; never acknowledged by --ack).

    When the server stays silent for --stale-after seconds, a line with the last-known-good
    setpoints and `stale: true` is printed (and one with `stale: false` when it answers
    again); with --once, that is an error instead. Errors print one line and exit 2.
    """
    from linetwin.api.client import PolledDecision, PollerError, SetpointPoller

    stop = threading.Event()
    seen: list[int] = []

    def emit(event: str, decision: PolledDecision | None, stale: bool) -> None:
        line: dict[str, Any] = {
            "event": event,
            "version": None if decision is None else decision.version,
            "setpoints": None if decision is None else decision.setpoints,
            "stale": stale,
            "applied": None if decision is None else decision.applied,
        }
        if decision is not None:
            line["mode"] = decision.payload.get("mode")
            line["fallback"] = decision.payload.get("fallback")
        if as_json:
            click.echo(json.dumps(line))
            return
        state = "STALE" if stale else "fresh"
        if decision is None:
            click.echo(f"{event}: no decision yet ({state})")
            return
        values = "  ".join(
            f"{station}.{name}={value:g}"
            for station, entries in decision.setpoints.items()
            for name, value in entries.items()
        )
        kind = "" if decision.applied else ", advice only"
        click.echo(f"{event} version {decision.version} ({state}{kind}): {values}")

    def apply(decision: PolledDecision) -> None:
        # called by the poller right after the server answered: never stale here
        emit("decision", decision, False)
        seen.append(decision.version)
        if once:
            stop.set()

    def on_stale(stale: bool) -> None:
        if once:  # --once wants a decision, not a report of silence
            stop.set()
            return
        emit("stale" if stale else "fresh", poller.latest, stale)

    try:
        poller = SetpointPoller(
            url,
            key,
            apply=apply,
            on_stale=on_stale,
            on_advice=apply,  # printed too; acknowledged never
            acknowledge=ack,
            wait_s=wait_s,
            stale_after_s=stale_after_s,
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    with poller:
        try:
            poller.run(stop)
        except PollerError as exc:
            raise UsageError(str(exc)) from None
    if once and not seen:
        raise UsageError(
            f"no decision from {url} within {stale_after_s:g} s: {poller.stats.last_error}"
        )
