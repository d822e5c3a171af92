"""Shared fixtures of the surrogate tests: a small three-station line and one tiny trained model.

The line has one of everything the feature schema knows: a deterministic feeder, an unreliable
thermal station with scrap and wear, and a plain last station. Training is kept tiny (about
2000 samples, 16x16 hidden units, 80 epochs) so the whole set runs in seconds on two cores.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from linetwin.models.dataset import Dataset, generate
from linetwin.models.device import torch_threads
from linetwin.models.pipeline import TrainSettings, train_surrogate
from linetwin.models.surrogate import Surrogate
from linetwin.models.train import TrainConfig
from linetwin.twin.spec import LineSpec, parse_spec

THREE_STATION = {
    "name": "three-station",
    "stations": [
        {
            "name": "load",
            "cycle_time_s": 20.0,
            "processing": "deterministic",
            "buffer_after": 4,
        },
        {
            "name": "oven",
            "cycle_time_s": 22.0,
            "buffer_after": 3,
            "mtbf_s": 3600.0,
            "mttr_s": 300.0,
            "thermal": {"ideal_min_c": 150.0, "ideal_max_c": 170.0, "time_constant_s": 300.0},
            "scrap": {"base": 0.01, "speed_gain": 0.2, "temperature_gain": 0.0005},
            "wear": {"speed_exponent": 2.0, "failure_gain": 0.1},
        },
        {"name": "pack", "cycle_time_s": 18.0},
    ],
}

TINY = TrainSettings(
    samples=2000,
    replicates=4,
    eval_states=40,
    config=TrainConfig(hidden=(16, 16), max_epochs=80, batch_size=256),
)


@pytest.fixture(scope="session")
def line3() -> LineSpec:
    """The three-station line (thermal, unreliable, scrap, wear on the middle station)."""
    return parse_spec(THREE_STATION, "<three-station>")


@pytest.fixture(scope="session")
def trained(line3: LineSpec) -> tuple[Surrogate, dict[str, Any]]:
    """One tiny surrogate of the three-station line and its training report, for all tests.

    Tests must not modify it (no `.to()` of its network, no writes to its arrays). It trains
    on one thread: with a 16x16 network, two OpenMP threads gain nothing, and on a busy
    two-core machine they wait on each other and make training ten times slower.
    """
    with torch_threads(1):
        return train_surrogate(line3, TINY, "cpu")


@pytest.fixture(scope="session")
def model(trained: tuple[Surrogate, dict[str, Any]]) -> Surrogate:
    """The shared tiny surrogate."""
    return trained[0]


@pytest.fixture(scope="session")
def fresh(line3: LineSpec) -> Dataset:
    """Held-out data from other states (another seed), 16 replicates per sample."""
    data = generate(line3, n_states=40, candidates=4, replicates=16, seed=424_242)
    assert np.isfinite(data.targets).all()
    return data
