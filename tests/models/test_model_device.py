"""The torch device: auto, cpu, cuda; a GPU surrogate predicts what the CPU one does."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from linetwin.models import checkpoint
from linetwin.models.dataset import Dataset
from linetwin.models.device import resolve_torch_device, torch_threads
from linetwin.models.errors import ModelDeviceError, ModelError
from linetwin.models.surrogate import Surrogate
from linetwin.twin.spec import LineSpec

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
without_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is present")


def test_auto_takes_the_gpu_when_there_is_one_else_the_cpu() -> None:
    want = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_torch_device("auto").type == want


def test_cpu_is_always_available() -> None:
    assert resolve_torch_device("cpu") == torch.device("cpu")


@without_cuda
def test_cuda_without_a_gpu_is_refused() -> None:
    with pytest.raises(ModelDeviceError, match="cuda") as info:
        resolve_torch_device("cuda")
    assert "--device cpu" in str(info.value)
    assert isinstance(info.value, ModelError)


@pytest.mark.parametrize("name", ["gpu", "CPU", "", "cuda:0", "mps", "tpu"])
def test_unknown_devices_are_refused(name: str) -> None:
    with pytest.raises(ModelDeviceError, match="unknown device") as info:
        resolve_torch_device(name)
    assert "auto, cpu, cuda" in str(info.value)


def test_torch_threads_sets_and_restores_the_thread_count() -> None:
    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError, match="inside"), torch_threads(1):
        raise RuntimeError("inside")
    assert torch.get_num_threads() == before


@needs_cuda
def test_cuda_predictions_equal_cpu_predictions(
    model: Surrogate, line3: LineSpec, fresh: Dataset, tmp_path: Path
) -> None:
    assert resolve_torch_device("cuda").type == "cuda"
    # a private copy: moving the shared fixture's network would disturb other tests
    cpu = checkpoint.load(checkpoint.save(model, tmp_path / "m"), line3)
    want_big = cpu.predict(fresh.state, fresh.setpoints)
    want_small = cpu.predict(fresh.state[:8], fresh.setpoints[:8])
    want_ood = cpu.ood_score(fresh.state, fresh.setpoints)
    w = np.ones(cpu.schema.n_outputs)
    want_grad = cpu.gradient(fresh.state[:8], fresh.setpoints[:8], w)[1]

    gpu = cpu.to("cuda")
    assert gpu.device.type == "cuda"
    scale = np.abs(want_big.mean).max(axis=0) + 1e-9
    for rows in (slice(0, 8), slice(0, len(fresh))):  # small batches also go through torch
        got = gpu.predict(fresh.state[rows], fresh.setpoints[rows])
        np.testing.assert_allclose(got.mean / scale, want_big.mean[rows] / scale, atol=1e-4)
        np.testing.assert_allclose(got.std / scale, want_big.std[rows] / scale, atol=1e-4)
    np.testing.assert_allclose(
        gpu.predict(fresh.state[:8], fresh.setpoints[:8]).mean / scale,
        want_small.mean / scale,
        atol=1e-4,
    )
    np.testing.assert_allclose(gpu.ood_score(fresh.state, fresh.setpoints), want_ood, rtol=1e-4)
    got_grad = gpu.gradient(fresh.state[:8], fresh.setpoints[:8], w)[1]
    gscale = np.abs(want_grad).max() + 1e-9
    np.testing.assert_allclose(got_grad / gscale, want_grad / gscale, atol=1e-4)


@needs_cuda
def test_moving_to_the_gpu_leaves_the_cpu_surrogate_usable(
    model: Surrogate, line3: LineSpec, fresh: Dataset, tmp_path: Path
) -> None:
    cpu = checkpoint.load(checkpoint.save(model, tmp_path / "m"), line3)
    want = cpu.predict(fresh.state, fresh.setpoints).mean  # torch path (160 rows)
    gpu = cpu.to("cuda")
    assert gpu.device.type == "cuda"
    np.testing.assert_allclose(cpu.predict(fresh.state, fresh.setpoints).mean, want, rtol=1e-6)
    w = np.ones(cpu.schema.n_outputs)
    assert np.isfinite(cpu.gradient(fresh.state[:4], fresh.setpoints[:4], w)[1]).all()


@needs_cuda
def test_checkpoint_loads_onto_the_gpu(
    model: Surrogate, line3: LineSpec, fresh: Dataset, tmp_path: Path
) -> None:
    folder = checkpoint.save(model, tmp_path / "m")
    gpu = checkpoint.load(folder, line3, device="cuda")
    assert gpu.device.type == "cuda"
    assert next(gpu.net.parameters()).device.type == "cuda"
    want = model.predict(fresh.state, fresh.setpoints).mean
    got = gpu.predict(fresh.state, fresh.setpoints).mean
    scale = np.abs(want).max(axis=0) + 1e-9
    np.testing.assert_allclose(got / scale, want / scale, atol=1e-4)
