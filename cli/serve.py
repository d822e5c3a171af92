"""`linetwin serve`: the real-time twin, the controller and the HTTP API in one process."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from linetwin.cli.common import load_line, load_or_train

if TYPE_CHECKING:
    from linetwin.api.runtime import Runtime

MODES = ("closed", "advisory", "manual")
PLANTS = ("twin", "external")
OPCUA_WAIT_S = 30.0
"""Wall s `serve --opcua` waits for the first connection before giving up with the reason."""


@click.command("serve")
@click.option("--line", "line", metavar="FILE", help="Line spec TOML (or a bundled name).")
@click.option(
    "--model", "model_dir", metavar="DIR", help="Surrogate checkpoint folder [default: cached]."
)
@click.option(
    "--data-dir",
    "data_dir",
    metavar="DIR",
    help="Data directory [default: $LINETWIN_DATA_DIR or ~/.local/share/linetwin].",
)
@click.option("--host", default=None, help="Address to listen on [default: 127.0.0.1].")
@click.option("--port", type=int, default=None, help="TCP port [default: 8000].")
@click.option("--mode", type=click.Choice(MODES), default=None, help="Mode at start [advisory].")
@click.option("--speed", type=float, default=None, help="Line seconds per wall second [60].")
@click.option(
    "--record",
    "record",
    metavar="FILE.parquet",
    help="Record every snapshot, or with --plant external every row ingested (complete once "
    "the service stops; for `linetwin replay`).",
)
@click.option(
    "--plant",
    type=click.Choice(PLANTS),
    default=None,
    help="The plant: the real-time twin, or an external line sending rows to "
    "POST /v1/plant/snapshots or read through --opcua [twin].",
)
@click.option(
    "--stale-after",
    "stale_after_s",
    type=click.FloatRange(0, min_open=True),
    default=None,
    metavar="S",
    help="External plant: its data are stale after S wall s without a row [60].",
)
@click.option(
    "--opcua",
    "opcua",
    metavar="MAPPING.toml",
    help="External plant: read it and write closed-mode setpoints through OPC UA (docs/opcua.md).",
)
def serve(
    line: str | None,
    model_dir: str | None,
    data_dir: str | None,
    host: str | None,
    port: int | None,
    mode: str | None,
    speed: float | None,
    record: str | None,
    plant: str | None,
    stale_after_s: float | None,
    opcua: str | None,
) -> None:
    """Run the line's real-time twin (or, with --plant external, follow a real line's
    data), the controller and the API until SIGTERM or Ctrl-C.

    Every option can also come from `LINETWIN_<OPTION>` (`LINETWIN_PORT=8080`); with no API key
    in the database yet, an admin key is created and printed, this once.
    """
    import uvicorn

    from linetwin.api.app import create_app
    from linetwin.api.errors import UsageError
    from linetwin.api.runtime import Runtime
    from linetwin.api.settings import Settings

    settings = Settings.load(
        line=line,
        model_dir=model_dir,
        data_dir=data_dir,
        host=host,
        port=port,
        mode=mode,
        speed=speed,
        record=record,
        plant=plant,
        stale_after_s=stale_after_s,
        opcua=opcua,
    )
    if settings.opcua is not None and settings.plant != "external":
        raise UsageError("--opcua reads an external plant: it needs --plant external")
    spec = load_line(settings.line)
    model = load_or_train(
        spec, None if settings.model_dir is None else str(settings.model_dir), False
    )
    runtime = Runtime(settings, spec, model)
    try:
        if not runtime.keys.list():
            new = runtime.keys.create(
                "admin", "created by linetwin serve", actor="serve", reason="first start"
            )
            click.echo(f"admin key (shown once, store it now): {new.key}")
        app = create_app(runtime)
        config = uvicorn.Config(
            app,
            host=settings.host,
            port=settings.port,
            log_level="info",
            access_log=False,  # one log line per poll cost ~42% of throughput (bench/api.py)
            lifespan="off",
        )
        server = _Server(config, runtime)
        runtime.start(OPCUA_WAIT_S)
        pace = f"{settings.speed:g}x" if settings.plant == "twin" else "external plant"
        if settings.opcua is not None:
            pace += f" over OPC UA ({settings.opcua})"
        click.echo(
            f"serving line {spec.name!r} on http://{settings.host}:{settings.port} "
            f"({runtime.mode} mode, {pace}); data in {settings.data_dir}",
            err=True,
        )
        # uvicorn shuts down gracefully on SIGTERM or SIGINT, then `_Server.shutdown` stops
        # the runtime, then uvicorn re-raises the signal (the exit status says which).
        server.run()
    finally:
        runtime.stop()


def _server_class() -> type:
    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn's server that stops the runtime once its connections are closed."""

        def __init__(self, config: uvicorn.Config, runtime: Runtime) -> None:
            super().__init__(config)
            self.runtime = runtime

        async def shutdown(self, sockets: Any = None) -> None:
            self.runtime.close_streams()  # open event streams end, so connections drain
            await super().shutdown(sockets)
            self.runtime.stop()  # finishes the current cycle's write, closes the storage
            click.echo("linetwin serve: stopped", err=True)

    return Server


def _Server(config: Any, runtime: Runtime) -> Any:  # noqa: N802
    return _server_class()(config, runtime)
