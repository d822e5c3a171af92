"""Lines the benchmarks share (bench/optimizer.py, bench/replay.py)."""

from __future__ import annotations

from linetwin.twin.spec import LineSpec, parse_spec


def fifty_station_line() -> LineSpec:
    """A 50-station line: repeated blocks of unreliable, thermal and plain stations."""
    stations = []
    for i in range(50):
        st: dict = {
            "name": f"s{i:02d}",
            "cycle_time_s": 18.0 + (i * 7) % 6,
            "processing": "exponential" if i % 3 else "deterministic",
        }
        if i < 49:
            st["buffer_after"] = 2 + i % 5
        if i % 4 == 1:
            st["mtbf_s"], st["mttr_s"] = 7200.0, 300.0
        if i % 10 == 5:
            st["thermal"] = {"ideal_min_c": 150.0, "ideal_max_c": 170.0}
            st["scrap"] = {"base": 0.003, "temperature_gain": 0.0005, "speed_gain": 0.1}
        stations.append(st)
    return parse_spec({"name": "fifty", "stations": stations}, "<bench fifty>")
