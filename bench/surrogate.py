"""Benchmark the surrogate's prediction paths; print one JSON line of figures.

    python bench/surrogate.py [--device cpu|cuda|auto] [--quick]

A surrogate of the default architecture (`TrainConfig`: hidden layers and members) for the
bundled example line, built directly with random weights and a normalisation fitted to inputs
drawn over the line's feature ranges (timing does not depend on what the weights learned).

Batch 1, variants interleaved block by block in one process, medians over many calls: (a)
`Surrogate.predict` (the public path, input checks included), (b) a numpy forward of the same
weights written here, independently of `models.network` (normalise, stacked matmul per layer,
ReLU, denormalise) — the reference — alone and followed by the ensemble mean and std, (c) the
internal `models.network.numpy_forward`, (d) torch eager on a ready tensor. Ratio (a) / (b).

Large batch: samples per second of `predict_batched` on 65,536 samples and of the bare torch
forward, the surrogate's FLOPs per sample, and the machine's float32 matmul rate measured in
the same run on a layer-shaped product `(members * chunk, h) @ (h, h)` and a square one, so the
achieved GFLOP/s stand next to what the machine does. Also `ood_score`, `gradient` and
`predict` at batch 1 and 256 (what the optimizer calls).

With `--device cuda` the surrogate, torch eager, the matmuls and the large batch run on the GPU;
the numpy reference stays on the CPU (it is what a CPU-only deployment would run).
"""

from __future__ import annotations

import argparse
import datetime
import functools
import itertools
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# Run as a script, this file's folder comes first on sys.path, and it holds `twin.py`: take the
# folder off so that `import twin` finds the package, not the twin benchmark.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from linetwin.models.device import resolve_torch_device  # noqa: E402
from linetwin.models.errors import ModelDeviceError  # noqa: E402
from linetwin.models.features import FeatureSchema  # noqa: E402
from linetwin.models.network import EnsembleMLP, numpy_forward  # noqa: E402
from linetwin.models.pipeline import OOD_QUANTILE, OOD_REFERENCE  # noqa: E402
from linetwin.models.surrogate import NUMPY_MAX_BATCH, Surrogate  # noqa: E402
from linetwin.models.train import TrainConfig  # noqa: E402
from linetwin.twin import bundled_spec  # noqa: E402

LINE = "example"
LARGE_BATCH = 65_536
CHUNK = 32_768  # predict_batched's default chunk
TARGET_RATIO = 1.5


# -- the surrogate under test ----------------------------------------------------------------
def sample_inputs(schema: FeatureSchema, n: int, rng: np.random.Generator) -> np.ndarray:
    """Raw inputs `(n, n_inputs)` spread over plausible ranges of each feature."""
    parts = [rng.random((n, len(schema.buffer_capacity)))]  # buffer fill fractions
    s = len(schema.station_names)
    status = rng.integers(0, 4, (n, s))  # coded here as 0 busy, 1 down, 2 blocked, 3 starved
    parts += [(status == code).astype(float) for code in (1, 2, 3)]
    lo, hi = schema.lower, schema.upper
    temp_cols = [j for j, (_, k) in enumerate(schema.setpoint_slots) if k == 1]
    parts.append(lo[temp_cols] + rng.random((n, len(temp_cols))) * (hi - lo)[temp_cols])
    parts.append(rng.random((n, len(schema.wear_stations))) * 40.0)  # wear-hours
    parts.append(rng.random((n, 1)) * 600.0)  # recent good parts per hour
    parts.append(lo + rng.random((n, schema.n_setpoints)) * (hi - lo))
    x = np.concatenate(parts, axis=1)
    if x.shape[1] != schema.n_inputs:
        raise RuntimeError(f"sampled {x.shape[1]} inputs, schema has {schema.n_inputs}")
    return x


def build_surrogate(
    schema: FeatureSchema, config: TrainConfig, device: torch.device
) -> tuple[Surrogate, np.ndarray]:
    """Return a surrogate of `config`'s architecture and the inputs its normalisation saw."""
    rng = np.random.default_rng(7)
    gen = torch.Generator().manual_seed(7)
    net = EnsembleMLP(schema.n_inputs, schema.n_outputs, config.hidden, config.members, gen)
    with torch.no_grad():
        for b in net.bias:
            b.uniform_(-0.1, 0.1, generator=gen)
    x = sample_inputs(schema, 8192, rng)
    n = len(x)
    good, scrap = rng.normal(400, 60, (n, 1)), rng.random((n, 1)) * 20.0  # parts/h
    energy = rng.normal(90, 10, (n, 1))  # kWh/h
    y = np.concatenate([good, scrap, energy, rng.random((n, schema.n_outputs - 3))], axis=1)
    net.set_normalisation(x, y)
    ref = x[: min(OOD_REFERENCE, len(x))]
    model = Surrogate(schema, net, np.ones(schema.n_outputs), ref, np.inf, device=device)
    calib = sample_inputs(schema, 512, rng)
    threshold = float(
        np.quantile(
            model.ood_score(calib[:, : schema.n_state], calib[:, schema.n_state :]), OOD_QUANTILE
        )
    )
    model = Surrogate(schema, net, np.ones(schema.n_outputs), ref, threshold, device=device)
    return model, x


# -- the reference -----------------------------------------------------------------------------
class NumpyReference:
    """A plain numpy forward of the ensemble's weights, written without `models.network`.

    Normalise the raw inputs, then per layer one stacked matmul `(E, batch, d) @ (E, d, d')` plus
    bias, ReLU on hidden layers, then denormalise: members' raw outputs `(E, batch, n_out)`.
    """

    def __init__(self, net: EnsembleMLP) -> None:
        def arr(t: torch.Tensor) -> np.ndarray:
            return t.detach().cpu().double().numpy().copy()

        self.w = [arr(w) for w in net.weight]
        self.b = [arr(b) for b in net.bias]  # (E, 1, d')
        self.x_mean, self.x_std = arr(net.x_mean), arr(net.x_std)
        self.y_mean, self.y_std = arr(net.y_mean), arr(net.y_std)

    def forward(self, state: np.ndarray, setpoints: np.ndarray) -> np.ndarray:
        h = (np.concatenate([state, setpoints], axis=1) - self.x_mean) / self.x_std
        for w, b in zip(self.w[:-1], self.b[:-1], strict=True):
            h = np.maximum(h @ w + b, 0.0)
        return (h @ self.w[-1] + self.b[-1]) * self.y_std + self.y_mean

    def predict(self, state: np.ndarray, setpoints: np.ndarray) -> tuple[np.ndarray, ...]:
        m = self.forward(state, setpoints)
        return m.mean(axis=0), m.std(axis=0), m


# -- timing ------------------------------------------------------------------------------------
def interleaved(
    fns: dict[str, Callable[[], object]], blocks: int, per_block: int, warmup: int
) -> dict[str, list[float]]:
    """Seconds per call of each function, one figure per block of `per_block` calls.

    Blocks of the variants alternate (forward, then reversed order), so drift in the machine's
    load touches all of them alike.
    """
    for f in fns.values():
        for _ in range(warmup):
            f()
    names = list(fns)
    out: dict[str, list[float]] = {k: [] for k in names}
    for i in range(blocks):
        for k in names if i % 2 == 0 else names[::-1]:
            f = fns[k]
            t = time.perf_counter()
            for _ in range(per_block):
                f()
            out[k].append((time.perf_counter() - t) / per_block)
    return out


def med(xs: list[float]) -> float:
    return statistics.median(xs)


def us(xs: list[float]) -> float:
    return round(med(xs) * 1e6, 3)


def paired_ratio(a: list[float], b: list[float]) -> float:
    """Median over blocks of a / b, each pair measured back to back."""
    return statistics.median(x / y for x, y in zip(a, b, strict=True))


def sync(device: torch.device) -> Callable[[], None]:
    if device.type == "cuda":
        return torch.cuda.synchronize
    return lambda: None


# -- the benchmark -----------------------------------------------------------------------------
def check_agreement(
    model: Surrogate, ref: NumpyReference, x: np.ndarray, n_state: int
) -> dict[str, float]:
    """Largest difference of either predict path from the reference, in output std units."""
    scale = ref.y_std + 1e-12
    small, big = x[:NUMPY_MAX_BATCH], x[:4096]
    out = {}
    for name, rows in (("numpy_path", small), ("torch_path", big)):
        if name == "numpy_path" and model.device.type != "cpu":
            continue
        got = model.predict(rows[:, :n_state], rows[:, n_state:]).members
        want = ref.forward(rows[:, :n_state], rows[:, n_state:])
        out[f"max_diff_{name}_in_output_std"] = float(np.max(np.abs(got - want) / scale))
    return out


def bench_batch1(
    model: Surrogate, ref: NumpyReference, x: np.ndarray, n_state: int, blocks: int
) -> dict[str, object]:
    st, sp = x[:1, :n_state].copy(), x[:1, n_state:].copy()
    xr = x[:1].copy()
    layers = model.weights()
    dev = model.device
    wait = sync(dev)
    xt = torch.as_tensor(xr, dtype=torch.float32, device=dev)

    def torch_eager() -> None:
        with torch.inference_mode():
            model.net(xt)
        wait()

    fns: dict[str, Callable[[], object]] = {
        "predict": lambda: model.predict(st, sp),
        "reference_forward": lambda: ref.forward(st, sp),
        "reference_forward_mean_std": lambda: ref.predict(st, sp),
        "models_numpy_forward": lambda: numpy_forward(layers, xr),
        "torch_eager": torch_eager,
    }
    per_block = 10
    t = interleaved(fns, blocks, per_block, warmup=200)
    return {
        "calls_per_variant": blocks * per_block,
        "predict_us": us(t["predict"]),
        "reference_forward_us": us(t["reference_forward"]),
        "reference_forward_mean_std_us": us(t["reference_forward_mean_std"]),
        "models_numpy_forward_us": us(t["models_numpy_forward"]),
        "torch_eager_forward_us": us(t["torch_eager"]),
        "ratio_predict_vs_reference": med(t["predict"]) / med(t["reference_forward"]),
        "ratio_predict_vs_reference_paired": paired_ratio(t["predict"], t["reference_forward"]),
        "ratio_predict_vs_reference_mean_std": med(t["predict"])
        / med(t["reference_forward_mean_std"]),
        "ratio_torch_eager_vs_reference": med(t["torch_eager"]) / med(t["reference_forward"]),
        "target_ratio": TARGET_RATIO,
        "meets_target": med(t["predict"]) / med(t["reference_forward"]) <= TARGET_RATIO,
    }


def matmul_rate(device: torch.device, m: int, k: int, n: int, reps: int) -> Callable[[], float]:
    """Return a function that times `reps` float32 `(m, k) @ (k, n)` products: GFLOP/s."""
    gen = torch.Generator().manual_seed(1)
    a = torch.rand(m, k, generator=gen).to(device)
    b = torch.rand(k, n, generator=gen).to(device)
    wait = sync(device)

    def run() -> float:
        wait()
        t = time.perf_counter()
        for _ in range(reps):
            torch.matmul(a, b)
        wait()
        return 2.0 * m * k * n * reps / (time.perf_counter() - t) / 1e9

    return run


def bench_large(
    model: Surrogate, x_pool: np.ndarray, n_state: int, flops: float, rounds: int
) -> dict[str, object]:
    rng = np.random.default_rng(3)
    x = x_pool[rng.integers(0, len(x_pool), LARGE_BATCH)]
    st, sp = x[:, :n_state].copy(), x[:, n_state:].copy()
    dev = model.device
    wait = sync(dev)
    xt = torch.as_tensor(x, dtype=torch.float32, device=dev)
    h = model.net.hidden[0]
    rows = model.net.members * CHUNK
    layer_mm = matmul_rate(dev, rows, h, h, reps=3)
    square = 4096 if dev.type == "cuda" else 1024
    square_mm = matmul_rate(dev, square, square, square, reps=10 if dev.type == "cuda" else 3)

    def predict_batched() -> float:
        t = time.perf_counter()
        model.predict_batched(st, sp, chunk=CHUNK)
        return time.perf_counter() - t

    def torch_forward() -> float:
        wait()
        t = time.perf_counter()
        with torch.inference_mode():
            for i in range(0, LARGE_BATCH, CHUNK):
                model.net(xt[i : i + CHUNK])
        wait()
        return time.perf_counter() - t

    runs: dict[str, Callable[[], float]] = {
        "predict_batched_s": predict_batched,
        "torch_forward_s": torch_forward,
        "layer_matmul_gflops": layer_mm,
        "square_matmul_gflops": square_mm,
    }
    for f in runs.values():  # warm-up
        f()
    got: dict[str, list[float]] = {k: [] for k in runs}
    for i in range(rounds):
        for k in list(runs) if i % 2 == 0 else list(runs)[::-1]:
            got[k].append(runs[k]())
    pb, tf = med(got["predict_batched_s"]), med(got["torch_forward_s"])
    layer, sq = med(got["layer_matmul_gflops"]), med(got["square_matmul_gflops"])
    achieved = flops * LARGE_BATCH / pb / 1e9
    return {
        "samples": LARGE_BATCH,
        "chunk": CHUNK,
        "rounds": rounds,
        "predict_batched_s": pb,
        "predict_batched_samples_per_s": LARGE_BATCH / pb,
        "predict_batched_gflops": achieved,
        "torch_forward_samples_per_s": LARGE_BATCH / tf,
        "torch_forward_gflops": flops * LARGE_BATCH / tf / 1e9,
        "layer_matmul_shape": [rows, h, h],
        "layer_matmul_gflops": layer,
        "square_matmul_shape": [square, square, square],
        "square_matmul_gflops": sq,
        "predict_batched_share_of_layer_matmul": achieved / layer,
        "torch_forward_share_of_layer_matmul": flops * LARGE_BATCH / tf / 1e9 / layer,
    }


def bench_optimizer_calls(
    model: Surrogate, x: np.ndarray, n_state: int, blocks: int
) -> dict[str, object]:
    eco = bundled_spec(LINE).economics
    w = np.zeros(model.schema.n_outputs)  # the profit rate: linear in good, scrap and energy
    w[:3] = (eco.price_per_good_part, -eco.cost_per_scrap_part, -eco.energy_price_per_kwh)
    fns: dict[str, Callable[[], object]] = {}
    for b in (1, 256):
        st, sp = x[:b, :n_state].copy(), x[:b, n_state:].copy()
        if b > 1:  # batch 1 is timed on its own in bench_batch1
            fns[f"predict_b{b}"] = functools.partial(model.predict, st, sp)
        fns[f"ood_score_b{b}"] = functools.partial(model.ood_score, st, sp)
        fns[f"gradient_b{b}"] = functools.partial(model.gradient, st, sp, w)
    per_block = 5
    t = interleaved(fns, blocks, per_block, warmup=20)
    out: dict[str, object] = {
        "calls_per_variant": blocks * per_block,
        "ood_reference_rows": len(model.ood_reference),
    }
    out |= {f"{k}_us": us(v) for k, v in t.items()}
    return out


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and print its JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cpu", "cuda", "auto"), default="cpu")
    parser.add_argument("--quick", action="store_true", help="a smoke run of a few seconds")
    args = parser.parse_args(argv)
    try:
        device = resolve_torch_device(args.device)
    except ModelDeviceError as exc:
        print(f"bench/surrogate.py: {exc}", file=sys.stderr)
        sys.exit(2)
    blocks1, blocks_opt, rounds = (20, 6, 2) if args.quick else (200, 40, 9)

    schema = FeatureSchema.from_spec(bundled_spec(LINE))
    config = TrainConfig()
    model, x = build_surrogate(schema, config, device)
    ref = NumpyReference(model.net)
    n_state = schema.n_state
    dims = (schema.n_inputs, *config.hidden, schema.n_outputs)
    flops = 2.0 * config.members * sum(a * b for a, b in itertools.pairwise(dims))

    check = check_agreement(model, ref, x, n_state)
    batch1 = bench_batch1(model, ref, x, n_state, blocks1)
    opt = bench_optimizer_calls(model, x, n_state, blocks_opt)
    large = bench_large(model, x, n_state, flops, rounds)

    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    out = {
        "bench": "surrogate",
        "command": "python bench/surrogate.py"
        + (f" --device {args.device}" if args.device != "cpu" else "")
        + (" --quick" if args.quick else ""),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(),
            "cpu_count": os.cpu_count(),
            "gpu": gpu,
        },
        "versions": {
            "torch": torch.__version__,
            "numpy": np.__version__,
            "cuda": torch.version.cuda,
        },
        "threads": {
            "torch": torch.get_num_threads(),
            "torch_interop": torch.get_num_interop_threads(),
        },
        "device": str(device),
        "model": {
            "line": LINE,
            "n_inputs": schema.n_inputs,
            "n_outputs": schema.n_outputs,
            "hidden": list(config.hidden),
            "members": config.members,
            "parameters": sum(p.numel() for p in model.net.parameters()),
            "flops_per_sample": flops,
            "numpy_max_batch": NUMPY_MAX_BATCH,
        },
        "agreement": check,
        "batch1": batch1,
        "large_batch": large,
        "optimizer_calls": opt,
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
