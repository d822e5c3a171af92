"""Write a replay's outputs: Parquet tables, `summary.json` and the HTML report.

files = write_outputs(result, "out/")   # decisions.parquet, windows.parquet,
                                        # counterfactual.parquet, summary.json, report.html
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from linetwin.replay.counterfactual import Counterfactual
from linetwin.replay.errors import ReplayError
from linetwin.replay.report import write_report
from linetwin.replay.run import ReplayResult
from linetwin.replay.scan import KPI_NAMES


def decisions_table(result: ReplayResult) -> pa.Table:
    """One row per decision point and policy (see docs/replay.md)."""
    rows = result.decisions
    n = result.spec.n_stations
    sp = np.stack(rows.setpoints) if len(rows) else np.zeros((0, n, 2))
    rec = np.stack(rows.recorded) if len(rows) else np.zeros((0, n, 2))

    def lists(a: np.ndarray) -> pa.Array:
        return pa.FixedSizeListArray.from_arrays(pa.array(a.reshape(-1), pa.float64()), n)

    cols: dict[str, Any] = {
        "time_s": pa.array(rows.time_s, pa.float64()),
        "tick": pa.array(rows.tick, pa.int64()),
        "policy": pa.array(rows.policy, pa.string()),
        "speed": lists(sp[..., 0]),
        "temperature_c": lists(sp[..., 1]),
        "recorded_speed": lists(rec[..., 0]),
        "recorded_temperature_c": lists(rec[..., 1]),
        "max_relative_change": pa.array(rows.change, pa.float64()),
        "fallback": pa.array(rows.fallback, pa.bool_()),
        "status": pa.array(rows.status, pa.string()),
        "reasons": pa.array(rows.reasons, pa.list_(pa.string())),
    }
    for k in KPI_NAMES:
        cols[f"predicted_{k}"] = pa.array(rows.predicted[k], pa.float64())
        cols[f"predicted_diff_{k}"] = pa.array(rows.diff[k], pa.float64())
        cols[f"predicted_diff_{k}_std"] = pa.array(rows.diff_std[k], pa.float64())
    meta = {"linetwin.station_names": json.dumps([s.name for s in result.spec.stations])}
    return pa.table(cols).replace_schema_metadata(meta)


def windows_table(result: ReplayResult) -> pa.Table:
    """The recorded KPIs of each decision window (ending at `time_s`)."""
    return pa.table({k: pa.array(v, pa.float64()) for k, v in result.windows.items()})


def counterfactual_table(cf: Counterfactual) -> pa.Table:
    """One row per policy, start and seed: the run's KPIs."""
    n_starts, seeds = next(iter(cf.kpis[cf.reference].values())).shape
    cols: dict[str, list[Any]] = {"policy": [], "start_time_s": [], "seed": []}
    cols.update({k: [] for k in KPI_NAMES})
    for p in cf.policies:
        cols["policy"] += [p] * (n_starts * seeds)
        cols["start_time_s"] += np.repeat(cf.start_time_s, seeds).tolist()
        cols["seed"] += np.tile(np.arange(seeds), n_starts).tolist()
        for k in KPI_NAMES:
            cols[k] += cf.kpis[p][k].reshape(-1).tolist()
    return pa.table(cols)


def write_outputs(result: ReplayResult, out_dir: str | Path) -> dict[str, Path]:
    """Write the tables (Parquet), `summary.json` and `report.html` into `out_dir`."""
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ReplayError(f"{out}: cannot create the output folder: {exc.strerror}") from None
    files = {
        "decisions": out / "decisions.parquet",
        "windows": out / "windows.parquet",
        "summary": out / "summary.json",
        "report": out / "report.html",
    }
    tables = {"decisions": decisions_table(result), "windows": windows_table(result)}
    if result.counterfactual is not None:
        files["counterfactual"] = out / "counterfactual.parquet"
        tables["counterfactual"] = counterfactual_table(result.counterfactual)
    for name, table in tables.items():
        pq.write_table(table, files[name], compression="zstd")
    summary = result.summary()
    files["summary"].write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    write_report(files["report"], result, summary)
    return files
