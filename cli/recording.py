"""`linetwin recording import|export`: plant logs (CSV) to recordings (Parquet) and back.

    linetwin recording import plant.csv --line line.toml --out plant.parquet
    linetwin recording export run.parquet --out run.csv

The CSV layout is documented in `docs/recordings.md` ("Importing plant logs (CSV)"). Errors in
the data print one line naming the file, the CSV line, the column and the bad value, and exit
with status 2; no output file is left behind.
"""

from __future__ import annotations

import json
from collections import Counter

import click

from linetwin.api.errors import UsageError
from linetwin.cli.common import load_line
from linetwin.replay.errors import ReplayError

json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
overwrite_option = click.option("--overwrite", is_flag=True, help="Replace an existing --out file.")


@click.group("recording")
def recording_group() -> None:
    """Import plant logs as recordings; export recordings as CSV."""


@recording_group.command("import")
@click.argument("csv_path", metavar="CSV")
@click.option(
    "--line", "line", required=True, metavar="FILE", help="Line spec TOML (or a bundled name)."
)
@click.option("--out", "out", required=True, metavar="OUT.parquet", help="Recording to write.")
@click.option("--note", default="", help="Note stored in the recording [default: its source].")
@overwrite_option
@json_option
def recording_import(
    csv_path: str, line: str, out: str, note: str, overwrite: bool, as_json: bool
) -> None:
    """Convert a plant log CSV (documented layout) into a recording."""
    from linetwin.replay.importer import import_csv

    spec = load_line(line)
    try:
        summary = import_csv(csv_path, spec, out, note=note, overwrite=overwrite)
    except ReplayError as exc:
        raise UsageError(str(exc)) from None
    if as_json:
        click.echo(json.dumps(summary.to_json()))
        return
    click.echo(
        f"{summary.out_path}: {summary.n_rows} rows of line {summary.line!r} "
        f"({summary.n_stations} stations), time_s {summary.first_time_s:g} .. "
        f"{summary.last_time_s:g}"
        + (f", time 0 = {summary.start_timestamp}" if summary.start_timestamp else "")
    )
    if summary.derived:
        click.echo(f"derived or filled (not in the CSV): {_derived_text(summary.derived)}")


def _derived_text(names: tuple[str, ...]) -> str:
    """Summarise `released, a.wear, b.wear` as `released, wear (2 stations)`."""
    fields = Counter(name.rpartition(".")[2] for name in names if "." in name)
    parts = [name for name in names if "." not in name]
    parts += [f"{field} ({n} station{'s' * (n != 1)})" for field, n in fields.items()]
    return ", ".join(parts)


@recording_group.command("export")
@click.argument("recording", metavar="REC")
@click.option("--out", "out", required=True, metavar="OUT.csv", help="CSV file to write.")
@click.option("--scenario", type=click.IntRange(0), default=0, show_default=True)
@overwrite_option
@json_option
def recording_export(
    recording: str, out: str, scenario: int, overwrite: bool, as_json: bool
) -> None:
    """Write one scenario of a recording as a CSV plant log."""
    from linetwin.replay.csv_export import export_csv

    try:
        rows = export_csv(recording, out, scenario=scenario, overwrite=overwrite)
    except ReplayError as exc:
        raise UsageError(str(exc)) from None
    if as_json:
        click.echo(json.dumps({"csv_path": out, "recording": recording, "n_rows": rows}))
    else:
        click.echo(f"{out}: {rows} rows of scenario {scenario}")
