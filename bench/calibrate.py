"""Calibrate a day of 1 Hz data of the 50-station line: time and memory against reading it.

    python bench/calibrate.py [--quick]

Builds (once, cached in bench/out/, not committed) a recording of 24 h at one row a second of
the 50-station line of bench/lines.py, in which every station's speed steps through 0.9, 1.0
and 1.1 hour by hour and the thermal stations' setpoints move every two hours. Then, in one run:

- `read_s`: `twin.recorder.iter_recording` streams the whole file into numpy chunks (the
  reference, as the issue asks);
- `fit_s`: `calibrate(..., holdout=0)`, the fit alone (one streamed pass plus the fits);
- `calibrate_s`: `calibrate(..., holdout=0.25)` with the validation of the fitted and the
  skeleton twin, 32 replications each over the last 6 h;
- `peak_rss_mb`: peak RSS of fresh processes that only import, that calibrate the day (with
  validation), and that read the whole file with `read_recording` (what a non-streamed fit
  would hold).

Target (issue 13): calibrating the day takes at most 60 s, with memory bounded (well under a
whole-file read).
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

from bench.lines import fifty_station_line  # noqa: E402
from linetwin.twin import Twin  # noqa: E402
from linetwin.twin.calibrate import calibrate  # noqa: E402
from linetwin.twin.recorder import Recorder, iter_recording  # noqa: E402

OUT = Path(__file__).resolve().parent / "out"

PEAK_SCRIPT = """
import sys
sys.path.insert(0, {root!r})
from bench.lines import fifty_station_line
from linetwin.twin.calibrate import calibrate
from linetwin.twin.recorder import read_recording
if {what!r} == "calibrate":
    calibrate({path!r}, fifty_station_line(), holdout=0.25)
elif {what!r} == "whole_read":
    read_recording({path!r})
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM:")][0]
print(int(hwm.split()[1]) / 1024)
"""


def peak_rss_mb(what: str, path: Path) -> float:
    """Peak RSS (MiB) of a fresh process that imports the calibration, then does `what`."""
    code = PEAK_SCRIPT.format(
        root=str(Path(__file__).resolve().parents[1]), what=what, path=str(path)
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return round(float(out.stdout.strip().splitlines()[-1]), 1)


def prepare(hours: int) -> Path:
    spec = fifty_station_line()
    rec = OUT / f"calibrate50-{hours}h.parquet"
    if rec.is_file():
        return rec
    OUT.mkdir(exist_ok=True)
    twin = Twin(spec, 1, seed=13)
    thermal = [j for j, st in enumerate(spec.stations) if st.thermal is not None]
    with Recorder(rec, spec, seed=13, note="bench/calibrate.py") as r:
        for hour in range(hours):
            sp = twin.setpoints.copy()
            sp[0, :, 0] = (0.9, 1.0, 1.1)[hour % 3]
            sp[0, thermal, 1] = (160.0, 145.0, 175.0)[(hour // 2) % 3]
            twin.set_setpoints(sp)
            twin.run(3600.0, tick_s=1.0, on_tick=r.write)
    return rec


def timed(fn):  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="2 h instead of 24 h")
    args = ap.parse_args()
    hours = 2 if args.quick else 24
    t0 = time.perf_counter()
    rec = prepare(hours)
    spec = fifty_station_line()

    def read() -> int:
        return sum(c.n_ticks for c in iter_recording(rec, batch_ticks=4096))

    read()  # warm the page cache
    calibrate(rec, spec, holdout=0.25, replications=2)  # warm numba's caches
    reads, fits = [], []
    for _ in range(3):
        gc.collect()
        reads.append(timed(read)[0])
        gc.collect()
        fits.append(timed(lambda: calibrate(rec, spec, holdout=0.0))[0])
    gc.collect()
    full_s, res = timed(lambda: calibrate(rec, spec, holdout=0.25))
    read_s = float(np.median(reads))
    fit_s = float(np.median(fits))
    cov = res.summary["validation_summary"]["coverage"]
    peaks = {what: peak_rss_mb(what, rec) for what in ("imports", "calibrate", "whole_read")}
    figures = {
        "bench": "calibrate",
        "command": "python bench/calibrate.py" + (" --quick" if args.quick else ""),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "load_avg_1min": os.getloadavg()[0],
        },
        "recording": {
            "hours": hours,
            "ticks": hours * 3600,
            "stations": spec.n_stations,
            "file_mb": round(rec.stat().st_size / 2**20, 1),
        },
        "read_s": read_s,
        "fit_s": fit_s,
        "fit_vs_read": fit_s / read_s,
        "calibrate_s": full_s,
        "calibrate_vs_read": full_s / read_s,
        "validation_s": full_s - res.summary["fit_seconds"],
        "fitted_parameters": res.summary["fitted"],
        "kept_parameters": res.summary["kept"],
        "coverage": cov,
        "peak_rss_mb": peaks,
        "targets": {"calibrate_s_max": 60.0},
        "met": {"calibrate": full_s <= 60.0},
        "wall_seconds": time.perf_counter() - t0,
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
