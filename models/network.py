"""An ensemble of ReLU MLPs held as stacked weights: one batched matmul per layer."""

from __future__ import annotations

import itertools
import math

import numpy as np
import torch
from torch import nn


class EnsembleMLP(nn.Module):
    """`members` independent MLPs with the same shape, evaluated together.

    Inputs and outputs are normalised inside: `forward` takes raw features `(batch, n_in)` and
    returns raw outputs `(members, batch, n_out)`. Layer k holds `weight[k] (members, d_k,
    d_k+1)` and `bias[k] (members, 1, d_k+1)`; hidden layers use ReLU, so each member is a
    piecewise-linear function that a mixed-integer program can embed exactly.
    """

    x_mean: torch.Tensor
    x_std: torch.Tensor
    y_mean: torch.Tensor
    y_std: torch.Tensor

    def __init__(
        self,
        n_in: int,
        n_out: int,
        hidden: tuple[int, ...] = (64, 64),
        members: int = 5,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.n_in, self.n_out, self.hidden, self.members = n_in, n_out, tuple(hidden), members
        dims = (n_in, *hidden, n_out)
        self.weight = nn.ParameterList()
        self.bias = nn.ParameterList()
        for a, b in itertools.pairwise(dims):
            bound = math.sqrt(6.0 / a)  # He-uniform, suited to ReLU
            w = (torch.rand(members, a, b, generator=generator) * 2 - 1) * bound
            self.weight.append(nn.Parameter(w))
            self.bias.append(nn.Parameter(torch.zeros(members, 1, b)))
        self.register_buffer("x_mean", torch.zeros(n_in))
        self.register_buffer("x_std", torch.ones(n_in))
        self.register_buffer("y_mean", torch.zeros(n_out))
        self.register_buffer("y_std", torch.ones(n_out))

    def set_normalisation(self, x: np.ndarray, y: np.ndarray) -> None:
        """Fit input and output normalisation to training data.

        A constant input column keeps scale 1; a constant output column gets scale 0, so the
        ensemble predicts exactly that constant (for example zero scrap on a line without any).
        """
        for name, data, floor in (("x", x, 1.0), ("y", y, 0.0)):
            mean = data.mean(axis=0)
            std = data.std(axis=0)
            std = np.where(std > 1e-9 * np.maximum(np.abs(mean), 1.0), std, floor)
            getattr(self, f"{name}_mean").copy_(torch.as_tensor(mean, dtype=torch.float32))
            getattr(self, f"{name}_std").copy_(torch.as_tensor(std, dtype=torch.float32))

    @property
    def y_scale(self) -> torch.Tensor:
        """Output scale safe to divide by (1 where an output is constant)."""
        return torch.where(self.y_std > 0, self.y_std, torch.ones_like(self.y_std))

    def normalised(self, xn: torch.Tensor) -> torch.Tensor:
        """Map normalised inputs `(batch, n_in)` or `(members, batch, n_in)` to normalised
        outputs `(members, batch, n_out)`."""
        h = xn if xn.dim() == 3 else xn.unsqueeze(0).expand(self.members, -1, -1)
        last = len(self.weight) - 1
        for k, (w, b) in enumerate(zip(self.weight, self.bias, strict=True)):
            h = torch.baddbmm(b, h, w)
            if k < last:
                h = torch.relu(h)
        return h

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return raw outputs `(members, batch, n_out)` for raw inputs `(batch, n_in)`."""
        yn = self.normalised((x - self.x_mean) / self.x_std)
        return yn * self.y_std + self.y_mean

    def numpy_layers(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """Return the weights as float64 arrays: per layer `(members, d_in, d_out)`, bias
        `(members, d_out)`, with the normalisation folded into the first and last layers.

        Member m then computes `relu(... relu(x @ W0[m] + b0[m]) ...) @ WL[m] + bL[m]` on raw
        inputs and gives raw outputs: the form an exact embedding or a numpy forward needs.
        """
        ws = [w.detach().cpu().double().numpy().copy() for w in self.weight]
        bs = [b.detach().cpu().double().numpy()[:, 0, :].copy() for b in self.bias]
        xm, xs = (t.detach().cpu().double().numpy() for t in (self.x_mean, self.x_std))
        ym, ys = (t.detach().cpu().double().numpy() for t in (self.y_mean, self.y_std))
        bs[0] = bs[0] - np.einsum("i,mio->mo", xm / xs, ws[0])
        ws[0] = ws[0] / xs[None, :, None]
        ws[-1] = ws[-1] * ys[None, None, :]
        bs[-1] = bs[-1] * ys[None, :] + ym[None, :]
        return list(zip(ws, bs, strict=True))


def numpy_forward(layers: list[tuple[np.ndarray, np.ndarray]], x: np.ndarray) -> np.ndarray:
    """Evaluate folded layers on raw inputs `(batch, n_in)`: outputs `(members, batch, n_out)`."""
    h = x  # (batch, d) @ (E, d, d') broadcasts to (E, batch, d')
    if x.shape[0] > 1 and layers:
        # A stride-0 broadcast makes numpy's matmul skip BLAS for its own loop: about 30x
        # slower at 48 rows of the 50-station line (56 ms against 1.5). One copy per member
        # of the inputs keeps every product on BLAS; one row broadcasts at no cost.
        h = np.ascontiguousarray(np.broadcast_to(x, (layers[0][0].shape[0], *x.shape)))
    last = len(layers) - 1
    for k, (w, b) in enumerate(layers):
        h = h @ w
        h += b[:, None, :]
        if k < last:
            np.maximum(h, 0.0, out=h)
    return h
