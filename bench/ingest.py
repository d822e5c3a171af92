"""Benchmark plant-data ingestion: the 50-station line's rows through `ExternalPlant.ingest`
(checked, snapshot per row, published) against parsing the same payload alone, in one run.

An hour of 1 Hz rows (3,600) of the `fifty` line (bench/lines.py), as the body of
`POST /v1/plant/snapshots` would carry it: JSON `{"rows": [...]}` and CSV text. For JSON,
ingestion is `json.loads` plus `ingest(rows)` (what the route does with the body); the
reference is `json.loads` alone. For CSV, ingestion is `ingest(text)`; the reference is
pyarrow's CSV reader on the same text with the layout's column types. Each figure is the best
of `--repeats` runs on a fresh plant; the target is at least half the reference's rows/s and at
least 2,000 rows/s. Prints one JSON line.

    .venv/bin/python -m bench.ingest [--rows 3600] [--repeats 3]
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import platform
import time
from collections.abc import Callable
from typing import Any

import pyarrow.csv as pacsv

from bench.lines import fifty_station_line
from linetwin.api.emulator import rows_from_snapshot
from linetwin.api.plant import ExternalPlant
from linetwin.replay.csv_layout import parse_header
from linetwin.replay.importer import csv_options
from linetwin.twin.sim import Twin


def best(fn: Callable[[], Any], repeats: int) -> float:
    """Return the fastest of `repeats` wall times of `fn()`, s."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=3600)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    spec = fifty_station_line()
    twin = Twin(spec, 1, seed=1)
    rows = [r for _ in range(args.rows) for r in rows_from_snapshot(twin.step(1.0), spec)]
    body = json.dumps({"rows": rows})
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    text = out.getvalue()
    layout = parse_header(list(rows[0]), spec, "bench")
    parse, convert = csv_options(layout)

    ExternalPlant(spec, seed=0).ingest(rows[:2], "warm-up")  # imports and compiled code

    def ingest_json() -> None:
        plant = ExternalPlant(spec, seed=0)
        plant.subscribe(maxsize=args.rows)
        plant.ingest(json.loads(body)["rows"], "bench")

    def ingest_csv() -> None:
        plant = ExternalPlant(spec, seed=0)
        plant.subscribe(maxsize=args.rows)
        plant.ingest(text, "bench")

    def parse_csv() -> None:
        pacsv.read_csv(
            io.BytesIO(text.encode()), parse_options=parse, convert_options=convert
        ).combine_chunks()

    figures: dict[str, Any] = {
        "bench": "ingest",
        "line": spec.name,
        "stations": spec.n_stations,
        "rows": args.rows,
        "json_mb": round(len(body) / 1e6, 1),
        "csv_mb": round(len(text) / 1e6, 1),
    }
    for name, ingest, reference in (
        ("json", ingest_json, lambda: json.loads(body)),
        ("csv", ingest_csv, parse_csv),
    ):
        t_ingest = best(ingest, args.repeats)
        t_parse = best(reference, args.repeats)
        figures[f"{name}_ingest_rows_per_s"] = round(args.rows / t_ingest)
        figures[f"{name}_parse_rows_per_s"] = round(args.rows / t_parse)
        figures[f"{name}_ratio"] = round(t_parse / t_ingest, 3)
    figures["machine"] = f"{platform.machine()} {platform.python_version()}"
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
