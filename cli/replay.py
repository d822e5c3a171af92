"""`linetwin replay`: decision replay and counterfactual runs of a recording, with a report.

linetwin replay run.parquet --policy recorded --policy optimizer --seeds 16 --out out/
"""

from __future__ import annotations

import json
from typing import Any

import click

from linetwin.cli.common import ProgressBar
from linetwin.replay.policies import DEFAULT_POLICIES


@click.command("replay")
@click.argument("recording", metavar="RECORDING")
@click.option(
    "--model",
    "model",
    metavar="DIR",
    help="Checkpoint of the optimizer policies [default: the line's bundled one].",
)
@click.option(
    "--policy",
    "policies",
    multiple=True,
    metavar="NAME",
    help="recorded | nominal | optimizer[:DIR] | exact[:DIR]; repeat to compare; the first "
    f"is the reference [default: {' '.join(DEFAULT_POLICIES)}].",
)
@click.option(
    "--cadence", type=float, default=60.0, show_default=True, help="Decision period, line s."
)
@click.option(
    "--seeds",
    type=click.IntRange(0, 4096),
    default=16,
    show_default=True,
    help="Counterfactual continuations per start (0: decision replay only).",
)
@click.option(
    "--horizon",
    type=float,
    default=3600.0,
    show_default=True,
    help="Length of each counterfactual run, line s (a multiple of --cadence).",
)
@click.option(
    "--closed-loop",
    is_flag=True,
    help="Optimizer policies decide on each forked line every period (a controller per fork; "
    "slow) instead of following what they decided on the recorded line.",
)
@click.option("--scenario", type=click.IntRange(0), default=0, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of every draw.")
@click.option("--out", "out", default="replay-out", show_default=True, metavar="DIR")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object.")
def replay_command(
    recording: str,
    model: str | None,
    policies: tuple[str, ...],
    cadence: float,
    seeds: int,
    horizon: float,
    closed_loop: bool,
    scenario: int,
    seed: int,
    out: str,
    as_json: bool,
) -> None:
    """Replay a recording: what each policy would have decided at each decision point, and
    forked twin runs of every policy from the recorded states (KPI differences with 95%
    intervals). Writes Parquet tables, summary.json and report.html into --out."""
    from linetwin.models.pretrained import bundled_checkpoint
    from linetwin.replay.outputs import write_outputs
    from linetwin.replay.policies import parse_policies
    from linetwin.replay.run import ReplaySettings, replay
    from linetwin.twin.recorder import read_spec

    settings = ReplaySettings(
        cadence_s=cadence,
        seeds=seeds,
        horizon_s=horizon,
        scenario=scenario,
        seed=seed,
        closed_loop=closed_loop,
    )
    settings.check()
    spec = read_spec(recording)
    default_model = model if model is not None else bundled_checkpoint(spec)
    chosen = parse_policies(list(policies), spec, default_model)
    with ProgressBar(not as_json, "replaying") as update:

        def progress(stage: str, done: int, total: int) -> None:
            # decision replay is most of the work: 90% of the bar, counterfactuals the rest
            share = done / max(total, 1)
            update(0.9 * share if stage == "decisions" else 0.9 + 0.1 * share)

        result = replay(recording, chosen, settings, progress)
    files = write_outputs(result, out)
    summary = result.summary()
    if as_json:
        click.echo(json.dumps(summary))
        return
    _print(summary, files)


def _print(summary: dict[str, Any], files: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    cf = summary.get("counterfactual")
    title = f"{summary['line']}: {summary['decision_points']} decision points"
    if cf:
        title += f"; {cf['starts']} starts x {summary['settings']['seeds']} seeds"
    t = Table(title=title)
    t.add_column("policy")
    t.add_column("fallbacks", justify="right")
    t.add_column("pred. profit gain /h", justify="right")
    t.add_column("profit /h [95% CI]", justify="right")
    t.add_column("vs reference [95% CI]", justify="right")
    for name, p in summary["policies"].items():
        gain = p["decisions"]["predicted_difference_vs_recorded"]["profit_per_hour"]
        t.add_row(
            name,
            str(p["decisions"]["fallbacks"]),
            _fmt(gain.get("mean")),
            _ci(p.get("kpis", {}).get("profit_per_hour")),
            _ci(p.get("difference_vs_reference", {}).get("profit_per_hour")),
        )
    console.print(t)
    for name, path in files.items():
        console.print(f"{name}: {path}")


def _fmt(x: float | None) -> str:
    return "–" if x is None else f"{x:,.1f}"  # noqa: RUF001


def _ci(d: dict[str, Any] | None) -> str:
    if not d or d.get("mean") is None:
        return "–"  # noqa: RUF001
    if d.get("ci_low") is None:
        return _fmt(d["mean"])
    return f"{_fmt(d['mean'])} [{_fmt(d['ci_low'])}, {_fmt(d['ci_high'])}]"
