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
from linetwin.twin import layout as L
from linetwin.twin.params import compile_params, nominal_setpoints
from linetwin.twin.snapshot import Snapshot
from linetwin.twin.spec import LineSpec

Progress = Callable[[float], None]

FORMAT_VERSION = 1
MAX_BATCH_SCENARIOS = 65_536
OPERATING_SHARE = 0.5
"""Share of training states and global candidates drawn where a profitable line runs."""
LOCAL_WIDTH = 0.15
"""Local moves: uniform within this share of each setpoint's range around a point."""


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


def operating_setpoints(
    spec: LineSpec, schema: FeatureSchema, n: int, rng: np.random.Generator
) -> np.ndarray:
    """Draw `n` setpoint vectors `(n, n_setpoints)` from the region a profitable line runs in.

    A Latin hypercube over the whole box puts almost no samples where a line is run: near its
    nominal setpoints (where it starts, and where an operator leaves it), at the limits of the
    speeds (a profit rate that rises with speed pushes speeds to their maximum) and inside the
    thermal stations' ideal windows (outside them scrap rises with the squared distance). Half
    the rows here are the nominal setpoints moved by up to `LOCAL_WIDTH` of each range; in the
    other half each row draws a share q uniform on (0, 1), and each of its speeds sits at its
    maximum with probability q, at its minimum with probability (1 - q) / 4, and is uniform
    on its range otherwise (so rows near the all-maximum corner, where a profit rate that
    rises with speed leads, are common), while each temperature is uniform on its ideal window
    widened by half the window's width on both sides. Everything is clipped to the limits.
    """
    lo, hi = schema.lower, schema.upper
    u = latin_hypercube(rng, n, schema.n_setpoints)
    at_max = rng.random(n)[:, None]  # per row: the chance that a speed sits at its maximum
    pick = rng.random(u.shape)
    u = np.where(pick < at_max, 1.0, np.where(pick < at_max + (1.0 - at_max) * 0.25, 0.0, u))
    out = lo + u * (hi - lo)
    for j, (station, kind) in enumerate(schema.setpoint_slots):
        thermal = spec.stations[station].thermal
        if kind != L.S_TEMP or thermal is None:
            continue
        half = 0.5 * (thermal.ideal_max_c - thermal.ideal_min_c)
        a = max(thermal.ideal_min_c - half, lo[j])
        b = max(min(thermal.ideal_max_c + half, hi[j]), a)
        out[:, j] = a + latin_hypercube(rng, n, 1)[:, 0] * (b - a)
    near = rng.random(n) < 0.5
    nominal = schema.setpoint_features(nominal_setpoints(compile_params(spec), 1))
    move = rng.uniform(-1.0, 1.0, (int(near.sum()), schema.n_setpoints)) * LOCAL_WIDTH
    out[near] = np.clip(nominal + move * (hi - lo), lo, hi)
    return out


def mixed_setpoints(
    spec: LineSpec,
    schema: FeatureSchema,
    n: int,
    rng: np.random.Generator,
    operating_share: float,
) -> np.ndarray:
    """Draw `n` setpoint vectors: `operating_share` of them from `operating_setpoints`, the
    rest from a Latin hypercube over the whole box, in random order `(n, n_setpoints)`."""
    lo, hi = schema.lower, schema.upper
    n_op = round(n * operating_share)
    box = lo + latin_hypercube(rng, n - n_op, schema.n_setpoints) * (hi - lo)
    both = np.concatenate([operating_setpoints(spec, schema, n_op, rng), box])
    return both[rng.permutation(n)]


def sample_states(
    spec: LineSpec,
    schema: FeatureSchema,
    n_states: int,
    rng: np.random.Generator,
    warmup_s: float = 7200.0,
    recent_s: float = 600.0,
    operating_share: float = 0.0,
) -> tuple[Snapshot, np.ndarray]:
    """Run the line under setpoints that change every 20 minutes; return the final snapshot.

    The setpoints are space-filling over the whole box, so the states cover what the line can
    reach, except that `operating_share` of the scenarios draw theirs from the region a
    profitable line runs in (`operating_setpoints`), so that states like those of a line under
    an optimizer are not rare. The returned snapshot holds each scenario's last setpoints (its
    "current" ones) and the second array its recent good throughput `(n_states,)` over the
    last `recent_s`.
    """
    twin = Twin(spec, n_states, rng=rng)
    lo, hi = schema.lower, schema.upper
    n_changes = max(int(warmup_s // 1200.0), 1)
    seg = (warmup_s - recent_s) / n_changes
    operating = rng.random(n_states) < operating_share
    for _ in range(n_changes):
        sp = lo + latin_hypercube(rng, n_states, schema.n_setpoints) * (hi - lo)
        if operating.any():
            sp[operating] = operating_setpoints(spec, schema, int(operating.sum()), rng)
        twin.set_setpoints(schema.setpoint_array(sp, twin.setpoints))
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
    spec: LineSpec | None = None,
    operating_share: float = 0.0,
) -> np.ndarray:
    """Return `m` candidates per state `(n_states, m, n_setpoints)`.

    A share are local moves around the current setpoints (what a controller tries next), the
    rest global draws: a Latin hypercube over the whole box, except that (with `spec`)
    `operating_share` of the global draws come from `operating_setpoints`.
    """
    lo, hi = schema.lower, schema.upper
    n = current.shape[0]
    n_local = round(m * local_share)
    n_glob = n * (m - n_local)
    if spec is not None and operating_share > 0:
        glob = mixed_setpoints(spec, schema, n_glob, rng, operating_share)
    else:
        glob = lo + latin_hypercube(rng, n_glob, schema.n_setpoints) * (hi - lo)
    glob = glob.reshape(n, m - n_local, -1)
    width = LOCAL_WIDTH * (hi - lo)
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
    operating_share: float = OPERATING_SHARE,
    progress: Progress | None = None,
) -> Dataset:
    """Generate `n_states * candidates` samples, each averaged over `replicates` runs.

    `operating_share` of the states, and of the global candidates, are drawn from the region
    a profitable line runs in (`operating_setpoints`); 0 gives the whole box only.
    """
    if min(n_states, candidates, replicates) < 1:
        raise DatasetError(
            "n_states, candidates and replicates must all be at least 1 "
            f"(got {n_states}, {candidates}, {replicates})"
        )
    rng = np.random.default_rng(seed)
    schema = FeatureSchema.from_spec(spec, horizon_s)
    if not 0.0 <= operating_share <= 1.0:
        raise DatasetError(f"operating_share must be in [0, 1], got {operating_share}")
    snap, recent = sample_states(spec, schema, n_states, rng, operating_share=operating_share)
    state_x = schema.state_features(snap, recent)
    current = schema.setpoint_features(snap.setpoints)
    cand = candidate_setpoints(
        schema, current, candidates, rng, spec=spec, operating_share=operating_share
    )
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
