"""Train a surrogate end to end: generate data, fit, calibrate, set the OOD threshold, score.

The job behind `linetwin train`. Accuracy is measured on fresh states from another seed, against
the twin's expected KPIs (the mean over many replicates), not against one noisy run.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from linetwin.models.dataset import OPERATING_SHARE, Dataset, generate
from linetwin.models.features import DEFAULT_HORIZON_S, OUT_ENERGY, OUT_GOOD, OUT_SCRAP
from linetwin.models.surrogate import Z90, Prediction, Surrogate
from linetwin.models.train import TrainConfig, fit
from linetwin.twin.spec import LineSpec

Stage = Callable[[str, float], None]
"""Progress callback: (stage name, fraction of that stage done)."""

OOD_REFERENCE = 4096
OOD_QUANTILE = 0.99
BAND_NOMINAL = 0.90


@dataclass(frozen=True)
class TrainSettings:
    """Sizes of the generated data and the training run."""

    samples: int = 64_000
    candidates: int = 4
    replicates: int = 16
    eval_states: int = 300
    eval_candidates: int = 4
    eval_replicates: int = 64
    horizon_s: float = DEFAULT_HORIZON_S
    valid_fraction: float = 0.1
    seed: int = 0
    operating_share: float = OPERATING_SHARE
    config: TrainConfig = field(default_factory=TrainConfig)

    @classmethod
    def for_horizon(cls, horizon_s: float, **kwargs: Any) -> TrainSettings:
        """Settings for another horizon, with replicates scaled to the simulated time.

        Label noise falls with the simulated time per sample, so a longer horizon needs fewer
        replicates: 16 at 30 minutes; at least 8 (and 16 for the held-out truth). A 4-hour model
        of the example line with 2 replicates reached throughput R² 0.946, with 4 0.972; R² did
        not show that with 4 it was still 2.7% optimistic at the optimizer's answer, where its
        label noise left bumps the optimizer found; with 8, 1.5% (docs/surrogate.md).
        """
        ratio = DEFAULT_HORIZON_S / horizon_s
        kwargs.setdefault("replicates", max(round(16 * ratio), 8))
        kwargs.setdefault("eval_replicates", max(round(64 * ratio), 16))
        return cls(horizon_s=horizon_s, **kwargs)


def split_by_state(
    data: Dataset, per_state: int, fraction: float, rng: np.random.Generator
) -> tuple[Dataset, Dataset]:
    """Split so that all samples forked from one state land on the same side."""
    n_states = len(data) // per_state
    states = rng.permutation(n_states)
    n_b = max(round(n_states * fraction), 1)
    pick = np.zeros(n_states, dtype=bool)
    pick[states[:n_b]] = True
    mask = np.repeat(pick, per_state)
    return data.subset(np.flatnonzero(~mask)), data.subset(np.flatnonzero(mask))


def r2(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Coefficient of determination per column, over the rows where both are finite."""
    out = np.full(truth.shape[1], np.nan)
    for j in range(truth.shape[1]):
        ok = np.isfinite(pred[:, j]) & np.isfinite(truth[:, j])
        t, p = truth[ok, j], pred[ok, j]
        ss = ((t - t.mean()) ** 2).sum() if t.size else 0.0
        if ss > 0:
            out[j] = 1.0 - ((p - t) ** 2).sum() / ss
    return out


def kpi_table(outputs: np.ndarray) -> dict[str, np.ndarray]:
    """The KPIs accuracy is judged on, from outputs `(n, n_outputs)` (targets or predictions)."""
    good, scrap = outputs[:, OUT_GOOD], outputs[:, OUT_SCRAP]
    energy = outputs[:, OUT_ENERGY]
    return {
        "throughput_per_hour": good,
        "scrap_per_hour": scrap,
        "scrap_rate": scrap / np.maximum(good + scrap, 1e-9),
        "energy_kwh_per_hour": energy,
        "energy_kwh_per_good_part": np.where(good > 0, energy / np.maximum(good, 1e-9), np.nan),
        "utilisation_mean": outputs[:, 3:].mean(axis=1),
    }


def fit_band_scale(pred: Prediction, truth: np.ndarray) -> np.ndarray:
    """Per-output scale of the ensemble std that makes mean ± 1.645 std a 90% band."""
    raw = pred.members.std(axis=0)
    ratio = np.abs(truth - pred.mean) / np.maximum(Z90 * raw, 1e-12)
    return np.maximum(np.quantile(ratio, BAND_NOMINAL, axis=0), 1e-6)


def evaluate(model: Surrogate, test: Dataset) -> dict[str, Any]:
    """Accuracy (R², MAE), calibration and single-run figures on a held-out set."""
    pred = model.predict_batched(test.state, test.setpoints)
    truth, got, single = kpi_table(test.targets), kpi_table(pred.mean), kpi_table(test.single)
    low, high = pred.band()
    inside = (test.targets >= low) & (test.targets <= high)
    out: dict[str, Any] = {"samples": len(test), "replicates": test.replicates, "kpis": {}}
    for name, t in truth.items():
        p = got[name]
        out["kpis"][name] = {
            "r2": float(r2(p[:, None], t[:, None])[0]),
            "mae": float(np.nanmean(np.abs(p - t))),
            "r2_single_run_labels": float(r2(p[:, None], single[name][:, None])[0]),
            "r2_one_run_vs_truth": float(r2(single[name][:, None], t[:, None])[0]),
        }
    out["calibration"] = {
        "nominal": BAND_NOMINAL,
        "coverage": {
            n: float(inside[:, j].mean()) for j, n in enumerate(model.schema.output_names)
        },
        "coverage_mean": float(inside.mean()),
    }
    scores = model.ood_score(test.state, test.setpoints)
    out["ood"] = {
        "threshold": model.ood_threshold,
        "share_above_threshold": float((scores > model.ood_threshold).mean()),
    }
    return out


def train_surrogate(
    spec: LineSpec,
    settings: TrainSettings = TrainSettings(),
    device: torch.device | str = "cpu",
    progress: Stage | None = None,
) -> tuple[Surrogate, dict[str, Any]]:
    """Generate data with the twin, train, calibrate and score a surrogate for `spec`."""

    def stage(name: str) -> Callable[[float], None] | None:
        return None if progress is None else (lambda f: progress(name, f))

    t0 = time.perf_counter()
    s = settings
    rng = np.random.default_rng(s.seed)
    n_states = max(s.samples // s.candidates, 2)
    data = generate(
        spec,
        n_states=n_states,
        candidates=s.candidates,
        replicates=s.replicates,
        horizon_s=s.horizon_s,
        seed=s.seed,
        operating_share=s.operating_share,
        progress=stage("generating data"),
    )
    held = generate(
        spec,
        n_states=s.eval_states,
        candidates=s.eval_candidates,
        replicates=s.eval_replicates,
        horizon_s=s.horizon_s,
        seed=s.seed + 1_000_003,
        operating_share=s.operating_share,
        progress=stage("generating held-out truth"),
    )
    t_data = time.perf_counter() - t0
    train, valid = split_by_state(data, s.candidates, s.valid_fraction, rng)
    calib, test = split_by_state(held, s.eval_candidates, 0.5, rng)
    epochs = stage("training")
    net, report = fit(
        train,
        valid,
        s.config,
        device,
        None if epochs is None else (lambda e, _loss: epochs(e / s.config.max_epochs)),
    )
    ref_idx = rng.choice(len(train), size=min(OOD_REFERENCE, len(train)), replace=False)
    model = Surrogate(
        data.schema,
        net,
        np.ones(data.schema.n_outputs),
        train.inputs[ref_idx],
        np.inf,
        device=torch.device(device),
    )
    calib_pred = model.predict_batched(calib.state, calib.setpoints)
    band = fit_band_scale(calib_pred, calib.targets)
    threshold = float(np.quantile(model.ood_score(calib.state, calib.setpoints), OOD_QUANTILE))
    model = Surrogate(
        data.schema, net, band, train.inputs[ref_idx], threshold, device=torch.device(device)
    )
    metrics = evaluate(model, test)
    metrics["device"] = str(torch.device(device))
    summary = {
        "samples": len(data),
        "train": len(train),
        "valid": len(valid),
        "replicates": s.replicates,
        "candidates_per_state": s.candidates,
        "horizon_s": s.horizon_s,
        "seed": s.seed,
        "operating_share": s.operating_share,
        "data_seconds": t_data,
        "fit_seconds": report.seconds,
        "epochs": report.epochs,
        "best_epoch": report.best_epoch,
        "best_valid_loss": report.best_valid_loss,
        "config": asdict(s.config),
        "total_seconds": time.perf_counter() - t0,
    }
    model.metadata = {"training": summary, "metrics": metrics}
    return model, {"training": summary, "metrics": metrics}
