"""`serve --record`: the runtime records every snapshot, and the recording replays."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from linetwin.api.runtime import Runtime
from linetwin.api.settings import Settings
from linetwin.models.checkpoint import load
from linetwin.replay.policies import parse_policies
from linetwin.replay.run import ReplaySettings, replay
from linetwin.twin.errors import RecordingError
from linetwin.twin.recorder import read_recording
from linetwin.twin.spec import LineSpec


def runtime(two: LineSpec, model_dir: Path, tmp_path: Path, record: Path) -> Runtime:
    settings = Settings.load(
        {},
        data_dir=tmp_path / "data",
        model_dir=model_dir,
        speed=1200.0,
        mode="closed",
        record=record,
    )
    return Runtime(settings, two, load(model_dir, two))


def test_serve_run_is_recorded_and_replays(two: LineSpec, model_dir: Path, tmp_path: Path) -> None:
    path = tmp_path / "serve.parquet"
    rt = runtime(two, model_dir, tmp_path, path)
    rt.start()
    try:
        deadline = time.monotonic() + 30
        while rt.twin.twin.time_s < 1800.0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not path.exists()  # complete only once the service stops
    finally:
        rt.stop()
    assert rt.recorder is not None and rt.recorder.dropped == 0
    rec = read_recording(path)
    assert rec.n_ticks == rt.recorder.rows >= 1800
    np.testing.assert_allclose(np.diff(rec.time_s), 1.0)  # every 1 s tick, none lost
    assert rec.meta["note"] == "linetwin serve"
    assert len(np.unique(rec.speed[:, 0, 0])) > 1  # the closed loop moved the setpoints
    res = replay(
        path,
        parse_policies(["recorded", "optimizer"], two, model_dir),
        ReplaySettings(cadence_s=60.0, seeds=0),
    )
    assert res.windows["time_s"].size == rec.n_ticks // 60 - (rec.n_ticks % 60 == 0)


def test_an_existing_recording_is_not_overwritten(
    two: LineSpec, model_dir: Path, tmp_path: Path
) -> None:
    path = tmp_path / "old.parquet"
    path.write_bytes(b"precious")
    rt = runtime(two, model_dir, tmp_path, path)
    try:
        with pytest.raises(RecordingError, match="refusing to overwrite"):
            rt.start()
    finally:
        rt.stop()
    assert path.read_bytes() == b"precious"
