"""`linetwin calibrate` on a Parquet recording and on a CSV plant log: the fitted spec, the
JSON (parameters with intervals, laws and why, the validation table), the HTML report, and
one-line errors that name the file and the value."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_calibrate import make_log, skeleton_of, truth_spec

from linetwin.replay.csv_export import export_csv
from linetwin.twin.calibrate import spec_toml
from linetwin.twin.spec import load_spec


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A 6 h log (a row every 2 s) as Parquet and as CSV, and the skeleton as TOML."""
    d = tmp_path_factory.mktemp("cal")
    rec = make_log(d / "plant.parquet", truth_spec(), 6, seed=11)
    export_csv(rec, d / "plant.csv")
    skel = d / "skeleton.toml"
    skel.write_text(spec_toml(skeleton_of(truth_spec()), "skeleton"), encoding="utf-8")
    return {"parquet": rec, "csv": d / "plant.csv", "skeleton": skel, "dir": d}


def run_json(cli: Any, *args: str | Path) -> dict[str, Any]:
    res = cli("calibrate", "--json", *args)
    assert res.code == 0, res.err
    return json.loads(res.out, parse_constant=lambda c: pytest.fail(f"non-JSON {c}"))


def test_parquet_log_gives_fitted_spec_json_and_report(cli: Any, files: dict[str, Path]) -> None:
    out = files["dir"] / "fitted.toml"
    report = files["dir"] / "report.html"
    data = run_json(
        cli, "--recording", files["parquet"], "--line", files["skeleton"], "--out", out,
        "--holdout", "0.25", "--report", report, "--replications", "16",
    )  # fmt: skip
    fitted = load_spec(out)
    assert out.read_text().startswith("# Fitted by linetwin calibrate from plant.parquet")
    assert fitted.stations[0].processing == "deterministic"
    params = {(p["station"], p["key"]): p for p in data["parameters"]}
    cyc = params[("a", "cycle_time_s")]
    assert cyc["status"] == "fitted" and cyc["low"] <= cyc["value"] <= cyc["high"]
    assert cyc["value"] == fitted.stations[0].cycle_time_s
    assert cyc["skeleton"] == pytest.approx(15.6)
    assert all(p["reason"] for p in data["parameters"])
    laws = [c for c in data["laws"] if c["what"] == "a: processing"]
    assert laws and laws[0]["law"] == "deterministic" and laws[0]["criterion"] == "AIC"
    assert {c["law"] for c in laws[0]["candidates"]} >= {"exponential", "deterministic"}
    # the validation table: three line KPIs, four shares per station, a mean per buffer
    rows = data["validation"]
    assert len(rows) == 3 + 4 * 3 + 2
    kpis = {r["kpi"] for r in rows if r["station"] is None}
    assert kpis == {"throughput_per_hour", "scrap_rate", "energy_kwh_per_good_part"}
    for r in rows:
        for twin in ("fitted", "skeleton"):
            iv = r[twin]
            assert iv["low"] <= iv["mean"] <= iv["high"]
            assert iv["inside"] == (iv["low"] <= r["plant"] <= iv["high"])
    cov = data["validation_summary"]["coverage"]
    assert cov["fitted"]["inside"] >= cov["skeleton"]["inside"]
    tp = next(r for r in rows if r["kpi"] == "throughput_per_hour")
    assert tp["fitted"]["inside"] and not tp["skeleton"]["inside"]  # the skeleton is slow
    page = report.read_text()
    assert page.count("<img") >= 2 and "<script" not in page
    for text in ("Held-out validation", "fitted twin [95%]", "AIC", "cycle_time_s", "Kaplan-Meier"):
        assert text in page


def test_csv_log_is_imported_and_fitted(cli: Any, files: dict[str, Path]) -> None:
    out = files["dir"] / "fitted-csv.toml"
    res = cli(
        "calibrate", "--recording", files["csv"], "--line", files["skeleton"], "--out", out,
        "--holdout", "0",
    )  # fmt: skip
    assert res.code == 0, res.err
    assert "parameters fitted" in res.out and "kept" in res.out
    fitted = load_spec(out)
    assert fitted.stations[0].processing == "deterministic"
    assert abs(fitted.stations[0].cycle_time_s - 12.0) < 0.5


def test_errors_name_the_file_and_the_value(cli: Any, files: dict[str, Path]) -> None:
    d = files["dir"]
    args = ("--line", files["skeleton"], "--out", d / "x.toml")
    res = cli("calibrate", "--recording", d / "missing.parquet", *args)
    assert res.code == 2 and "missing.parquet" in res.err
    res = cli("calibrate", "--recording", files["parquet"], *args, "--holdout", "0.95")
    assert res.code == 2 and "--holdout" in res.err and "0.95" in res.err
    bad = d / "bad.csv"
    lines = files["csv"].read_text().splitlines()
    header = lines[0].split(",")
    col = header.index("a.speed")
    cells = lines[3].split(",")
    cells[col] = "fast"
    bad.write_text("\n".join([lines[0], lines[1], lines[2], ",".join(cells)]) + "\n")
    res = cli("calibrate", "--recording", bad, *args)
    assert res.code == 2 and "bad.csv" in res.err and "fast" in res.err and "line 4" in res.err
    assert not (d / "x.toml").exists()
