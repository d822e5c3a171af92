"""Fit an ensemble to a dataset: bootstrap per member, Adam, early stopping on validation."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from linetwin.models.dataset import Dataset
from linetwin.models.device import torch_threads
from linetwin.models.errors import ModelError
from linetwin.models.network import EnsembleMLP


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of ensemble training."""

    hidden: tuple[int, ...] = (128, 128)
    members: int = 5
    max_epochs: int = 300
    batch_size: int = 1024
    learning_rate: float = 3e-3
    weight_decay: float = 1e-6
    patience: int = 20
    seed: int = 0


@dataclass
class TrainReport:
    """What training did: epochs run, best validation loss, wall seconds, loss curve."""

    epochs: int = 0
    best_epoch: int = 0
    best_valid_loss: float = float("inf")
    seconds: float = 0.0
    valid_losses: list[float] = field(default_factory=list)


def fit(
    train: Dataset,
    valid: Dataset,
    config: TrainConfig = TrainConfig(),
    device: torch.device | str = "cpu",
    progress: Callable[[int, float], None] | None = None,
) -> tuple[EnsembleMLP, TrainReport]:
    """Train an ensemble on `train`, stopping when `valid` loss stops improving.

    Each member draws its minibatches from its own bootstrap resample of the training set, so
    the members disagree where the data are thin: their spread is the uncertainty.
    `progress(epoch, valid_loss)` is called after every epoch. On the CPU training uses one
    torch thread: minibatches of this size gain little from a second, and on a 2-core machine
    where the twin's numba threads have just run, two torch threads were 7-10x slower.
    """
    threads = 1 if torch.device(device).type == "cpu" else torch.get_num_threads()
    with torch_threads(threads):
        return _fit(train, valid, config, device, progress)


def _fit(
    train: Dataset,
    valid: Dataset,
    config: TrainConfig = TrainConfig(),
    device: torch.device | str = "cpu",
    progress: Callable[[int, float], None] | None = None,
) -> tuple[EnsembleMLP, TrainReport]:
    """The body of `fit`, run under its thread setting."""
    if len(train) < 2 or len(valid) < 1:
        raise ModelError(
            f"need at least 2 training and 1 validation samples (got {len(train)} and {len(valid)})"
        )
    t0 = time.perf_counter()
    gen = torch.Generator().manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    x_tr, y_tr = train.inputs, train.targets
    net = EnsembleMLP(x_tr.shape[1], y_tr.shape[1], config.hidden, config.members, gen)
    net.set_normalisation(x_tr, y_tr)
    net.to(device)
    dev = torch.device(device)

    def tensor(a: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(a, dtype=torch.float32, device=dev)

    xn = (tensor(x_tr) - net.x_mean) / net.x_std
    yn = (tensor(y_tr) - net.y_mean) / net.y_scale
    xv = (tensor(valid.inputs) - net.x_mean) / net.x_std
    yv = (tensor(valid.targets) - net.y_mean) / net.y_scale
    n = len(train)
    boot = torch.as_tensor(rng.integers(0, n, (config.members, n)), device=dev)
    opt = torch.optim.Adam(
        net.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
    )
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
        opt, factor=0.5, patience=config.patience // 3
    )
    report = TrainReport()
    best = copy.deepcopy(net.state_dict())
    steps = max(n // config.batch_size, 1)
    for epoch in range(config.max_epochs):
        net.train()
        order = torch.stack([torch.randperm(n, generator=gen) for _ in range(config.members)])
        order = torch.gather(boot, 1, order.to(dev))
        for k in range(steps):
            idx = order[:, k * config.batch_size : (k + 1) * config.batch_size]
            pred = net.normalised(xn[idx])
            loss = torch.mean((pred - yn[idx]) ** 2)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        net.eval()
        with torch.no_grad():
            vloss = float(torch.mean((net.normalised(xv) - yv) ** 2))
        sched.step(vloss)
        report.valid_losses.append(vloss)
        report.epochs = epoch + 1
        if vloss < report.best_valid_loss * (1 - 1e-4):
            report.best_valid_loss, report.best_epoch = vloss, epoch + 1
            best = copy.deepcopy(net.state_dict())
        if progress is not None:
            progress(epoch + 1, vloss)
        if epoch + 1 - report.best_epoch >= config.patience:
            break
    net.load_state_dict(best)
    net.eval()
    report.seconds = time.perf_counter() - t0
    return net, report
