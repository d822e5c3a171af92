"""The surrogate: predict a line's KPIs, their spread and an out-of-distribution score.

`Surrogate.predict` is the one verb the optimizer and the API use. Small batches on the CPU go
through a numpy forward of the folded weights (torch's per-call overhead would dominate at batch
1); large batches and the GPU go through torch.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from linetwin.models.errors import ModelError
from linetwin.models.features import OUT_ENERGY, OUT_GOOD, OUT_SCRAP, FeatureSchema
from linetwin.models.network import EnsembleMLP, numpy_forward
from linetwin.twin.spec import Economics

NUMPY_MAX_BATCH = 16
"""Rows up to which `predict` runs the numpy forward on the CPU (torch above: at 32-64 rows of
the 50-station line numpy's multithreaded BLAS took 30 ms on a loaded 2-core machine, torch
on its one thread 1.5 ms)."""
Z90 = 1.6448536269514722  # two-sided 90% band of a normal


@dataclass(frozen=True)
class Prediction:
    """KPIs in physical units: mean and std `(batch, n_outputs)`, members `(E, batch, n_out)`.

    `std` is the calibrated spread: the ensemble's standard deviation times the per-output
    scale fitted on held-out data, so that mean ± 1.645 std is a 90% band.
    """

    mean: np.ndarray
    std: np.ndarray
    members: np.ndarray

    def band(self, z: float = Z90) -> tuple[np.ndarray, np.ndarray]:
        """Return (low, high) of the band mean ± z std."""
        return self.mean - z * self.std, self.mean + z * self.std


@dataclass
class Surrogate:
    """A trained ensemble with its schema, calibration and OOD reference."""

    schema: FeatureSchema
    net: EnsembleMLP
    band_scale: np.ndarray  # (n_outputs,) multiplies the ensemble std
    ood_reference: np.ndarray  # (m, n_inputs) raw inputs from the training data
    ood_threshold: float  # scores above it are out of the training envelope
    ood_k: int = 8
    metadata: dict[str, Any] = field(default_factory=dict)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    def __post_init__(self) -> None:
        self.net.to(self.device).eval()
        self._layers = self.net.numpy_layers()
        xs = self.net.x_std.detach().cpu().double().numpy()
        xm = self.net.x_mean.detach().cpu().double().numpy()
        self._x_mean, self._x_std = xm, xs
        self._ood_ref_n = torch.as_tensor(
            (self.ood_reference - xm) / xs, dtype=torch.float32, device=self.device
        )

    # -- inputs -----------------------------------------------------------------------------
    def inputs(self, state: np.ndarray, setpoints: np.ndarray) -> np.ndarray:
        """Join state `(batch, n_state)` and setpoint features `(batch, n_setpoints)`."""
        state = np.atleast_2d(np.asarray(state, dtype=float))
        setpoints = np.atleast_2d(np.asarray(setpoints, dtype=float))
        if state.shape[1] != self.schema.n_state or setpoints.shape[1] != self.schema.n_setpoints:
            raise ModelError(
                f"expected {self.schema.n_state} state and {self.schema.n_setpoints} setpoint "
                f"features, got {state.shape[1]} and {setpoints.shape[1]}"
            )
        if state.shape[0] == 1 and setpoints.shape[0] > 1:
            state = np.broadcast_to(state, (setpoints.shape[0], state.shape[1]))
        if state.shape[0] != setpoints.shape[0]:
            raise ModelError(
                f"{state.shape[0]} state rows and {setpoints.shape[0]} setpoint rows: give one "
                "state for all, or one per setpoint row"
            )
        return np.concatenate([state, setpoints], axis=1)

    # -- the verb ---------------------------------------------------------------------------
    def predict(self, state: np.ndarray, setpoints: np.ndarray) -> Prediction:
        """Predict KPIs for a batch of (state, setpoints); one state broadcasts over many."""
        x = self.inputs(state, setpoints)
        if self.device.type == "cpu" and x.shape[0] <= NUMPY_MAX_BATCH:
            members = numpy_forward(self._layers, x)
        else:
            with torch.inference_mode():
                xt = torch.as_tensor(x, dtype=torch.float32, device=self.device)
                members = self.net(xt).double().cpu().numpy()
        return self._summarise(members)

    def predict_batched(
        self, state: np.ndarray, setpoints: np.ndarray, chunk: int = 32_768
    ) -> Prediction:
        """Predict a large batch in chunks of `chunk` rows (bounded memory)."""
        x_state = np.atleast_2d(state)
        x_sp = np.atleast_2d(setpoints)
        one = x_state.shape[0] == 1  # one state broadcast over all setpoints
        parts = [
            self.predict(x_state if one else x_state[i : i + chunk], x_sp[i : i + chunk]).members
            for i in range(0, x_sp.shape[0], chunk)
        ]
        return self._summarise(np.concatenate(parts, axis=1))

    def _summarise(self, members: np.ndarray) -> Prediction:
        # np.add.reduce: numpy's mean/std carry ~15 µs of fixed cost at batch 1 (bench/surrogate)
        e = members.shape[0]
        mean = np.add.reduce(members, axis=0) / e
        dev = members - mean
        std = np.sqrt(np.add.reduce(dev * dev, axis=0) / e) * self.band_scale
        return Prediction(mean, std, members)

    def predict_torch(self, state: torch.Tensor, setpoints: torch.Tensor) -> torch.Tensor:
        """Differentiable members `(E, batch, n_out)` for torch inputs on `self.device`."""
        return self.net(torch.cat([state, setpoints], dim=1))

    def gradient(
        self, state: np.ndarray, setpoints: np.ndarray, weights: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Return (objective `(batch,)`, d objective / d setpoints `(batch, n_setpoints)`).

        The objective is the ensemble-mean prediction dotted with `weights (n_outputs,)`.
        """
        x = self.inputs(state, setpoints)
        xs = torch.as_tensor(x[:, : self.schema.n_state], dtype=torch.float32, device=self.device)
        sp = torch.as_tensor(
            x[:, self.schema.n_state :], dtype=torch.float32, device=self.device
        ).requires_grad_(True)
        w = torch.as_tensor(weights, dtype=torch.float32, device=self.device)
        obj = (self.predict_torch(xs, sp).mean(dim=0) * w).sum(dim=1)
        (grad,) = torch.autograd.grad(obj.sum(), sp)
        return obj.detach().double().cpu().numpy(), grad.double().cpu().numpy()

    def jacobian(self, state: np.ndarray, setpoints: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Return the ensemble-mean outputs `(n_out,)` and their exact Jacobian with respect
        to the setpoints `(n_out, n_setpoints)` at one point (ReLU: piecewise linear)."""
        x = self.inputs(state, setpoints)[:1]
        n_state = self.schema.n_state
        members = self._layers[0][0].shape[0]
        h = np.broadcast_to(x, (members, *x.shape))
        jac = self._layers[0][0][:, n_state:, :]  # (E, n_sp, d1)
        for k, (w, b) in enumerate(self._layers):
            if k > 0:
                jac = jac @ w
            h = np.matmul(h, w) + b[:, None, :]
            if k < len(self._layers) - 1:
                active = h[:, 0, :] > 0
                h = np.maximum(h, 0.0)
                jac = jac * active[:, None, :]
        return h[:, 0, :].mean(axis=0), jac.mean(axis=0).T

    def ood_score(self, state: np.ndarray, setpoints: np.ndarray) -> np.ndarray:
        """Return the OOD score `(batch,)`: mean distance to the k nearest training inputs in
        normalised units. Scores above `ood_threshold` are outside the training envelope."""
        x = self.inputs(state, setpoints)
        xn = torch.as_tensor(
            (x - self._x_mean) / self._x_std, dtype=torch.float32, device=self.device
        )
        with torch.inference_mode():
            d = torch.cdist(xn, self._ood_ref_n, compute_mode="use_mm_for_euclid_dist")
            k = min(self.ood_k, d.shape[1])
            near = torch.topk(d, k, dim=1, largest=False).values.mean(dim=1)
        return near.double().cpu().numpy() / np.sqrt(x.shape[1])

    def weights(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """Return each layer as float64 `(members, d_in, d_out)` and bias `(members, d_out)`,
        with the normalisation folded in: members map raw inputs to raw outputs."""
        return [(w.copy(), b.copy()) for w, b in self._layers]

    def to(self, device: torch.device | str) -> Surrogate:
        """Return the same surrogate on another torch device."""
        return Surrogate(
            self.schema,
            copy.deepcopy(self.net),
            self.band_scale,
            self.ood_reference,
            self.ood_threshold,
            self.ood_k,
            self.metadata,
            torch.device(device),
        )


def derived_kpis(economics: Economics, outputs: np.ndarray) -> dict[str, np.ndarray]:
    """From outputs `(..., n_outputs)` derive the profit rate, scrap rate and energy per part."""
    good = np.maximum(outputs[..., OUT_GOOD], 0.0)
    scrap = np.maximum(outputs[..., OUT_SCRAP], 0.0)
    energy = np.maximum(outputs[..., OUT_ENERGY], 0.0)
    profit = (
        good * economics.price_per_good_part
        - scrap * economics.cost_per_scrap_part
        - energy * economics.energy_price_per_kwh
    )
    return {
        "throughput_per_hour": good,
        "scrap_rate": scrap / np.maximum(good + scrap, 1e-9),
        "energy_kwh_per_good_part": energy / np.maximum(good, 1e-9),
        "profit_per_hour": profit,
    }
