"""`linetwin calibrate`: fit a skeleton line spec to a plant's log and validate it.

    linetwin calibrate --recording plant.csv --line skeleton.toml --out fitted.toml \\
        [--holdout 0.25] [--report report.html] [--json]

A `.csv` plant log (the layout of `docs/recordings.md`) is imported first into a temporary
recording with `replay.importer.import_csv`; a `.parquet` recording is read as it is. What the
fit does is in `docs/calibrate.md`.
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path
from typing import Any

import click

from linetwin.api.errors import UsageError
from linetwin.cli.common import load_line
from linetwin.replay.errors import ReplayError
from linetwin.twin.jsonable import finite_json


@click.command("calibrate")
@click.option(
    "--recording", "recording", required=True, metavar="FILE",
    help="The log: a .parquet recording or a .csv plant log.",
)  # fmt: skip
@click.option(
    "--line", "line", required=True, metavar="SKELETON.toml",
    help="Skeleton line spec (TOML or a bundled name): names, buffers, limits, economics.",
)  # fmt: skip
@click.option("--out", "out", required=True, metavar="FITTED.toml", help="Fitted spec to write.")
@click.option(
    "--holdout", type=float, default=0.25, show_default=True,
    help="Share of the log's last rows held out for validation (0: none).",
)  # fmt: skip
@click.option(
    "--replications", type=click.IntRange(2, 4096), default=32, show_default=True,
    help="Twin runs per validation.",
)  # fmt: skip
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--report", "report", metavar="REPORT.html", help="Write an HTML report.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def calibrate_command(
    recording: str,
    line: str,
    out: str,
    holdout: float,
    replications: int,
    seed: int,
    report: str | None,
    as_json: bool,
) -> None:
    """Fit the line's parameters to a log, with uncertainty, and validate on its tail."""
    from linetwin.twin.calibrate import calibrate, write_spec

    if not (math.isfinite(holdout) and 0.0 <= holdout < 0.9):
        raise UsageError(f"--holdout must be in [0, 0.9), got {holdout}")
    skeleton = load_line(line)
    src = Path(recording)
    with tempfile.TemporaryDirectory(prefix="linetwin-calibrate-") as tmp:
        path = src
        if src.suffix.lower() == ".csv":
            from linetwin.replay.importer import import_csv

            path = Path(tmp) / f"{src.stem}.parquet"
            try:
                import_csv(src, skeleton, path)
            except ReplayError as exc:
                raise UsageError(str(exc)) from None
        elif not src.is_file():
            raise UsageError(f"{src}: no such file")
        result = calibrate(
            path, skeleton, holdout=holdout, replications=replications, seed=seed,
            skeleton_source=line,
        )  # fmt: skip
    result.recording = str(src)
    result.summary["recording"] = str(src)
    header = (
        f"Fitted by linetwin calibrate from {src.name} on the skeleton {line}.\n"
        f"{result.summary['fitted']} parameters fitted, {result.summary['kept']} kept from the "
        "skeleton (run with --json or --report for the reasons and intervals)."
    )
    write_spec(out, result.spec, header)
    if report:
        from linetwin.twin.calibrate.report import write_report

        write_report(report, result)
    data = result.as_json()
    data["out"] = out
    if report:
        data["report"] = report
    if as_json:
        click.echo(json.dumps(finite_json(data)))
        return
    _print(data)


def _print(d: dict[str, Any]) -> None:
    click.echo(
        f"{d['out']}: {d['fitted']} parameters fitted, {d['kept']} kept from the skeleton, "
        f"from {d['rows']} rows of {d['recording']} in {d['seconds']:.1f} s"
    )
    for p in d["parameters"]:
        if p["status"] == "kept":
            click.echo(f"  kept   {p['station']}.{p['key']}: {p['reason']}")
    for c in d["laws"]:
        click.echo(f"  law    {c['what']}: {c['law']} ({c['reason']})")
    summary = d.get("validation_summary")
    if summary:
        cov = summary["coverage"]
        click.echo(
            f"  held-out tail {summary['tail_h']:.2f} h: plant inside the 95% interval on "
            f"{cov['fitted']['inside']}/{cov['fitted']['rows']} rows (fitted), "
            f"{cov['skeleton']['inside']}/{cov['skeleton']['rows']} (skeleton)"
        )
    for r in d["validation"]:
        if r["station"] is None:
            f, s = r["fitted"], r["skeleton"]
            click.echo(
                f"    {r['kpi']}: plant {_fmt(r['plant'])}, fitted "
                f"[{_fmt(f['low'])}, {_fmt(f['high'])}], skeleton "
                f"[{_fmt(s['low'])}, {_fmt(s['high'])}]"
            )


def _fmt(x: Any) -> str:
    return "-" if x is None else f"{x:.4g}"
