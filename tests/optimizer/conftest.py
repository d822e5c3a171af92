"""Shared fixtures of the optimizer tests: lines, small surrogates and one trained model.

- `example`: the bundled ten-station line (two thermal stations, no grids).
- `two`: the bundled two-station line (two speed setpoints, nothing else): small enough for a
  brute-force search over a fine grid of its setpoints.
- `gridded`: a three-station line whose setpoints sit on grids (one with a maximum that is not
  on its grid, one without resolution); `two_gridded`: the two-station line with grids.
- `trained`: one surrogate of the example line trained once per session on a 4-hour horizon,
  the horizon the product uses; small (6000 samples, 2x32 units, 4 members) but good enough
  to steer the twin (about 5 s on two idle cores).

Every module here runs torch on one thread: the optimizer's batches are tiny, and two torch
threads on a busy two-core machine spend their time waiting for each other (a `solve_fast` call
measured 0.04 s on one thread and 4.5 s on two while other processes ran).

Helpers that are not fixtures live in `opthelpers.py`.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from opthelpers import GRIDDED, TRAINED, TWO_GRIDDED

from linetwin.models.pipeline import train_surrogate
from linetwin.models.surrogate import Surrogate
from linetwin.twin import bundled_spec
from linetwin.twin.spec import LineSpec, parse_spec


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread() -> Iterator[None]:
    """Run each module's tests on one torch thread; restore the count afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def example() -> LineSpec:
    return bundled_spec("example")


@pytest.fixture(scope="session")
def two() -> LineSpec:
    return bundled_spec("two-station")


@pytest.fixture(scope="session")
def gridded() -> LineSpec:
    return parse_spec(GRIDDED, "<gridded>")


@pytest.fixture(scope="session")
def two_gridded() -> LineSpec:
    return parse_spec(TWO_GRIDDED, "<two-gridded>")


@pytest.fixture(scope="session")
def trained(example: LineSpec) -> Surrogate:
    """A small surrogate of the example line trained on the twin (about 5 s on two cores).

    Tests must not modify it (no writes to its arrays, no `.to()` of its network).
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # session fixtures start before the module's autouse one
    try:
        model, _report = train_surrogate(example, TRAINED, "cpu")
    finally:
        torch.set_num_threads(before)
    return model
