"""Replay a day of 1 Hz data of a 50-station line: reading cost and decision replay time.

    python bench/replay.py [--quick]

Builds (once, cached in bench/out/, not committed) a recording of 24 h at one row a second of
the 50-station line of bench/lines.py and a briefly fitted surrogate for that line (the
product's architecture; replay time depends on the architecture, not the accuracy). Then, in
one run:

- `bare_read_s`: pyarrow reads the whole file (`pq.read_table`, every column) — the reference;
- `stream_read_s`: `twin.recorder.iter_recording` streams the same file into numpy chunks
  (bounded memory), and `scan_s`: the replay's own pass (`replay.scan`: decision points every
  60 s, the line rebuilt at each); `peak_rss_mb`: the peak RSS of fresh processes that only
  import the reader, that scan the day, and that read the whole file with pyarrow;
- `decision_replay_s`: `linetwin replay`'s decision replay of the optimizer at a 60 s cadence
  (1,439 decision points), no counterfactuals; and `full_replay_s`: the whole job with
  counterfactual runs of recorded / nominal / optimizer, 8 seeds, 1 h horizon, 23 starts.

Targets (issue 6): decision replay <= 120 s on 2 cores; reading <= 2x the bare pyarrow read.
`--quick` does 2 h instead of 24 (for checking the script).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent.resolve()]
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from bench.lines import fifty_station_line  # noqa: E402
from linetwin.models.checkpoint import load, save  # noqa: E402
from linetwin.models.pipeline import TrainSettings, train_surrogate  # noqa: E402
from linetwin.models.train import TrainConfig  # noqa: E402
from linetwin.replay.policies import parse_policies  # noqa: E402
from linetwin.replay.run import ReplaySettings, replay  # noqa: E402
from linetwin.replay.scan import scan  # noqa: E402
from linetwin.twin import Twin  # noqa: E402
from linetwin.twin.recorder import Recorder, iter_recording  # noqa: E402

OUT = Path(__file__).resolve().parent / "out"


PEAK_SCRIPT = """
import sys
sys.path.insert(0, {root!r})
import pyarrow.parquet as pq
from linetwin.replay.scan import scan
if {what!r} == "scan":
    sum(1 for _ in scan({path!r}, 60.0))
elif {what!r} == "bare_read":
    pq.read_table({path!r})
# VmHWM: this process's peak RSS (ru_maxrss would carry the parent's peak across exec)
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM:")][0]
print(int(hwm.split()[1]) / 1024)
"""


def peak_rss_mb(what: str, path: Path) -> float:
    """Peak RSS (MiB) of a fresh process that imports the reader, then does `what`."""
    code = PEAK_SCRIPT.format(
        root=str(Path(__file__).resolve().parents[1]), what=what, path=str(path)
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return round(float(out.stdout.strip()), 1)


def prepare(hours: float) -> tuple[Path, Path]:
    spec = fifty_station_line()
    model_dir = OUT / "model-replay50"
    if not (model_dir / "model.json").is_file():
        settings = TrainSettings(
            samples=3000,
            replicates=2,
            eval_states=20,
            eval_replicates=4,
            config=TrainConfig(max_epochs=10, patience=5),
        )
        model, _ = train_surrogate(spec, settings)
        save(model, model_dir)
    rec = OUT / f"model-replay50-{hours:g}h.parquet"
    if not rec.is_file():
        twin = Twin(spec, 1, seed=11)
        with Recorder(rec, spec, seed=11, note="bench/replay.py") as r:
            for hour in range(int(hours)):  # a plant that changes speeds now and then
                sp = twin.setpoints.copy()
                sp[0, hour % 50, 0] = 0.9 + 0.1 * (hour % 3)
                twin.set_setpoints(sp)
                twin.run(3600.0, tick_s=1.0, on_tick=r.write)
    return rec, model_dir


def timed(fn):  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="2 h instead of 24 h")
    args = ap.parse_args()
    hours = 2.0 if args.quick else 24.0
    t0 = time.perf_counter()
    rec, model_dir = prepare(hours)
    spec = fifty_station_line()
    size_mb = rec.stat().st_size / 2**20

    def bare() -> int:
        return int(pq.read_table(rec).num_rows)

    def stream() -> int:
        return sum(c.n_ticks for c in iter_recording(rec, batch_ticks=4096))

    def scan_all() -> int:
        return sum(1 for _ in scan(rec, 60.0))

    bare()  # warm the page cache for both
    reads = {"bare_read_s": [], "stream_read_s": []}
    for _ in range(3):
        reads["bare_read_s"].append(timed(bare)[0])
        gc.collect()
        reads["stream_read_s"].append(timed(stream)[0])
        gc.collect()
    scan_s, n_points = timed(scan_all)
    peaks = {what: peak_rss_mb(what, rec) for what in ("imports", "scan", "bare_read")}

    model = load(model_dir, spec)
    model.ood_threshold = float("inf")  # speed only: the briefly fitted model's envelope is thin
    policies = parse_policies(["recorded", "optimizer"], spec, model_dir)
    for p in policies:
        if p.model is not None:
            p.model.ood_threshold = float("inf")
    decide_s, result = timed(lambda: replay(rec, policies, ReplaySettings(cadence_s=60.0, seeds=0)))
    fallbacks = int(np.sum(result.decisions.fallback))
    cf_policies = parse_policies(["recorded", "nominal", "optimizer"], spec, model_dir)
    for p in cf_policies:
        if p.model is not None:
            p.model.ood_threshold = float("inf")
    cf_s, cf_result = timed(
        lambda: replay(rec, cf_policies, ReplaySettings(cadence_s=60.0, seeds=8, horizon_s=3600))
    )
    bare_s = float(np.median(reads["bare_read_s"]))
    stream_s = float(np.median(reads["stream_read_s"]))
    figures = {
        "bench": "replay",
        "command": "python bench/replay.py" + (" --quick" if args.quick else ""),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
        },
        "recording": {
            "hours": hours,
            "ticks": int(hours * 3600),
            "stations": spec.n_stations,
            "file_mb": round(size_mb, 1),
        },
        "bare_read_s": bare_s,
        "stream_read_s": stream_s,
        "stream_vs_bare": stream_s / bare_s,
        "scan_s": scan_s,
        "scan_vs_bare": scan_s / bare_s,
        "decision_points": n_points,
        "peak_rss_mb": peaks,
        "decision_replay_s": decide_s,
        "decision_replay_ms_per_point": 1000 * decide_s / max(n_points, 1),
        "decision_fallbacks": fallbacks,
        "full_replay_s": cf_s,
        "counterfactual_starts": int(cf_result.counterfactual.start_time_s.size)
        if cf_result.counterfactual is not None
        else 0,
        "targets": {"decision_replay_s_max": 120.0, "read_vs_bare_max": 2.0},
        "met": {
            "decision_replay": decide_s <= 120.0,
            "read": stream_s / bare_s <= 2.0,
        },
        "wall_seconds": time.perf_counter() - t0,
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
