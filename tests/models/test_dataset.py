"""Training data made with the twin: reproducible, within limits, less noisy with replicates."""

from __future__ import annotations

import gc
import json
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from linetwin.models.dataset import (
    LOCAL_WIDTH,
    Dataset,
    candidate_setpoints,
    evaluate,
    generate,
    operating_setpoints,
    sample_states,
)
from linetwin.models.errors import DatasetError
from linetwin.models.features import OUT_ENERGY, OUT_GOOD, OUT_SCRAP, FeatureSchema
from linetwin.twin import bundled_spec
from linetwin.twin.spec import LineSpec

N_STATES, CANDIDATES, REPLICATES = 12, 4, 3


@pytest.fixture(scope="module")
def data(line3: LineSpec) -> Dataset:
    return generate(line3, n_states=N_STATES, candidates=CANDIDATES, replicates=REPLICATES, seed=11)


ARRAYS = ("state", "setpoints", "targets", "single")


def test_generate_is_reproducible_from_its_seed(line3: LineSpec, data: Dataset) -> None:
    again = generate(
        line3, n_states=N_STATES, candidates=CANDIDATES, replicates=REPLICATES, seed=11
    )
    for name in ARRAYS:
        np.testing.assert_array_equal(getattr(again, name), getattr(data, name))
    other = generate(
        line3, n_states=N_STATES, candidates=CANDIDATES, replicates=REPLICATES, seed=12
    )
    for name in ARRAYS:
        assert not np.array_equal(getattr(other, name), getattr(data, name)), name


def test_shapes_and_bookkeeping(data: Dataset) -> None:
    s = data.schema
    n = N_STATES * CANDIDATES
    assert len(data) == n
    assert data.state.shape == (n, s.n_state)
    assert data.setpoints.shape == (n, s.n_setpoints)
    assert data.targets.shape == data.single.shape == (n, s.n_outputs)
    assert data.inputs.shape == (n, s.n_inputs)
    np.testing.assert_array_equal(data.inputs[:, : s.n_state], data.state)
    assert data.replicates == REPLICATES and data.seed == 11
    # the candidates of one state share its state features
    per_state = data.state.reshape(N_STATES, CANDIDATES, -1)
    np.testing.assert_array_equal(per_state, np.repeat(per_state[:, :1], CANDIDATES, axis=1))
    assert len({row.tobytes() for row in per_state[:, 0]}) == N_STATES


def test_candidates_within_limits_and_targets_plausible(data: Dataset) -> None:
    s = data.schema
    assert (data.setpoints >= s.lower).all() and (data.setpoints <= s.upper).all()
    # they spread over the box, not one corner of it
    span = data.setpoints.max(axis=0) - data.setpoints.min(axis=0)
    assert (span > 0.5 * (s.upper - s.lower)).all()
    for y in (data.targets, data.single):
        assert np.isfinite(y).all()
        assert (y[:, OUT_GOOD] >= 0).all()
        assert (y[:, OUT_SCRAP] >= 0).all()
        assert (y[:, OUT_ENERGY] > 0).all()
        assert ((y[:, 3:] >= 0) & (y[:, 3:] <= 1)).all()  # utilisation
        # the deterministic first station releases at most 3600 / 20 * 1.5 = 270 parts/h; the
        # at most 10 parts inside the line at the start add at most 20 over the half hour
        assert (y[:, OUT_GOOD] + y[:, OUT_SCRAP] <= 290.0).all()
    assert data.targets[:, OUT_GOOD].std() > 0 and data.targets[:, OUT_SCRAP].max() > 0


def test_candidate_setpoints_stay_in_the_box_even_from_the_edge(line3: LineSpec) -> None:
    schema = FeatureSchema.from_spec(line3)
    rng = np.random.default_rng(0)
    current = np.stack([schema.lower, schema.upper, (schema.lower + schema.upper) / 2])
    cand = candidate_setpoints(schema, current, 10, rng)
    assert cand.shape == (3, 10, schema.n_setpoints)
    assert (cand >= schema.lower).all() and (cand <= schema.upper).all()
    # the local half stays near the current setpoints
    local = cand[:, :5]
    assert (np.abs(local - current[:, None]) <= 0.15 * (schema.upper - schema.lower) + 1e-12).all()


def test_operating_setpoints_cover_nominal_the_speed_limits_and_the_ideal_windows(
    line3: LineSpec,
) -> None:
    schema = FeatureSchema.from_spec(line3)
    lo, hi = schema.lower, schema.upper
    sp = operating_setpoints(line3, schema, 4000, np.random.default_rng(0))
    assert sp.shape == (4000, schema.n_setpoints)
    assert (sp >= lo).all() and (sp <= hi).all()
    speeds = [j for j, (_, k) in enumerate(schema.setpoint_slots) if k == 0]
    (temp,) = [j for j, (_, k) in enumerate(schema.setpoint_slots) if k == 1]
    nominal = np.array([1.0, 1.0, 1.0, 160.0])[[*speeds, temp]]
    near = (np.abs(sp - nominal) <= LOCAL_WIDTH * (hi - lo) + 1e-12).all(axis=1)
    assert 0.45 < near.mean() < 0.6  # half around nominal (and a few others by chance)
    rest = sp[~near]
    at_max = rest[:, speeds] == hi[speeds]
    assert 0.4 < at_max.mean() < 0.6 and at_max.all(axis=1).mean() > 0.1  # near the corner
    assert (rest[:, speeds] == lo[speeds]).mean() > 0.05
    # temperatures inside the ideal window widened by half its width (150-170 -> 140-180)
    assert (rest[:, temp] >= 140.0).all() and (rest[:, temp] <= 180.0).all()
    # a Latin hypercube over the box would put a quarter of them there; here all
    assert np.ptp(rest[:, temp]) > 35.0


def test_operating_share_zero_is_the_whole_box_and_bad_shares_are_refused(
    line3: LineSpec,
) -> None:
    box = generate(line3, n_states=40, candidates=4, replicates=1, seed=5, operating_share=0.0)
    mixed = generate(line3, n_states=40, candidates=4, replicates=1, seed=5)
    (temp,) = [j for j, (_, k) in enumerate(box.schema.setpoint_slots) if k == 1]
    in_window = [np.mean(np.abs(d.setpoints[:, temp] - 160.0) <= 10.0) for d in (box, mixed)]
    assert in_window[0] < 0.45 and in_window[1] > in_window[0] + 0.15  # 1/3 of the box's span
    width = LOCAL_WIDTH * (box.schema.upper - box.schema.lower)
    nominal = np.array([1.0, 1.0, 1.0, 160.0])
    near = [np.mean((np.abs(d.setpoints - nominal) <= width).all(axis=1)) for d in (box, mixed)]
    assert near[0] < 0.03 and near[1] > near[0] + 0.05
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(DatasetError, match="operating_share"):
            generate(line3, n_states=4, candidates=2, replicates=1, operating_share=bad)


def test_one_replicate_means_targets_are_the_single_run(line3: LineSpec) -> None:
    d = generate(line3, n_states=4, candidates=2, replicates=1, seed=3)
    np.testing.assert_array_equal(d.targets, d.single)


@pytest.mark.parametrize("bad", [(0, 4, 2), (4, 0, 2), (4, 4, 0)])
def test_sizes_below_one_are_refused(line3: LineSpec, bad: tuple[int, int, int]) -> None:
    with pytest.raises(DatasetError, match="at least 1"):
        generate(line3, n_states=bad[0], candidates=bad[1], replicates=bad[2])


def test_replicate_averaging_reduces_noise(line3: LineSpec) -> None:
    """The mean of 4 runs is nearer the expectation (64 further runs) than one run is."""
    schema = FeatureSchema.from_spec(line3)
    rng = np.random.default_rng(21)
    snap, _recent = sample_states(line3, schema, 30, rng)
    current = schema.setpoint_features(snap.setpoints)
    cand = candidate_setpoints(schema, current, 4, rng).reshape(-1, schema.n_setpoints)
    source = np.repeat(np.arange(30), 4)
    mean4, single = evaluate(line3, schema, snap, source, cand, 4, rng)
    truth, _ = evaluate(line3, schema, snap, source, cand, 64, np.random.default_rng(99))
    # throughput, energy and utilisation of the thermal station: all noisy per run
    for j in (0, 2, 4):
        assert np.std(single[:, j] - mean4[:, j]) > 0
        err_single = np.mean((single[:, j] - truth[:, j]) ** 2)
        err_mean = np.mean((mean4[:, j] - truth[:, j]) ** 2)
        assert err_mean < 0.6 * err_single, (schema.output_names[j], err_mean, err_single)


def test_save_load_round_trip(tmp_path: Path, line3: LineSpec, data: Dataset) -> None:
    path = tmp_path / "train.npz"
    data.save(path)
    back = Dataset.load(path, line3)
    assert back.schema == data.schema
    assert (back.replicates, back.seed) == (data.replicates, data.seed)
    for name in ARRAYS:
        np.testing.assert_array_equal(getattr(back, name), getattr(data, name))
    assert Dataset.load(str(path)).schema == data.schema  # without a spec, str path


def test_save_load_round_trip_without_npz_suffix(tmp_path: Path, data: Dataset) -> None:
    path = tmp_path / "train.data"
    data.save(path)
    back = Dataset.load(path)
    np.testing.assert_array_equal(back.targets, data.targets)


def test_loading_for_another_line_names_the_file(tmp_path: Path, data: Dataset) -> None:
    path = tmp_path / "three.npz"
    data.save(path)
    with pytest.raises(DatasetError, match="another line") as info:
        Dataset.load(path, bundled_spec("two-station"))
    assert str(path) in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nothing.npz"
    with pytest.raises(DatasetError, match="no such dataset file") as info:
        Dataset.load(path)
    assert str(path) in str(info.value)


def _write_npz(path: Path, data: Dataset, meta: object, **override: np.ndarray) -> None:
    arrays = {name: getattr(data, name) for name in ARRAYS}
    arrays.update(override)
    raw = json.dumps(meta).encode() if not isinstance(meta, bytes) else meta
    np.savez(path, meta=np.frombuffer(raw, dtype=np.uint8), **arrays)


def _meta(data: Dataset) -> dict[str, object]:
    return {
        "format_version": 1,
        "schema": data.schema.to_json(),
        "replicates": data.replicates,
        "seed": data.seed,
    }


@pytest.mark.parametrize(
    "damage",
    ["garbage", "bad-json", "missing-array", "format", "directory"],
)
def test_damaged_files_raise_dataset_error(tmp_path: Path, data: Dataset, damage: str) -> None:
    path = tmp_path / "d.npz"
    if damage == "garbage":
        path.write_bytes(b"this is not a dataset at all\n" * 10)
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "bad-json":
        _write_npz(path, data, b"{not json")
    elif damage == "missing-array":
        data.save(path)
        with np.load(path) as z:
            kept = {k: z[k] for k in z.files if k != "targets"}
        np.savez(path, **kept)
    elif damage == "format":
        _write_npz(path, data, {**_meta(data), "format_version": 99})
    elif damage == "directory":
        path.mkdir()
    with pytest.raises(DatasetError) as info:
        Dataset.load(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("damage", ["no-schema", "bad-schema", "meta-list", "npy-file", "empty"])
def test_damaged_metadata_raises_dataset_error(tmp_path: Path, data: Dataset, damage: str) -> None:
    path = tmp_path / "d.npz"
    if damage == "no-schema":
        meta = _meta(data)
        del meta["schema"]
        _write_npz(path, data, meta)
    elif damage == "bad-schema":
        _write_npz(path, data, {**_meta(data), "schema": {"spec_hash": "x"}})
    elif damage == "meta-list":
        _write_npz(path, data, [1, 2, 3])
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "npy-file":
        np.save(tmp_path / "d.npy", np.zeros(3))
        (tmp_path / "d.npy").rename(path)
    with pytest.raises(DatasetError) as info:
        Dataset.load(path)
    assert str(path) in str(info.value)


def test_inconsistent_arrays_raise_dataset_error(tmp_path: Path, data: Dataset) -> None:
    path = tmp_path / "d.npz"
    _write_npz(path, data, _meta(data), state=data.state[:-1], targets=data.targets[:, :2])
    with pytest.raises(DatasetError):
        Dataset.load(path)


@contextmanager
def resource_warnings() -> Iterator[list[BaseException | Warning]]:
    """Collect ResourceWarnings (unclosed files) raised inside, after a garbage collection.

    Under the test run's `error` filter they arrive as unraisable exceptions from `__del__`;
    otherwise as warnings. Either way they are kept here instead of failing a later test.
    """
    found: list[BaseException | Warning] = []
    old = sys.unraisablehook
    sys.unraisablehook = lambda u: found.append(u.exc_value) if u.exc_value else None
    try:
        with warnings.catch_warnings(record=True) as rec:
            warnings.simplefilter("always")
            yield found
            gc.collect()
        found.extend(w.message for w in rec if isinstance(w.message, Warning))
    finally:
        sys.unraisablehook = old
    found[:] = [e for e in found if isinstance(e, ResourceWarning)]


def _truncated(tmp_path: Path, data: Dataset) -> Path:
    path = tmp_path / "d.npz"
    data.save(path)
    path.write_bytes(path.read_bytes()[:300])
    return path


def test_truncated_file_raises_dataset_error(tmp_path: Path, data: Dataset) -> None:
    path = _truncated(tmp_path, data)
    with resource_warnings():
        with pytest.raises(DatasetError) as info:
            Dataset.load(path)
        assert str(path) in str(info.value)
        del info


def test_truncated_file_is_closed(tmp_path: Path, data: Dataset) -> None:
    path = _truncated(tmp_path, data)
    with resource_warnings() as leaked, pytest.raises(DatasetError):
        Dataset.load(path)
    assert leaked == []
