"""The surrogate's feature schema: derived from the spec, round trips, snapshot features."""

from __future__ import annotations

import json
from typing import TypedDict

import numpy as np
import pytest

from linetwin.models.errors import ModelError
from linetwin.models.features import LINE_OUTPUTS, FeatureSchema
from linetwin.twin import SensorFault, Twin, bundled_spec
from linetwin.twin import layout as L
from linetwin.twin.spec import LineSpec


class Expected(TypedDict):
    stations: int
    thermal: list[str]
    wear: list[str]


# Counted by hand from the bundled TOML files: stations, thermal stations, and unreliable
# stations whose wear raises their failure rate (wear.failure_gain > 0).
BUNDLED: dict[str, Expected] = {
    "two-station": {"stations": 2, "thermal": [], "wear": []},
    "example": {
        "stations": 10,
        "thermal": ["dry", "cure"],
        "wear": ["press", "coat"],
    },
    "long": {
        "stations": 24,
        "thermal": ["reflow", "wave-solder", "coat-cure", "burn-in"],
        "wear": [
            "paste-print",
            "place-chips",
            "place-fine",
            "wave-solder",
            "depanel",
            "screw-drive",
            "ultrasonic-weld",
            "palletize",
        ],
    },
}


def expected_state_names(spec: LineSpec, thermal: list[str], wear: list[str]) -> list[str]:
    names = [s.name for s in spec.stations]
    out = [f"buffer.{n}" for n in names[:-1]]
    for flag in ("down", "blocked", "starved"):
        out += [f"{flag}.{n}" for n in names]
    out += [f"temperature.{n}" for n in thermal]
    out += [f"wear.{n}" for n in wear]
    return [*out, "recent_throughput_per_hour"]


@pytest.mark.parametrize("line", sorted(BUNDLED))
def test_schema_names_and_counts_follow_the_spec(line: str) -> None:
    spec = bundled_spec(line)
    exp = BUNDLED[line]
    n, n_th, n_wear = exp["stations"], len(exp["thermal"]), len(exp["wear"])
    schema = FeatureSchema.from_spec(spec)
    names = [s.name for s in spec.stations]
    assert len(names) == n

    assert list(schema.state_names) == expected_state_names(spec, exp["thermal"], exp["wear"])
    assert schema.n_state == (n - 1) + 3 * n + n_th + n_wear + 1
    assert list(schema.setpoint_names) == [f"{s}.speed" for s in names] + [
        f"{s}.temperature" for s in exp["thermal"]
    ]
    assert schema.n_setpoints == n + n_th
    assert list(schema.output_names) == [*LINE_OUTPUTS, *(f"utilisation.{s}" for s in names)]
    assert schema.n_outputs == 3 + n
    assert schema.n_inputs == schema.n_state + schema.n_setpoints
    assert [names[i] for i in schema.thermal_stations] == exp["thermal"]
    assert [names[i] for i in schema.wear_stations] == exp["wear"]
    assert list(schema.buffer_capacity) == [s.buffer_after for s in spec.stations[:-1]]
    assert schema.spec_hash == spec.spec_hash()


@pytest.mark.parametrize("line", sorted(BUNDLED))
def test_setpoint_limits_are_the_spec_limits(line: str) -> None:
    spec = bundled_spec(line)
    schema = FeatureSchema.from_spec(spec)
    lower, upper = [], []
    for st in spec.stations:
        lower.append(st.setpoints.speed.min)
        upper.append(st.setpoints.speed.max)
    for st in spec.stations:
        if st.is_thermal:
            assert st.setpoints.temperature is not None
            lower.append(st.setpoints.temperature.min)
            upper.append(st.setpoints.temperature.max)
    np.testing.assert_array_equal(schema.lower, lower)
    np.testing.assert_array_equal(schema.upper, upper)
    assert (schema.lower < schema.upper).all()


def test_limits_of_named_setpoints() -> None:
    """Spot checks against the TOML text, including a temperature range derived from the window."""
    ex = FeatureSchema.from_spec(bundled_spec("example"))
    limits = dict(zip(ex.setpoint_names, zip(ex.lower, ex.upper, strict=True), strict=True))
    assert limits["press.speed"] == (0.6, 1.4)
    assert limits["feed.speed"] == (0.5, 1.5)  # the default speed range
    assert limits["cure.temperature"] == (150.0, 230.0)
    long = FeatureSchema.from_spec(bundled_spec("long"))
    limits = dict(zip(long.setpoint_names, zip(long.lower, long.upper, strict=True), strict=True))
    # wave-solder has no temperature setpoint in the file: ideal window 255-265 widened by 20.
    assert limits["wave-solder.temperature"] == (235.0, 285.0)


@pytest.mark.parametrize("horizon", [0.0, -10.0, float("nan")])
def test_non_positive_horizon_is_refused(horizon: float) -> None:
    with pytest.raises(ModelError, match="horizon_s"):
        FeatureSchema.from_spec(bundled_spec("two-station"), horizon)


@pytest.mark.parametrize("line", ["example", "long"])
def test_setpoint_features_and_array_round_trip(line: str) -> None:
    spec = bundled_spec(line)
    schema = FeatureSchema.from_spec(spec)
    rng = np.random.default_rng(3)
    base = Twin(spec, 5, seed=0).setpoints
    # nominal setpoints read back as the spec's nominal values
    nominal = [s.setpoints.speed.nominal for s in spec.stations]
    nominal += [s.setpoints.temperature.nominal for s in spec.stations if s.setpoints.temperature]
    np.testing.assert_array_equal(schema.setpoint_features(base), np.tile(nominal, (5, 1)))

    feats = schema.lower + rng.random((5, schema.n_setpoints)) * (schema.upper - schema.lower)
    before = base.copy()
    arr = schema.setpoint_array(feats, base)
    np.testing.assert_array_equal(base, before)  # the base is not written to
    assert arr.shape == base.shape
    np.testing.assert_array_equal(schema.setpoint_features(arr), feats)
    # slots that are no setpoint feature keep the base's values
    touched = np.zeros(base.shape[1:], dtype=bool)
    for i, k in schema.setpoint_slots:
        touched[i, k] = True
    np.testing.assert_array_equal(arr[:, ~touched], base[:, ~touched])
    # and the twin accepts the written array
    twin = Twin(spec, 5, seed=1)
    twin.set_setpoints(arr)
    np.testing.assert_array_equal(schema.setpoint_features(twin.setpoints), feats)


def test_state_features_describe_the_snapshot(line3: LineSpec) -> None:
    schema = FeatureSchema.from_spec(line3)
    twin = Twin(line3, 64, seed=5)
    snap = twin.step(5400.0)
    recent = np.linspace(100.0, 200.0, 64)
    x = schema.state_features(snap, recent)
    assert x.shape == (64, schema.n_state)
    col = {n: x[:, j] for j, n in enumerate(schema.state_names)}
    np.testing.assert_allclose(col["buffer.load"], snap.buffer_level[:, 0] / 4)
    np.testing.assert_allclose(col["buffer.oven"], snap.buffer_level[:, 1] / 3)
    for j, name in enumerate(schema.station_names):
        for flag, code in (("down", L.DOWN), ("blocked", L.BLOCKED), ("starved", L.STARVED)):
            np.testing.assert_array_equal(col[f"{flag}.{name}"], snap.status[:, j] == code)
    np.testing.assert_array_equal(col["temperature.oven"], snap.readings.temperature_c[:, 1])
    np.testing.assert_array_equal(col["wear.oven"], snap.wear[:, 1])
    np.testing.assert_array_equal(col["recent_throughput_per_hour"], recent)
    # a scalar recent throughput broadcasts over the scenarios
    x1 = schema.state_features(snap, np.asarray(150.0))
    np.testing.assert_array_equal(x1[:, -1], 150.0)
    # after 1.5 h some scenario has a busy and some a non-empty buffer: the features vary
    assert x[:, : len(schema.buffer_capacity)].max() > 0
    assert np.isfinite(x).all()


def test_nan_temperature_reading_becomes_the_setpoint_in_force(line3: LineSpec) -> None:
    schema = FeatureSchema.from_spec(line3)
    j = schema.state_names.index("temperature.oven")
    fault = SensorFault("oven", "temperature", "nan", start_s=600.0, scenarios=(0, 2))
    twin = Twin(line3, 4, seed=2, faults=[fault])
    sp = twin.setpoints
    sp[:, 1, L.S_TEMP] = [155.0, 160.0, 165.0, 170.0]
    twin.set_setpoints(sp)
    snap = twin.step(1200.0)
    temp = snap.readings.temperature_c[:, 1]
    assert np.isnan(temp[[0, 2]]).all() and np.isfinite(temp[[1, 3]]).all()
    x = schema.state_features(snap, np.zeros(4))
    assert np.isfinite(x).all()
    np.testing.assert_array_equal(x[[0, 2], j], [155.0, 165.0])  # the setpoint in force
    np.testing.assert_array_equal(x[[1, 3], j], temp[[1, 3]])  # the reading where there is one


@pytest.mark.parametrize("line", sorted(BUNDLED))
def test_json_round_trip(line: str) -> None:
    schema = FeatureSchema.from_spec(bundled_spec(line), horizon_s=900.0)
    data = schema.to_json()
    text = json.dumps(data)  # plain JSON data
    again = FeatureSchema.from_json(json.loads(text))
    assert again == schema
    assert again.horizon_s == 900.0
    assert again.setpoint_slots == schema.setpoint_slots


def _damaged(key: str, value: object) -> dict[str, object]:
    data = FeatureSchema.from_spec(bundled_spec("example")).to_json()
    if value is KeyError:
        del data[key]
    else:
        data[key] = value
    return data


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("spec_hash", KeyError),
        ("state_names", KeyError),
        ("horizon_s", KeyError),
        ("setpoint_slots", 5),
        ("setpoint_slots", [[0]]),
        ("setpoint_lower", ["low"]),
        ("buffer_capacity", None),
        ("horizon_s", "soon"),
    ],
)
def test_damaged_json_raises_model_error(key: str, value: object) -> None:
    with pytest.raises(ModelError, match="damaged or incomplete"):
        FeatureSchema.from_json(_damaged(key, value))


@pytest.mark.parametrize("data", [None, [], "schema", 3])
def test_json_that_is_not_an_object_raises_model_error(data: object) -> None:
    with pytest.raises(ModelError):
        FeatureSchema.from_json(data)  # type: ignore[arg-type]
