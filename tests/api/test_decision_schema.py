"""`DecisionOut` documents the decision codec's output: every payload `encode` writes validates
against it, field for field, and nothing in it is left undocumented."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from linetwin.api.schemas import DecisionOut
from linetwin.optimizer.decision import FIELDS, Decision, Mode, encode
from linetwin.twin import bundled_spec
from linetwin.twin.params import compile_params

SPEC = bundled_spec("two-station")
PRESENT = compile_params(SPEC).present
finite = st.floats(-1e9, 1e9, allow_nan=False)
number = st.one_of(finite, st.just(math.nan), st.just(-math.inf))


def arrays() -> st.SearchStrategy[np.ndarray]:
    values = st.lists(finite, min_size=PRESENT.size, max_size=PRESENT.size)
    return values.map(lambda v: np.where(PRESENT, np.reshape(v, PRESENT.shape), 0.0))


decisions = st.builds(
    Decision,
    id=st.text(min_size=1, max_size=12),
    version=st.integers(0, 2**63 - 1),
    line_time_s=finite,
    created_at=finite,
    mode=st.sampled_from(Mode),
    setpoints=arrays(),
    target=st.one_of(st.none(), arrays()),
    predicted=st.dictionaries(st.text(max_size=8), st.tuples(number, number), max_size=4),
    status=st.text(max_size=8),
    gap=st.one_of(st.none(), number),
    solve_seconds=number,
    reasons=st.lists(st.text(max_size=8), max_size=3).map(tuple),
    fallback=st.booleans(),
    applied=st.booleans(),
    timings=st.dictionaries(st.text(max_size=8), number, max_size=3),
)


def test_the_schema_has_exactly_the_codec_fields() -> None:
    assert set(DecisionOut.model_fields) == set(FIELDS)


@settings(max_examples=100, deadline=None)
@given(decisions)
def test_every_encoded_decision_validates_against_decision_out(d: Decision) -> None:
    wire = encode(d, SPEC)
    out = DecisionOut.model_validate(wire)
    assert out.model_dump(mode="json") == wire
