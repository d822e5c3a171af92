"""Checkpoints: a round trip changes nothing; damaged, mismatched or foreign ones are refused."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from linetwin.models import checkpoint
from linetwin.models.checkpoint import META, WEIGHTS
from linetwin.models.dataset import Dataset
from linetwin.models.errors import CheckpointError
from linetwin.models.surrogate import Surrogate
from linetwin.twin import bundled_spec
from linetwin.twin.spec import LineSpec


@pytest.fixture(scope="module")
def saved(model: Surrogate, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return checkpoint.save(model, tmp_path_factory.mktemp("ckpt") / "model")


@pytest.fixture
def copy(saved: Path, tmp_path: Path) -> Path:
    """A private copy of the saved checkpoint that a test may damage."""
    return Path(shutil.copytree(saved, tmp_path / "model"))


def test_save_writes_the_two_files(saved: Path, model: Surrogate) -> None:
    assert sorted(p.name for p in saved.iterdir()) == sorted([META, WEIGHTS])
    meta = json.loads((saved / META).read_text(encoding="utf-8"))
    assert meta["format_version"] == checkpoint.FORMAT_VERSION
    assert meta["spec_hash"] == model.schema.spec_hash
    assert meta["architecture"]["hidden"] == [16, 16]
    assert meta["ood"]["threshold"] == model.ood_threshold
    assert "metrics" in meta and "training" in meta


def test_round_trip_gives_identical_predictions(
    saved: Path, model: Surrogate, line3: LineSpec, fresh: Dataset
) -> None:
    back = checkpoint.load(saved, line3)
    assert back.schema == model.schema
    assert back.ood_threshold == model.ood_threshold and back.ood_k == model.ood_k
    np.testing.assert_array_equal(back.band_scale, model.band_scale)
    np.testing.assert_array_equal(back.ood_reference, model.ood_reference)
    assert back.metadata["metrics"] == json.loads(json.dumps(model.metadata["metrics"]))
    for rows in (slice(0, 10), slice(0, 160)):  # numpy and torch paths
        a = model.predict(fresh.state[rows], fresh.setpoints[rows])
        b = back.predict(fresh.state[rows], fresh.setpoints[rows])
        np.testing.assert_array_equal(a.members, b.members)
        np.testing.assert_array_equal(a.std, b.std)
    np.testing.assert_array_equal(
        model.ood_score(fresh.state, fresh.setpoints), back.ood_score(fresh.state, fresh.setpoints)
    )
    w = np.ones(model.schema.n_outputs)
    np.testing.assert_array_equal(
        model.gradient(fresh.state[:5], fresh.setpoints[:5], w)[1],
        back.gradient(fresh.state[:5], fresh.setpoints[:5], w)[1],
    )


def test_save_again_over_a_checkpoint(saved: Path, model: Surrogate, copy: Path) -> None:
    checkpoint.save(model, copy)
    assert sorted(p.name for p in copy.iterdir()) == sorted([META, WEIGHTS])  # no temp files
    back = checkpoint.load(copy)
    np.testing.assert_array_equal(back.band_scale, model.band_scale)


def test_loading_for_another_line_names_the_folder(saved: Path) -> None:
    with pytest.raises(CheckpointError, match="another line") as info:
        checkpoint.load(saved, bundled_spec("two-station"))
    assert str(saved) in str(info.value)


def test_missing_folder_or_files(tmp_path: Path, copy: Path) -> None:
    with pytest.raises(CheckpointError, match="missing"):
        checkpoint.load(tmp_path / "nowhere")
    for name in (META, WEIGHTS):
        broken = Path(shutil.copytree(copy, tmp_path / f"without-{name}"))
        (broken / name).unlink()
        with pytest.raises(CheckpointError, match="missing") as info:
            checkpoint.load(broken)
        assert name in str(info.value)


def flip_bytes(path: Path) -> None:
    data = bytearray(path.read_bytes())
    for at in (len(data) // 2, len(data) - 5):
        data[at] ^= 0xFF
    path.write_bytes(bytes(data))


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def test_corrupted_weights_raise_checkpoint_error(copy: Path) -> None:
    for damage in (flip_bytes, truncate):
        shutil.copy2(copy / WEIGHTS, copy / "good")
        damage(copy / WEIGHTS)
        with pytest.raises(CheckpointError, match="damaged weights") as info:
            checkpoint.load(copy)
        assert WEIGHTS in str(info.value)
        (copy / "good").replace(copy / WEIGHTS)
    checkpoint.load(copy)  # restored: loads again


def edit_meta(folder: Path, change: Callable[[dict[str, Any]], object]) -> None:
    meta = json.loads((folder / META).read_text(encoding="utf-8"))
    change(meta)
    (folder / META).write_text(json.dumps(meta), encoding="utf-8")


def rehash(meta: dict[str, Any], folder: Path) -> None:
    meta["weights_sha256"] = checkpoint._sha256(folder / WEIGHTS)


def garble_header(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[8:24] = b"\xff" * 16  # the JSON header starts after its 8-byte length
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", [garble_header, truncate])
def test_unreadable_weights_with_matching_checksum_raise_checkpoint_error(
    copy: Path, damage: Callable[[Path], None]
) -> None:
    """Even when the checksum was updated to match, an unreadable weights file is refused."""
    damage(copy / WEIGHTS)
    edit_meta(copy, lambda m: rehash(m, copy))
    with pytest.raises(CheckpointError):
        checkpoint.load(copy)


@pytest.mark.parametrize(
    "change",
    [
        lambda m: m["architecture"].update(hidden=[8, 8]),
        lambda m: m["architecture"].update(members=3),
        lambda m: m["architecture"].update(n_in=4),
        lambda m: m.pop("ood"),
        lambda m: m["ood"].update(threshold="high"),
        lambda m: m.pop("architecture"),
        lambda m: m.pop("format_version"),
    ],
    ids=["hidden", "members", "n_in", "no-ood", "bad-threshold", "no-architecture", "no-format"],
)
def test_metadata_that_disagrees_raises_checkpoint_error(
    copy: Path, change: Callable[[dict[str, Any]], object]
) -> None:
    edit_meta(copy, change)
    with pytest.raises(CheckpointError) as info:
        checkpoint.load(copy)
    assert str(copy) in str(info.value)


@pytest.mark.parametrize(
    "text",
    [b"", b"{", b"not json at all", b"\xff\xfe\x00garbage", b"[1, 2, 3]", b"null", b'"model"'],
    ids=["empty", "cut", "text", "binary", "list", "null", "string"],
)
def test_damaged_model_json_raises_checkpoint_error(copy: Path, text: bytes) -> None:
    (copy / META).write_bytes(text)
    with pytest.raises(CheckpointError) as info:
        checkpoint.load(copy)
    assert META in str(info.value)


@pytest.mark.parametrize("version", [0, 2, "1", None, 1.5])
def test_wrong_format_version_raises_checkpoint_error(copy: Path, version: object) -> None:
    edit_meta(copy, lambda m: m.update(format_version=version))
    with pytest.raises(CheckpointError, match="format") as info:
        checkpoint.load(copy)
    assert str(copy) in str(info.value)


@pytest.mark.parametrize(
    "change",
    [lambda m: m.pop("schema"), lambda m: m["schema"].pop("state_names")],
    ids=["no-schema", "bad-schema"],
)
def test_damaged_schema_raises_checkpoint_error(
    copy: Path, change: Callable[[dict[str, Any]], object]
) -> None:
    edit_meta(copy, change)
    with pytest.raises(CheckpointError):
        checkpoint.load(copy)


def test_schema_that_disagrees_with_the_weights_raises_checkpoint_error(copy: Path) -> None:
    def drop_state_feature(m: dict[str, Any]) -> None:
        m["schema"]["state_names"] = m["schema"]["state_names"][:-1]

    edit_meta(copy, drop_state_feature)
    with pytest.raises(CheckpointError):
        checkpoint.load(copy)
