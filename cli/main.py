"""The `linetwin` command line."""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
from typing import Any

import click

from linetwin.api.errors import ApiError, UsageError
from linetwin.cli.admin import audit_group, keys_group
from linetwin.cli.calibrate import calibrate_command
from linetwin.cli.common import (
    ProgressBar,
    StageBar,
    fail,
    load_line,
    load_or_train,
    read_setpoints_file,
)
from linetwin.cli.plant import plant_group
from linetwin.cli.poll import poll as poll_command
from linetwin.cli.recording import recording_group
from linetwin.cli.replay import replay_command
from linetwin.cli.serve import serve as serve_command
from linetwin.models.errors import ModelError
from linetwin.optimizer.errors import OptimizerError
from linetwin.replay.errors import ReplayError
from linetwin.twin.errors import TwinError
from linetwin.twin.jsonable import finite_json
from linetwin.twin.spec import spec_json_schema


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="linetwin", message="linetwin %(version)s")
def cli() -> None:
    """Digital-twin production line optimizer."""


@cli.command()
@click.option("--line", "line", metavar="FILE", help="Line spec TOML (or a bundled name).")
@click.option("--hours", type=float, default=8.0, show_default=True, help="Measured hours.")
@click.option(
    "--warmup-hours",
    type=float,
    default=0.5,
    show_default=True,
    help="Hours simulated before measuring.",
)
@click.option("--scenarios", type=click.IntRange(1, 10_000_000), default=1, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--setpoints",
    "setpoints_file",
    metavar="FILE.json",
    help="Setpoints held for the run: {station: {setpoint: value}}.",
)
@click.option("--record", "record", metavar="FILE.parquet", help="Write the run to Parquet.")
@click.option("--overwrite", is_flag=True, help="Replace an existing --record file.")
@click.option(
    "--tick-s", type=float, default=None, help="Snapshot interval for --record, s [default: 60]."
)
@click.option(
    "--device", type=click.Choice(["auto", "cpu", "cuda"]), default="cpu", show_default=True
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def simulate(
    line: str | None,
    hours: float,
    warmup_hours: float,
    scenarios: int,
    seed: int,
    setpoints_file: str | None,
    record: str | None,
    overwrite: bool,
    tick_s: float | None,
    device: str,
    as_json: bool,
) -> None:
    """Simulate the line and print its KPIs."""
    from linetwin.twin.simulate import simulate as run_simulation

    spec = load_line(line)
    setpoints = None
    if setpoints_file:
        from linetwin.twin.params import compile_params, setpoints_from_mapping

        mapping = read_setpoints_file(setpoints_file)
        setpoints = setpoints_from_mapping(
            spec, compile_params(spec), mapping, 1, source=setpoints_file
        )[0]
    if tick_s is not None and not (math.isfinite(tick_s) and tick_s > 0):
        raise UsageError(f"--tick-s must be a positive number of seconds, got {tick_s}")
    with contextlib.ExitStack() as stack:
        recorder = None
        if record is not None:
            from linetwin.twin.recorder import Recorder

            # The context aborts the recording if the run fails: no half file is published.
            recorder = stack.enter_context(Recorder(record, spec, seed=seed, overwrite=overwrite))
            tick_s = tick_s or 60.0
        progress = stack.enter_context(ProgressBar(enabled=not as_json))
        result = run_simulation(
            spec,
            hours,
            scenarios=scenarios,
            seed=seed,
            setpoints=setpoints,
            warmup_hours=warmup_hours,
            tick_s=tick_s if recorder else None,
            on_tick=recorder.write if recorder else None,
            progress=progress,
            device=device,
        )
    summary = result.summary()
    if record is not None:
        summary["recording"] = str(record)
    if as_json:
        click.echo(json.dumps(finite_json(summary)))
    else:
        _print_summary(summary)


def _print_summary(s: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    def fmt(v: Any, spec: str = ".3f") -> str:
        return (
            "n/a"
            if v is None or (isinstance(v, float) and not math.isfinite(v))
            else format(v, spec)
        )

    console = Console()
    console.print(
        f"[bold]{s['line']}[/] — {s['scenarios']} scenario(s), "
        f"{s['sim_hours']:g} h measured after {s['warmup_hours']:g} h warm-up, "
        f"seed {s['seed']}, {s['wall_seconds']:.2f} s wall"
    )
    t = Table("KPI", "mean", "± 95%")
    ci = s["ci95"]
    cur = s["currency"]
    t.add_row(
        "good throughput, parts/h",
        fmt(s["throughput_per_hour"], ".1f"),
        fmt(ci["throughput_per_hour"], ".1f"),
    )
    t.add_row("scrap rate", fmt(s["scrap_rate"], ".4f"), fmt(ci["scrap_rate"], ".4f"))
    t.add_row(
        "energy per good part, kWh",
        fmt(s["energy_kwh_per_good_part"]),
        fmt(ci["energy_kwh_per_good_part"]),
    )
    t.add_row(
        f"profit, {cur}/h", fmt(s["profit_per_hour"], ".2f"), fmt(ci["profit_per_hour"], ".2f")
    )
    t.add_row("OEE", fmt(s["oee"]), "")
    console.print(t)
    st = Table("station", "availability", "utilisation")
    for name, a, u in zip(s["stations"], s["availability"], s["utilisation"], strict=True):
        st.add_row(name, fmt(a), fmt(u))
    console.print(st)


@cli.command()
@click.option("--line", "line", metavar="FILE", help="Line spec TOML (or a bundled name).")
@click.option(
    "--samples",
    type=click.IntRange(64, 10_000_000),
    default=None,
    help="Training samples to generate [default: 64000].",
)
@click.option(
    "--out",
    "out",
    metavar="DIR",
    default="model",
    show_default=True,
    help="Checkpoint folder to write.",
)
@click.option(
    "--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True
)
@click.option(
    "--horizon-s",
    type=float,
    default=1800.0,
    show_default=True,
    help="Prediction horizon, s of line time.",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the held-out metrics as JSON.")
def train(
    line: str | None,
    samples: int | None,
    out: str,
    device: str,
    horizon_s: float,
    seed: int,
    as_json: bool,
) -> None:
    """Train the surrogate on data generated with the twin and save a checkpoint."""
    from linetwin.models.checkpoint import save
    from linetwin.models.device import resolve_torch_device
    from linetwin.models.pipeline import TrainSettings, train_surrogate

    spec = load_line(line)
    dev = resolve_torch_device(device)
    if not (math.isfinite(horizon_s) and horizon_s > 0):
        raise UsageError(f"--horizon-s must be a positive number of seconds, got {horizon_s}")
    sizes = {} if samples is None else {"samples": samples}
    settings = TrainSettings.for_horizon(horizon_s, seed=seed, **sizes)
    with StageBar(enabled=not as_json) as progress:
        model, report = train_surrogate(spec, settings, dev, progress)
    folder = save(model, out)
    report = {"checkpoint": str(folder), "device": str(dev), **report}
    if as_json:
        click.echo(json.dumps(finite_json(report)))
        return
    m = report["metrics"]
    tr = report["training"]
    click.echo(
        f"trained on {tr['train']} samples ({tr['replicates']} replicates each) in "
        f"{tr['total_seconds']:.0f} s on {dev}; checkpoint: {folder}"
    )
    for name, k in m["kpis"].items():
        click.echo(f"  {name:26s} R² {k['r2']:.3f}  MAE {k['mae']:.4g}")
    click.echo(
        f"  90% band coverage {m['calibration']['coverage_mean']:.3f}; OOD threshold "
        f"{m['ood']['threshold']:.3f}"
    )


@cli.command()
@click.option("--line", "line", metavar="FILE", help="Line spec TOML (or a bundled name).")
@click.option("--model", "model_dir", metavar="DIR", help="Surrogate checkpoint folder.")
@click.option("--exact", is_flag=True, help="Prove the surrogate's optimum with a MIP.")
@click.option(
    "--verify-hours",
    type=float,
    default=None,
    help="Check on the twin against nominal setpoints for H hours.",
)
@click.option(
    "--pareto",
    type=click.IntRange(2, 20),
    default=None,
    help="Also return N throughput/energy trade-off points.",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def optimize(
    line: str | None,
    model_dir: str | None,
    exact: bool,
    verify_hours: float | None,
    pareto: int | None,
    seed: int,
    as_json: bool,
) -> None:
    """Optimise the line's steady-state setpoints from its nominal state."""
    from linetwin.optimizer.oneshot import optimize_line, pareto_line, verify
    from linetwin.twin.params import setpoints_to_mapping

    spec = load_line(line)
    if verify_hours is not None and not (math.isfinite(verify_hours) and verify_hours > 0):
        raise UsageError(f"--verify-hours must be a positive number, got {verify_hours}")
    model = load_or_train(spec, model_dir, as_json)
    result = optimize_line(spec, model, exact=exact, seed=seed)
    sol = result.solution
    setpoints = setpoints_to_mapping(spec, result.setpoints)
    out: dict[str, Any] = {
        "line": spec.name,
        "setpoints": setpoints,
        "predicted": {k: {"mean": m, "std": sd} for k, (m, sd) in result.predicted.items()},
        "nominal_predicted": {
            k: {"mean": m, "std": sd} for k, (m, sd) in result.nominal_predicted.items()
        },
        "status": sol.status,
        "method": sol.method,
        "solve_seconds": sol.seconds,
        "bound": sol.bound,
        "gap": sol.gap,
        "ood_score": sol.ood_score,
        "ood_threshold": model.ood_threshold,
    }
    if verify_hours is not None:
        out["verify"] = verify(spec, result.setpoints, verify_hours, seed=seed)
    if pareto is not None:
        out["pareto"] = pareto_line(spec, model, pareto, seed=seed)
    if as_json:
        click.echo(json.dumps(finite_json(out)))
        return
    click.echo(f"{spec.name}: {sol.method} solve {sol.status} in {sol.seconds * 1000:.0f} ms")
    for name, entry in setpoints.items():
        click.echo(f"  {name:12s} " + "  ".join(f"{k} {v:.3f}" for k, v in entry.items()))
    for k, v in out["predicted"].items():
        nom = out["nominal_predicted"][k]["mean"]
        click.echo(f"  predicted {k:26s} {v['mean']:10.3f} ± {v['std']:.3f} (nominal {nom:.3f})")
    if verify_hours is not None:
        ver = out["verify"]
        for k in (
            "throughput_per_hour",
            "scrap_rate",
            "energy_kwh_per_good_part",
            "profit_per_hour",
        ):
            click.echo(
                f"  twin {k:26s} optimized {ver['optimized'][k]:10.3f}  nominal "
                f"{ver['nominal'][k]:10.3f}"
            )
        gain = ver["profit_gain_per_hour"]
        click.echo(f"  profit gain per hour {gain['mean']:.2f} ± {gain['ci95'] or 0:.2f} (95%)")
    for p in out.get("pareto", []):
        click.echo(
            f"  trade-off: {p['good_per_hour']:8.2f} good/h at "
            f"{p['energy_kwh_per_hour']:8.2f} kWh/h"
        )


@cli.group()
def line() -> None:
    """Inspect line specs."""


@line.command("show")
@click.option("--line", "line_", metavar="FILE", help="Line spec TOML (or a bundled name).")
@click.option("--json", "as_json", is_flag=True, help="Print the spec with defaults as JSON.")
def line_show(line_: str | None, as_json: bool) -> None:
    """Print the validated spec with every default filled in."""
    spec = load_line(line_)
    data = spec.model_dump(mode="json")
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    t = Table(
        "station",
        "cycle s",
        "processing",
        "buffer after",
        "MTBF s",
        "MTTR s",
        "speed [min, max]",
        "temperature °C [min, max]",
        title=spec.name,
    )
    for st in spec.stations:
        sp = st.setpoints
        temp = sp.temperature
        t.add_row(
            st.name,
            f"{st.cycle_time_s:g}",
            st.processing,
            "" if st.buffer_after is None else str(st.buffer_after),
            f"{st.mtbf_s:g}" if st.mtbf_s else "",
            f"{st.mttr_s:g}" if st.mttr_s else "",
            f"{sp.speed.nominal:g} [{sp.speed.min:g}, {sp.speed.max:g}]",
            f"{temp.nominal:g} [{temp.min:g}, {temp.max:g}]" if temp else "",
        )
    Console().print(t)


@line.command("schema")
def line_schema() -> None:
    """Print the JSON Schema of a line spec file."""
    click.echo(json.dumps(spec_json_schema(), indent=2))


cli.add_command(keys_group)
cli.add_command(audit_group)
cli.add_command(recording_group)
cli.add_command(serve_command)
cli.add_command(poll_command)
cli.add_command(replay_command)
cli.add_command(calibrate_command)
cli.add_command(plant_group)


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; known errors print one line and exit 2, without a traceback."""
    try:
        cli.main(args=argv, prog_name="linetwin", standalone_mode=False)
    except click.exceptions.Abort:
        fail("aborted")
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except (TwinError, ModelError, OptimizerError, ReplayError, ApiError) as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        fail("interrupted")
    except OSError as exc:
        fail(f"{exc.filename or 'I/O'}: {exc.strerror or exc}")
    except Exception as exc:  # a bug: still one line, the traceback on request
        if os.environ.get("LINETWIN_TRACEBACK"):
            raise
        fail(f"unexpected {type(exc).__name__}: {exc} (set LINETWIN_TRACEBACK=1 for details)")
