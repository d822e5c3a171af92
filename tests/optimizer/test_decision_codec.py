"""The decision's one wire codec: encode -> decode -> encode is the identity on the wire,
bad payloads are refused naming the field, and decoding needs neither torch nor numba."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from linetwin.optimizer.decision import FIELDS, Decision, Mode, decode, encode, validate
from linetwin.optimizer.errors import DecisionCodecError
from linetwin.twin import bundled_spec
from linetwin.twin.params import compile_params

SPEC = bundled_spec("example")
PRESENT = compile_params(SPEC).present

finite = st.floats(-1e6, 1e6, allow_nan=False)
maybe = st.one_of(finite, st.just(math.nan), st.just(math.inf))
name = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=8)


@st.composite
def setpoint_arrays(draw: st.DrawFn) -> np.ndarray:
    values = draw(st.lists(finite, min_size=PRESENT.size, max_size=PRESENT.size))
    return np.where(PRESENT, np.array(values).reshape(PRESENT.shape), 0.0)


@st.composite
def decisions(draw: st.DrawFn) -> Decision:
    return Decision(
        id=draw(name),
        version=draw(st.integers(0, 2**53)),
        line_time_s=draw(finite),
        created_at=draw(finite),
        mode=draw(st.sampled_from(Mode)),
        setpoints=draw(setpoint_arrays()),
        target=draw(st.one_of(st.none(), setpoint_arrays())),
        predicted=draw(st.dictionaries(name, st.tuples(maybe, maybe), max_size=5)),
        status=draw(st.text(max_size=10)),
        gap=draw(st.one_of(st.none(), maybe)),
        solve_seconds=draw(maybe),
        reasons=tuple(draw(st.lists(name, max_size=4))),
        fallback=draw(st.booleans()),
        applied=draw(st.booleans()),
        timings=draw(st.dictionaries(name, maybe, max_size=4)),
    )


@settings(max_examples=150, deadline=None)
@given(decisions())
def test_encode_decode_encode_is_the_identity_on_the_wire(d: Decision) -> None:
    wire = encode(d, SPEC)
    assert list(wire) == list(FIELDS)
    text = json.dumps(wire, allow_nan=False)  # strict JSON: nothing NaN left
    back = decode(json.loads(text), SPEC)
    assert encode(back, SPEC) == wire
    np.testing.assert_array_equal(back.setpoints, d.setpoints)
    assert (back.target is None) == (d.target is None)
    assert (back.id, back.version, back.mode, back.reasons) == (d.id, d.version, d.mode, d.reasons)
    for k, (m, s) in d.predicted.items():  # non-finite numbers come back as NaN
        bm, bs = back.predicted[k]
        assert bm == m or (math.isnan(bm) and not math.isfinite(m))
        assert bs == s or (math.isnan(bs) and not math.isfinite(s))


def good() -> Decision:
    sp = np.where(PRESENT, 1.0, 0.0)
    sp[:, 1] = np.where(PRESENT[:, 1], 180.0, 0.0)
    return Decision("d1", 3, 60.0, 1e9, Mode.CLOSED, sp, None, {}, "ok", None, 0.0, (), False, True)


def test_spec_free_validation_is_what_a_poller_checks() -> None:
    wire = encode(good(), SPEC)
    data = validate(wire)
    assert data["setpoints"] == wire["setpoints"] and data["timings"] == {}
    assert validate({**wire, "future_field": 1})["version"] == 3  # newer servers may add keys
    del wire["timings"]
    assert validate(wire)["timings"] == {}


@pytest.mark.parametrize(
    ("patch", "where"),
    [
        ({"version": "3"}, "decision.version"),
        ({"version": True}, "decision.version"),
        ({"mode": "auto"}, "decision.mode"),
        ({"applied": 1}, "decision.applied"),
        ({"setpoints": {}}, "decision.setpoints"),
        ({"setpoints": {"press": {"speed": None}}}, "decision.setpoints.press.speed"),
        ({"setpoints": {"press": {"speed": "fast"}}}, "decision.setpoints.press.speed"),
        ({"predicted": {"x": {"mean": "1"}}}, "decision.predicted.x.mean"),
        ({"line_time_s": None}, "decision.line_time_s"),
        ({"reasons": "ok"}, "decision.reasons"),
        ({"id": ""}, "decision.id"),
    ],
)
def test_malformed_payloads_name_the_field(patch: dict[str, Any], where: str) -> None:
    with pytest.raises(DecisionCodecError, match=f"^{where}"):
        validate({**encode(good(), SPEC), **patch})


def test_decode_checks_the_line() -> None:
    wire = encode(good(), SPEC)
    unknown = {**wire, "setpoints": {**wire["setpoints"], "nope": {"speed": 1.0}}}
    with pytest.raises(DecisionCodecError, match="nope: unknown station"):
        decode(unknown, SPEC)
    missing = {**wire, "setpoints": {k: v for k, v in wire["setpoints"].items() if k != "cure"}}
    with pytest.raises(DecisionCodecError, match=r"setpoints\.cure: expected the setpoints"):
        decode(missing, SPEC)
    extra = {**wire, "target": {**wire["setpoints"], "press": {"speed": 1, "temperature": 9}}}
    with pytest.raises(DecisionCodecError, match=r"target\.press"):
        decode(extra, SPEC)
    with pytest.raises(DecisionCodecError, match="decision: expected an object"):
        decode([], SPEC)


def test_encode_refuses_setpoints_that_are_not_finite() -> None:
    d = good()
    bad = d.setpoints.copy()
    bad[0, 0] = math.nan
    with pytest.raises(DecisionCodecError, match=r"decision\.setpoints\.\w+\.speed: must be"):
        encode(Decision(**{**d.__dict__, "setpoints": bad}), SPEC)
    with pytest.raises(DecisionCodecError, match="expected shape"):
        encode(Decision(**{**d.__dict__, "target": bad[:2]}), SPEC)


def test_the_codec_imports_neither_torch_nor_numba() -> None:
    code = (
        "import sys, linetwin.optimizer.decision, linetwin.api.client; "
        "heavy = [m for m in ('torch', 'numba') if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
