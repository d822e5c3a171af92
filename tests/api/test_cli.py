"""Behaviour of the `linetwin` command line: simulate, setpoint files, recordings, line tools."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from clirun import Result

from linetwin.twin import bundled_spec
from linetwin.twin.recorder import read_recording
from linetwin.twin.spec import parse_spec

FAST = ["--hours", "2", "--scenarios", "2"]
KPI_KEYS = (
    "throughput_per_hour",
    "scrap_rate",
    "energy_kwh_per_good_part",
    "profit_per_hour",
    "availability",
    "scenarios",
    "sim_hours",
    "wall_seconds",
)
EXAMPLE_STATIONS = [s.name for s in bundled_spec("example").stations]


@pytest.fixture(autouse=True)
def plain_console(monkeypatch: pytest.MonkeyPatch) -> None:
    """Wide, uncoloured rich output so tables are not cut."""
    monkeypatch.setenv("COLUMNS", "200")
    for name in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "LINETWIN_TRACEBACK"):
        monkeypatch.delenv(name, raising=False)


def strict_json(text: str) -> Any:
    """Parse JSON, refusing NaN and infinities."""

    def refuse(name: str) -> None:
        raise ValueError(f"non-standard JSON constant {name}")

    return json.loads(text, parse_constant=refuse)


def simulate_json(cli: Any, *args: str | Path) -> dict[str, Any]:
    res = cli("simulate", "--json", *args)
    assert res.code == 0, res.err
    assert res.out.endswith("\n") and res.out.count("\n") == 1  # one JSON object, one line
    data = strict_json(res.out)
    assert isinstance(data, dict)
    return data


def without_wall(data: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if k not in ("wall_seconds", "recording")}


def assert_one_line_error(res: Result, *words: str) -> None:
    assert res.code == 2
    assert res.out == ""
    assert "Traceback" not in res.err
    assert "unexpected" not in res.err  # a known error, not the catch-all for bugs
    assert res.err.startswith("linetwin: error: ")
    assert res.err.endswith("\n") and res.err.count("\n") == 1, res.err
    for word in words:
        assert word in res.err, (word, res.err)


# --------------------------------------------------------------------------- simulate --json


def test_simulate_json_prints_the_kpis(cli: Any) -> None:
    data = simulate_json(cli, *FAST)
    for key in KPI_KEYS:
        assert key in data
    assert data["scenarios"] == 2
    assert data["sim_hours"] == 2.0
    assert data["stations"] == EXAMPLE_STATIONS
    assert isinstance(data["availability"], list)
    assert len(data["availability"]) == len(EXAMPLE_STATIONS)
    assert all(0.0 <= a <= 1.0 for a in data["availability"])
    assert min(data["availability"]) < 1.0  # the example has unreliable stations
    assert data["throughput_per_hour"] > 0
    assert 0.0 <= data["scrap_rate"] < 1.0
    assert data["energy_kwh_per_good_part"] > 0
    assert isinstance(data["profit_per_hour"], float)
    assert isinstance(data["wall_seconds"], float) and data["wall_seconds"] >= 0


def test_same_seed_same_numbers_other_seed_other_numbers(cli: Any) -> None:
    a = simulate_json(cli, *FAST, "--seed", "7")
    b = simulate_json(cli, *FAST, "--seed", "7")
    c = simulate_json(cli, *FAST, "--seed", "8")
    assert without_wall(a) == without_wall(b)
    assert (a["seed"], c["seed"]) == (7, 8)
    assert a["spec_hash"] == c["spec_hash"]
    assert a["profit_per_hour"] != c["profit_per_hour"]
    assert a["availability"] != c["availability"]


def test_bundled_line_by_name(cli: Any) -> None:
    data = simulate_json(cli, "--line", "two-station", *FAST)
    assert data["line"] == "two-station"
    assert data["stations"] == ["a", "b"]
    assert len(data["availability"]) == 2
    assert data["availability"] == [1.0, 1.0]  # no failures in that line
    assert data["scrap_rate"] == 0.0


def test_line_from_a_toml_file(cli: Any, tmp_path: Path) -> None:
    path = tmp_path / "mine.toml"
    path.write_text(
        'name = "mine"\n[[stations]]\nname = "solo"\ncycle_time_s = 30.0\n'
        'processing = "deterministic"\n',
        encoding="utf-8",
    )
    data = simulate_json(cli, "--line", path, "--hours", "1", "--warmup-hours", "0")
    assert data["line"] == "mine"
    assert data["stations"] == ["solo"]
    assert data["throughput_per_hour"] == 120.0  # exactly one part per 30 s


# --------------------------------------------------------------------------- setpoint files


def write_json(path: Path, data: Any) -> Path:
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def test_setpoints_file_changes_the_result(cli: Any, tmp_path: Path) -> None:
    base = simulate_json(cli, *FAST)
    fast = write_json(tmp_path / "fast.json", {"press": {"speed": 1.3}, "coat": {"speed": 1.2}})
    faster = simulate_json(cli, *FAST, "--setpoints", fast)
    assert faster["throughput_per_hour"] != base["throughput_per_hour"]
    assert faster["profit_per_hour"] != base["profit_per_hour"]
    hot = write_json(tmp_path / "hot.json", {"cure": {"temperature": 225.0}})
    hotter = simulate_json(cli, *FAST, "--setpoints", hot)
    assert hotter["energy_kwh_per_good_part"] > base["energy_kwh_per_good_part"]
    assert hotter["scrap_rate"] > base["scrap_rate"]
    # Naming the nominal values changes nothing (same seed, same random numbers).
    nominal = write_json(tmp_path / "nominal.json", {"press": {"speed": 1.0}})
    assert without_wall(simulate_json(cli, *FAST, "--setpoints", nominal)) == without_wall(base)


@pytest.mark.parametrize(
    ("content", "words"),
    [
        ('{"press": {"speed": 5}}', ["press.speed", "outside its limits"]),
        ('{"press": {"speed": 0.1}}', ["press.speed", "outside its limits"]),
        ('{"oven9": {"speed": 1.0}}', ["'oven9'", "unknown station"]),
        ('{"press": {"temperature": 150}}', ["press.temperature", "no setpoint"]),
        ('{"press": {"speed": "fast"}}', ["press.speed", "expected a number"]),
        ('{"press": 1.2}', ["press", "expected an object"]),
        ('{"press": {"speed": 1.2,}}', ["invalid JSON", "line 1, column"]),
        ("[1, 2]", ["expected a JSON object"]),
        ("", ["invalid JSON"]),
    ],
)
def test_bad_setpoints_file_exits_2_with_one_line(
    cli: Any, tmp_path: Path, content: str, words: list[str]
) -> None:
    path = tmp_path / "setpoints.json"
    path.write_text(content, encoding="utf-8")
    res = cli("simulate", *FAST, "--setpoints", path)
    assert_one_line_error(res, str(path), *words)


def test_missing_setpoints_file_exits_2(cli: Any, tmp_path: Path) -> None:
    path = tmp_path / "nowhere.json"
    res = cli("simulate", *FAST, "--json", "--setpoints", path)
    assert_one_line_error(res, str(path), "cannot read setpoints file")


# --------------------------------------------------------------------------- bad line specs


BAD_LINE = """\
name = "bad"

[[stations]]
name = "press"
cycle_time_s = -5.0
buffer_after = 4
spede = 1.2

[[stations]]
name = "oven"
cycle_time_s = 20.0
"""


def test_bad_line_file_exits_2_naming_file_and_key_paths(cli: Any, tmp_path: Path) -> None:
    path = tmp_path / "line.toml"
    path.write_text(BAD_LINE, encoding="utf-8")
    for args in (["simulate", *FAST], ["line", "show"]):
        res = cli(*args, "--line", path)
        assert_one_line_error(
            res,
            f"{path}: stations[0] ('press').cycle_time_s",
            f"{path}: stations[0] ('press').spede: unknown key",
        )


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("name = \n", ["TOML syntax error"]),
        ('name = "x"\nstations = []\n', ["stations"]),
        ('name = "x"\n[[stations]]\nname = "a"\ncycle_time_s = "10"\n', ["cycle_time_s"]),
    ],
)
def test_other_bad_line_files(cli: Any, tmp_path: Path, text: str, words: list[str]) -> None:
    path = tmp_path / "line.toml"
    path.write_text(text, encoding="utf-8")
    assert_one_line_error(cli("simulate", *FAST, "--line", path), str(path), *words)


def test_missing_line_file_exits_2(cli: Any, tmp_path: Path) -> None:
    path = tmp_path / "nowhere.toml"
    assert_one_line_error(cli("simulate", "--line", path), str(path), "cannot read line spec")


def test_bad_numbers_exit_2(cli: Any) -> None:
    assert_one_line_error(cli("simulate", "--hours", "-1"), "hours")
    assert_one_line_error(cli("simulate", "--hours", "1", "--tick-s", "0"), "--tick-s")
    res = cli("simulate", "--scenarios", "0")
    assert res.code == 2
    assert "Traceback" not in res.err and "--scenarios" in res.err


# --------------------------------------------------------------------------- recordings


RECORD = ["--line", "example", "--hours", "0.5", "--warmup-hours", "0.5", "--scenarios", "3"]


def test_record_writes_a_readable_recording(cli: Any, tmp_path: Path) -> None:
    path = tmp_path / "run.parquet"
    data = simulate_json(cli, *RECORD, "--seed", "4", "--record", path)
    assert data["recording"] == str(path)
    rec = read_recording(path)
    assert rec.n_scenarios == 3
    assert rec.n_ticks == 61  # the start, then one tick a minute for an hour (default tick)
    np.testing.assert_allclose(rec.time_s, 60.0 * np.arange(61))
    assert rec.seed == 4
    assert rec.station_names == EXAMPLE_STATIONS
    # The recording is the run that was measured: good parts over the last half hour.
    good = rec.good_out[-1] - rec.good_out[30]
    assert data["throughput_per_hour"] == pytest.approx(good.mean() / 0.5, rel=1e-12)
    # And recording does not change the run.
    plain = simulate_json(cli, *RECORD, "--seed", "4")
    assert plain["throughput_per_hour"] == data["throughput_per_hour"]
    assert plain["profit_per_hour"] == pytest.approx(data["profit_per_hour"], rel=1e-12)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.parquet"]  # no temp files left


def test_record_tick_option(cli: Any, tmp_path: Path) -> None:
    path = tmp_path / "run.parquet"
    simulate_json(cli, *RECORD, "--record", path, "--tick-s", "300")
    rec = read_recording(path)
    assert rec.n_ticks == 13
    assert rec.time_s[-1] == pytest.approx(3600.0)


def test_record_refuses_to_overwrite_without_the_flag(cli: Any, tmp_path: Path) -> None:
    path = tmp_path / "run.parquet"
    simulate_json(cli, *RECORD, "--seed", "1", "--record", path)
    before = path.read_bytes()
    res = cli("simulate", *RECORD, "--seed", "2", "--record", path)
    assert_one_line_error(res, str(path), "--overwrite")
    assert path.read_bytes() == before
    assert read_recording(path).seed == 1
    simulate_json(cli, *RECORD, "--seed", "2", "--record", path, "--overwrite")
    assert read_recording(path).seed == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.parquet"]


def test_record_into_a_missing_folder_exits_2(cli: Any, tmp_path: Path) -> None:
    path = tmp_path / "no" / "run.parquet"
    assert_one_line_error(cli("simulate", *RECORD, "--record", path), str(path))
    assert not path.parent.exists()


# --------------------------------------------------------------------------- human output


def test_table_output_names_kpis_and_stations(cli: Any) -> None:
    res = cli("simulate", *FAST)
    assert res.code == 0, res.err
    for text in (
        "bracket-line",
        "good throughput, parts/h",
        "scrap rate",
        "energy per good part, kWh",
        "profit, EUR/h",
        "OEE",
        "availability",
        "utilisation",
        *EXAMPLE_STATIONS,
    ):
        assert text in res.out, text
    assert "\x1b[" not in res.out  # no terminal escapes when not on a terminal
    with pytest.raises(ValueError):
        json.loads(res.out)


# --------------------------------------------------------------------------- line tools


def test_line_show_json_fills_defaults(cli: Any) -> None:
    res = cli("line", "show", "--line", "two-station", "--json")
    assert res.code == 0, res.err
    data = strict_json(res.out)
    a = data["stations"][0]
    assert a["name"] == "a"
    assert a["setpoints"]["speed"] == {
        "min": 0.5,
        "max": 1.5,
        "nominal": 1.0,
        "max_step": 0.1,
        "resolution": 0.005,
        "grid": None,
    }
    assert a["setpoints"]["temperature"] is None
    assert a["thermal"] is None
    assert a["mtbf_s"] is None
    assert a["energy"] == {"idle_kw": 1.0, "run_kw": 5.0, "speed_exponent": 2.0}
    assert a["sensors"]["power_noise_kw"] == 0.05
    assert data["stations"][1]["buffer_after"] is None
    assert data["economics"]["currency"] == "EUR"
    # The dump parses back to the same spec.
    assert parse_spec(data).spec_hash() == bundled_spec("two-station").spec_hash()


def test_line_show_json_derives_the_temperature_setpoint(cli: Any, tmp_path: Path) -> None:
    path = tmp_path / "oven.toml"
    path.write_text(
        'name = "one-oven"\n[[stations]]\nname = "oven"\ncycle_time_s = 30.0\n'
        "thermal = { ideal_min_c = 70.0, ideal_max_c = 90.0 }\n",
        encoding="utf-8",
    )
    res = cli("line", "show", "--line", path, "--json")
    assert res.code == 0, res.err
    st = strict_json(res.out)["stations"][0]
    temp = st["setpoints"]["temperature"]
    assert (temp["min"], temp["max"], temp["nominal"]) == (50.0, 110.0, 80.0)
    assert (temp["max_step"], temp["resolution"]) == (5.0, 0.5)
    assert st["thermal"]["ambient_c"] == 25.0
    assert st["thermal"]["time_constant_s"] == 600.0


def test_line_show_table(cli: Any) -> None:
    res = cli("line", "show")
    assert res.code == 0, res.err
    assert "bracket-line" in res.out
    for name in EXAMPLE_STATIONS:
        assert name in res.out
    assert "MTBF s" in res.out
    assert "190 [150, 230]" in res.out  # the cure oven's temperature setpoint


def test_line_schema(cli: Any) -> None:
    res = cli("line", "schema")
    assert res.code == 0, res.err
    schema = strict_json(res.out)
    assert "stations" in schema["properties"]
    assert set(schema["required"]) >= {"name", "stations"}
    assert "Station" in schema.get("$defs", {})


def test_version(cli: Any) -> None:
    res = cli("--version")
    assert res.code == 0
    assert res.out.strip() == f"linetwin {version('linetwin')}"


# --------------------------------------------------------------------------- a real process


def test_module_entry_point_in_a_subprocess(tmp_path: Path) -> None:
    ok = subprocess.run(
        [
            sys.executable,
            "-m",
            "linetwin",
            "simulate",
            "--line",
            "two-station",
            *FAST,
            "--json",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
        check=False,
    )
    assert ok.returncode == 0, ok.stderr
    assert strict_json(ok.stdout)["stations"] == ["a", "b"]
    path = write_json(tmp_path / "sp.json", {"a": {"speed": 3.0}})
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "linetwin",
            "simulate",
            "--line",
            "two-station",
            "--setpoints",
            "sp.json",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
        check=False,
    )
    assert bad.returncode == 2
    assert bad.stdout == ""
    assert bad.stderr.count("\n") == 1 and "Traceback" not in bad.stderr
    assert path.name in bad.stderr and "a.speed" in bad.stderr
