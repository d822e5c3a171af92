"""Generate, store and load surrogate training data made with the batched twin."""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from linetwin.models.errors import DatasetError, ModelError
from linetwin.models.features import FeatureSchema
from linetwin.twin import Twin, window_kpis
from linetwin.twin.snapshot import Snapshot
from linetwin.twin.spec import LineSpec

Progress = Callable[[float], None]

FORMAT_VERSION = 1
MAX_BATCH_SCENARIOS = 65_536


@dataclass(frozen=True)
class Dataset:
    """Samples of (state, setpoints) with the twin's KPIs over the next horizon.

    state `(n, n_state)`, setpoints `(n, n_setpoints)`, targets `(n, n_outputs)` the mean over
    `replicates` runs with independent random numbers, single `(n, n_outputs)` the KPIs of the
    first replicate alone (what one noisy run would have said).
    """

    schema: FeatureSchema
    state: np.ndarray
    setpoints: np.ndarray
    targets: np.ndarray
    single: np.ndarray
    replicates: int
    seed: int

    def __len__(self) -> int:
        return int(self.state.shape[0])

    @property
    def inputs(self) -> np.ndarray:
        """State and setpoint features side by side `(n, n_inputs)`."""
        return np.concatenate([self.state, self.setpoints], axis=1)

    def subset(self, index: np.ndarray) -> Dataset:
        """Return the samples at `index`."""
        return Dataset(
            self.schema,
            self.state[index],
            self.setpoints[index],
            self.targets[index],
            self.single[index],
            self.replicates,
            self.seed,
        )

    def save(self, path: str | Path) -> None:
        """Write the dataset to exactly `path` (npz format) with its schema, atomically."""
        meta = {
            "format_version": FORMAT_VERSION,
            "schema": self.schema.to_json(),
            "replicates": self.replicates,
            "seed": self.seed,
        }
        p = Path(path)
        fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez_compressed(
                    f,
                    state=self.state,
                    setpoints=self.setpoints,
                    targets=self.targets,
                    single=self.single,
                    meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8),
                )
            os.replace(tmp, p)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    @classmethod
    def load(cls, path: str | Path, spec: LineSpec | None = None) -> Dataset:
        """Read a dataset; with `spec`, refuse one generated for another line."""
        p = Path(path)
        try:
            with open(p, "rb") as f, np.load(f, allow_pickle=False) as z:
                if not isinstance(z, np.lib.npyio.NpzFile):
                    raise DatasetError(f"{p}: not a linetwin dataset (not an npz archive)")
                arrays = {k: z[k] for k in ("state", "setpoints", "targets", "single", "meta")}
            meta = json.loads(arrays.pop("meta").tobytes().decode())
            version = meta["format_version"]
            if version != FORMAT_VERSION:
                raise DatasetError(f"{p}: dataset format {version!r} is not {FORMAT_VERSION}")
            schema = FeatureSchema.from_json(meta["schema"])
            replicates, seed = int(meta["replicates"]), int(meta["seed"])
        except FileNotFoundError:
            raise DatasetError(f"{p}: no such dataset file") from None
        except DatasetError:
            raise
        except (
            OSError,
            ValueError,
            KeyError,
            TypeError,
            AttributeError,
            EOFError,
            zipfile.BadZipFile,
            UnicodeDecodeError,
            ModelError,
        ) as exc:
            raise DatasetError(f"{p}: not a readable linetwin dataset ({exc})") from None
        if spec is not None and schema.spec_hash != spec.spec_hash():
            raise DatasetError(
                f"{p}: dataset was generated for another line "
                f"(spec hash {schema.spec_hash[:12]}, this line {spec.spec_hash()[:12]})"
            )
        n = arrays["state"].shape[0] if arrays["state"].ndim == 2 else -1
        want = {
            "state": schema.n_state,
            "setpoints": schema.n_setpoints,
            "targets": schema.n_outputs,
            "single": schema.n_outputs,
        }
        for name, cols in want.items():
            a = arrays[name]
            if a.ndim != 2 or a.shape != (n, cols):
                raise DatasetError(
                    f"{p}: array {name!r} has shape {a.shape}, expected "
                    f"({n}, {cols}) for this schema"
                )
        return cls(schema, replicates=replicates, seed=seed, **arrays)


def outputs_of(schema: FeatureSchema, start: Snapshot, end: Snapshot) -> np.ndarray:
    """Return the KPI targets `(n_scenarios, n_outputs)` of the window from start to end."""
    k = window_kpis(start, end)
    line = np.stack([k.throughput_per_hour, k.scrap_per_hour, k.energy_kwh_per_hour], axis=1)
    return np.concatenate([line, k.utilisation], axis=1)


def recent_throughput(before: Snapshot, now: Snapshot) -> np.ndarray:
    """Good parts per hour between two snapshots `(n_scenarios,)`."""
    return (now.good_out - before.good_out) * 3600.0 / (now.time_s - before.time_s)


def latin_hypercube(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    """Return `n` points of a Latin hypercube in [0, 1)^d."""
    cells = np.stack([rng.permutation(n) for _ in range(d)], axis=1)
    return (cells + rng.random((n, d))) / n


def sample_states(
    spec: LineSpec,
    schema: FeatureSchema,
    n_states: int,
    rng: np.random.Generator,
    warmup_s: float = 7200.0,
    recent_s: float = 600.0,
) -> tuple[Snapshot, np.ndarray]:
    """Run the line under setpoints that change every 20 minutes; return the final snapshot.

    The setpoints are space-filling over the whole box, so the states cover what the line can
    reach; the returned snapshot holds each scenario's last setpoints (its "current" ones) and
    the second array its recent good throughput `(n_states,)` over the last `recent_s`.
    """
    twin = Twin(spec, n_states, rng=rng)
    lo, hi = schema.lower, schema.upper
    n_changes = max(int(warmup_s // 1200.0), 1)
    seg = (warmup_s - recent_s) / n_changes
    for _ in range(n_changes):
        u = latin_hypercube(rng, n_states, schema.n_setpoints)
        twin.set_setpoints(schema.setpoint_array(lo + u * (hi - lo), twin.setpoints))
        twin.advance(seg)
    # A warm-up of two hours leaves at most two hours of wear, while a line in operation wears
    # until the next repair: draw wear from its long-run range (about exponential, mean MTBF).
    wear = twin.snapshot().wear.copy()
    for i in schema.wear_stations:
        mean_h = (spec.stations[i].mtbf_s or 0.0) / 3600.0
        wear[:, i] = np.minimum(rng.exponential(mean_h, n_states), 3.0 * mean_h)
    twin.set_wear(wear)
    before = twin.snapshot()
    now = twin.step(recent_s)
    return now, recent_throughput(before, now)


def candidate_setpoints(
    schema: FeatureSchema,
    current: np.ndarray,
    m: int,
    rng: np.random.Generator,
    local_share: float = 0.5,
) -> np.ndarray:
    """Return `m` candidates per state `(n_states, m, n_setpoints)`.

    A share are local moves around the current setpoints (what a controller tries next), the
    rest a Latin hypercube over the whole box.
    """
    lo, hi = schema.lower, schema.upper
    n = current.shape[0]
    n_local = round(m * local_share)
    glob = lo + latin_hypercube(rng, n * (m - n_local), schema.n_setpoints) * (hi - lo)
    glob = glob.reshape(n, m - n_local, -1)
    width = 0.15 * (hi - lo)
    local = current[:, None, :] + rng.uniform(-1, 1, (n, n_local, schema.n_setpoints)) * width
    return np.concatenate([np.clip(local, lo, hi), glob], axis=1)


def evaluate(
    spec: LineSpec,
    schema: FeatureSchema,
    snap: Snapshot,
    source: np.ndarray,
    setpoints: np.ndarray,
    replicates: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Fork scenario `source[j]` of `snap` under setpoints `[j]` for `replicates` runs each.

    Returns (mean targets, first-replicate targets), each `(len(source), n_outputs)`.
    """
    n = len(source)
    rep_source = np.repeat(source, replicates)
    twin = Twin.fork(snap, n * replicates, scenario=rep_source, rng=rng)
    base = np.repeat(snap.setpoints[source], replicates, axis=0)
    twin.set_setpoints(schema.setpoint_array(np.repeat(setpoints, replicates, axis=0), base))
    start = twin.snapshot()
    end = twin.step(schema.horizon_s)
    out = outputs_of(schema, start, end).reshape(n, replicates, -1)
    return out.mean(axis=1), out[:, 0, :]


def generate(
    spec: LineSpec,
    *,
    n_states: int = 1000,
    candidates: int = 16,
    replicates: int = 8,
    horizon_s: float = 1800.0,
    seed: int = 0,
    progress: Progress | None = None,
) -> Dataset:
    """Generate `n_states * candidates` samples, each averaged over `replicates` runs."""
    if min(n_states, candidates, replicates) < 1:
        raise DatasetError(
            "n_states, candidates and replicates must all be at least 1 "
            f"(got {n_states}, {candidates}, {replicates})"
        )
    rng = np.random.default_rng(seed)
    schema = FeatureSchema.from_spec(spec, horizon_s)
    snap, recent = sample_states(spec, schema, n_states, rng)
    state_x = schema.state_features(snap, recent)
    current = schema.setpoint_features(snap.setpoints)
    cand = candidate_setpoints(schema, current, candidates, rng)
    source = np.repeat(np.arange(n_states), candidates)
    flat = cand.reshape(-1, schema.n_setpoints)
    per_batch = max(MAX_BATCH_SCENARIOS // replicates, 1)
    means, singles = [], []
    for lo in range(0, len(source), per_batch):
        hi = min(lo + per_batch, len(source))
        m, s = evaluate(spec, schema, snap, source[lo:hi], flat[lo:hi], replicates, rng)
        means.append(m)
        singles.append(s)
        if progress is not None:
            progress(hi / len(source))
    return Dataset(
        schema,
        state_x[source],
        flat,
        np.concatenate(means),
        np.concatenate(singles),
        replicates,
        seed,
    )
