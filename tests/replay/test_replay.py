"""Decision replay, counterfactual runs, outputs and `linetwin replay` on real recordings."""

from __future__ import annotations

import base64
import json
import re
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest

from linetwin.models.pretrained import bundled_checkpoint
from linetwin.replay.decisions import DecisionRows
from linetwin.replay.errors import ReplayError
from linetwin.replay.outputs import write_outputs
from linetwin.replay.policies import parse_policies
from linetwin.replay.run import ReplayResult, ReplaySettings, replay
from linetwin.twin import Twin, bundled_spec
from linetwin.twin.params import compile_params
from linetwin.twin.recorder import Recorder, read_recording
from linetwin.twin.spec import LineSpec

SETTINGS = ReplaySettings(cadence_s=300.0, seeds=4, horizon_s=1800.0, seed=5)


def record(path: Path, spec: LineSpec, hours: float, speeds: dict[str, float]) -> Path:
    """Record `hours` of `spec` a row every 10 s; `speeds` apply from the second half."""
    twin = Twin(spec, 1, seed=21)
    with Recorder(path, spec, seed=21) as rec:
        twin.run(hours * 1800.0, tick_s=10.0, on_tick=rec.write)
        if speeds:
            twin.set_setpoints({k: {"speed": v} for k, v in speeds.items()})
        twin.run(hours * 1800.0, tick_s=10.0, on_tick=rec.write)
    return path


@pytest.fixture(scope="module")
def example_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    spec = bundled_spec("example")
    return record(tmp_path_factory.mktemp("rec") / "example.parquet", spec, 2.0, {"press": 0.9})


@pytest.fixture(scope="module")
def example_result(example_run: Path) -> ReplayResult:
    spec = bundled_spec("example")
    policies = parse_policies(["recorded", "nominal", "optimizer"], spec, bundled_checkpoint(spec))
    return replay(example_run, policies, SETTINGS)


def test_decisions_respect_the_guard_and_predict_differences(
    example_result: ReplayResult, example_run: Path
) -> None:
    res = example_result
    spec = res.spec
    lp = compile_params(spec)
    rows = res.decisions
    policy = np.array(rows.policy)
    n_points = res.windows["time_s"].size
    assert n_points == 23  # 2 h at a 300 s cadence, the first point one cadence in
    assert len(rows) == 3 * n_points
    rec = read_recording(example_run)
    # recorded rows hold the recording's setpoints at the point's tick
    for i in np.flatnonzero(policy == "recorded")[:5]:
        k = int(np.flatnonzero(rec.tick == rows.tick[i])[0])
        np.testing.assert_array_equal(rows.setpoints[i], rec.setpoints[k, 0])
        assert rows.diff["profit_per_hour"][i] == 0.0
    present = lp.present
    step = np.array(
        [[s.setpoints.speed.max_step, getattr(s.setpoints.temperature, "max_step", np.nan)]
         for s in spec.stations]
    )  # fmt: skip
    opt = np.flatnonzero(policy == "optimizer")
    for i in opt:
        sp, recorded = rows.setpoints[i], rows.recorded[i]
        assert np.all(sp[present] >= lp.lower[present] - 1e-9)
        assert np.all(sp[present] <= lp.upper[present] + 1e-9)
        moved = np.abs(sp - recorded)[present]
        assert np.all(moved <= step[present] + 1e-9)  # ramped from what the plant ran
        assert np.isfinite(rows.diff["profit_per_hour"][i])
        assert rows.diff_std["profit_per_hour"][i] > 0
    assert not any(rows.fallback[i] for i in opt)
    gains = np.array(rows.diff["profit_per_hour"])[opt]
    assert gains.mean() > 0  # the optimizer expects to beat the recorded setpoints


def test_counterfactual_of_a_policy_against_itself_contains_zero(
    example_result: ReplayResult,
) -> None:
    """In the first half the recording ran nominal setpoints: from those starts, nominal
    against recorded is the same policy, and the paired difference is zero exactly."""
    cf = example_result.counterfactual
    assert cf is not None
    first_half = cf.start_time_s < 3600.0 - SETTINGS.horizon_s
    assert first_half.any()
    for k, ref in cf.kpis["recorded"].items():
        d = cf.kpis["nominal"][k][first_half] - ref[first_half]
        assert np.all((d == 0) | np.isnan(d)), k
    diffs = replace(
        cf,
        start_time_s=cf.start_time_s[first_half],
        kpis={p: {k: v[first_half] for k, v in by.items()} for p, by in cf.kpis.items()},
    ).differences()
    for k, interval in diffs["nominal"].items():
        assert interval.contains(0.0), k


def test_counterfactual_intervals_and_common_random_numbers(
    example_result: ReplayResult,
) -> None:
    cf = example_result.counterfactual
    assert cf is not None
    assert cf.policies == ["recorded", "nominal", "optimizer"]
    means = cf.means()
    for p in cf.policies:
        i = means[p]["profit_per_hour"]
        assert i.n == cf.start_time_s.size * SETTINGS.seeds
        assert i.low < i.mean < i.high
    # paired differences are tighter than the spread of either policy's runs
    d = cf.differences()["optimizer"]["throughput_per_hour"]
    assert d.std < means["recorded"]["throughput_per_hour"].std


def test_same_inputs_and_seeds_give_identical_outputs(
    example_run: Path, example_result: ReplayResult, tmp_path: Path
) -> None:
    spec = bundled_spec("example")
    policies = parse_policies(["recorded", "nominal", "optimizer"], spec, bundled_checkpoint(spec))
    again = replay(example_run, policies, SETTINGS)
    a = write_outputs(example_result, tmp_path / "a")
    b = write_outputs(again, tmp_path / "b")
    for name in ("decisions", "windows", "counterfactual", "summary"):
        assert a[name].read_bytes() == b[name].read_bytes(), name
    other = replay(example_run, policies, replace(SETTINGS, seed=6))
    assert other.summary() != example_result.summary()


def test_outputs_and_report_render(example_result: ReplayResult, tmp_path: Path) -> None:
    files = write_outputs(example_result, tmp_path / "out")
    decisions = pq.read_table(files["decisions"])
    assert decisions.num_rows == len(example_result.decisions)
    assert set(decisions.column("policy").to_pylist()) == {"recorded", "nominal", "optimizer"}
    assert decisions.schema.field("speed").type.list_size == 10
    cf = pq.read_table(files["counterfactual"])
    assert cf.num_rows == 3 * example_result.counterfactual.start_time_s.size * 4  # type: ignore[union-attr]
    summary = json.loads(files["summary"].read_text())
    assert summary["counterfactual"]["reference"] == "recorded"
    html = files["report"].read_text()
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', html)
    assert len(images) == 3  # KPIs over time, setpoints, distributions of differences
    for img in images:
        assert base64.b64decode(img)[:8] == b"\x89PNG\r\n\x1a\n"
    for text in ("Counterfactual runs", "optimizer", "minus recorded", "predicted profit gain"):
        assert text in html


def test_regression_diff_between_two_versions(
    two: LineSpec, model_dir: Path, tmp_path: Path
) -> None:
    """The same checkpoint under two names decides identically; a changed decision shows up
    where and how much it changed."""
    path = record(tmp_path / "two.parquet", two, 1.0, {"a": 1.1})
    copy = shutil.copytree(model_dir, tmp_path / "copy")
    policies = parse_policies([f"optimizer:{model_dir}", f"optimizer:{copy}"], two, None)
    res = replay(path, policies, ReplaySettings(cadence_s=300.0, seeds=0))
    key = f"optimizer:{copy} vs optimizer:{model_dir}"
    same = res.summary()["regression"][key]
    assert same["differ_share"] == 0.0 and same["max_relative_difference"] == 0.0
    assert same["first_differing_time_s"] is None
    # move station b's speed at the third point of the second version by a fifth of its range
    rows: DecisionRows = res.decisions
    second = [i for i, p in enumerate(rows.policy) if p == f"optimizer:{copy}"]
    lp = compile_params(two)
    span = lp.upper[1, 0] - lp.lower[1, 0]
    rows.setpoints[second[2]] = rows.setpoints[second[2]].copy()
    rows.setpoints[second[2]][1, 0] += 0.2 * span
    diff = res.summary()["regression"][key]
    assert diff["differ_share"] == pytest.approx(1 / len(second))
    assert diff["max_relative_difference"] == pytest.approx(0.2)
    assert diff["stations_most_often_differing"] == {"b": 1}
    assert diff["first_differing_time_s"] == res.windows["time_s"][2]


def test_bad_policies_and_settings_are_refused(
    example_run: Path, two: LineSpec, model_dir: Path
) -> None:
    spec = bundled_spec("example")
    with pytest.raises(ReplayError, match="unknown policy"):
        parse_policies(["best"], spec, None)
    with pytest.raises(ReplayError, match="twice"):
        parse_policies(["nominal", "nominal"], spec, None)
    with pytest.raises(ReplayError, match="no model"):
        parse_policies(["optimizer"], two, None)
    with pytest.raises(ReplayError, match="cannot load model"):
        parse_policies([f"optimizer:{model_dir}"], spec, None)  # trained for two-station
    recorded = parse_policies(["recorded"], spec, None)
    with pytest.raises(ReplayError, match="horizon_s"):
        replay(example_run, recorded, replace(SETTINGS, horizon_s=100))
    with pytest.raises(ReplayError, match="--scenario 3"):
        replay(example_run, recorded, replace(SETTINGS, scenario=3))


def test_cli_replay_json(cli: Any, example_run: Path, tmp_path: Path) -> None:
    r = cli(
        "replay", example_run, "--policy", "recorded", "--policy", "optimizer",
        "--cadence", "600", "--seeds", "3", "--horizon", "1200", "--out", tmp_path / "o",
        "--json",
    )  # fmt: skip
    assert r.code == 0, r.err
    summary = json.loads(r.out)
    opt = summary["policies"]["optimizer"]
    for k in ("throughput_per_hour", "profit_per_hour", "scrap_rate"):
        i = opt["kpis"][k]
        assert i["ci_low"] <= i["mean"] <= i["ci_high"]
        assert "mean" in opt["difference_vs_reference"][k]
    assert (tmp_path / "o" / "report.html").is_file()
    bad = cli("replay", tmp_path / "missing.parquet", "--out", tmp_path / "x")
    assert bad.code == 2 and "missing.parquet" in bad.err
    bad = cli("replay", example_run, "--policy", "optimizer:/nope", "--out", tmp_path / "x")
    assert bad.code == 2 and "/nope" in bad.err
    assert not (tmp_path / "x").exists()


def test_the_documented_python_example_runs(
    example_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = (Path(__file__).resolve().parents[2] / "docs" / "replay.md").read_text("utf-8")
    (block,) = [b for b in re.findall(r"```python\n(.*?)```", text, flags=re.S) if "replay(" in b]
    shutil.copy(example_run, tmp_path / "run.parquet")
    monkeypatch.chdir(tmp_path)
    exec(compile(block, "docs/replay.md", "exec"), {})
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["policies"]["optimizer"]["difference_vs_reference"]["profit_per_hour"]["n"] > 0


def test_closed_loop_counterfactuals_decide_on_each_fork(example_run: Path) -> None:
    spec = bundled_spec("example")
    policies = parse_policies(["recorded", "optimizer"], spec, bundled_checkpoint(spec))
    closed = replace(SETTINGS, seeds=2, closed_loop=True)
    a = replay(example_run, policies, closed)
    b = replay(example_run, policies, closed)
    assert a.summary() == b.summary()  # deterministic: fixed solver work, seeded forks
    assert a.summary()["settings"]["closed_loop"] is True
    opened = replay(example_run, policies, replace(closed, closed_loop=False))
    assert a.counterfactual is not None and opened.counterfactual is not None
    for k, v in a.counterfactual.kpis["recorded"].items():  # the reference runs as before
        np.testing.assert_array_equal(v, opened.counterfactual.kpis["recorded"][k])
    closed_profit = a.counterfactual.kpis["optimizer"]["profit_per_hour"]
    assert not np.array_equal(
        closed_profit, opened.counterfactual.kpis["optimizer"]["profit_per_hour"]
    )
    gain = a.counterfactual.differences()["optimizer"]["profit_per_hour"]
    assert gain.mean > 0  # on its own forks the optimizer still beats the recorded setpoints
