"""The online bias tracker finds known biases, with honest standard errors, and corrects."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from linetwin.models.errors import ModelError
from linetwin.models.residuals import MIN_PAIRS, BiasTracker

NAMES = ("profit_per_hour", "scrap_rate")


def _feed(tracker: BiasTracker, rng: np.random.Generator, n: int, bias, noise) -> np.ndarray:
    """Feed n pairs whose predictions are off by `bias`; return the true values."""
    truth = rng.uniform(100.0, 500.0, (n, 2)) * [1.0, 0.0001]
    realised = truth + rng.normal(0.0, 1.0, (n, 2)) * noise
    tracker.update(truth + bias, np.broadcast_to(noise, (n, 2)), realised)
    return truth


def test_it_recovers_a_known_bias_within_its_standard_error():
    rng = np.random.default_rng(0)
    bias, noise = np.array([25.0, -0.002]), np.array([8.0, 0.001])
    t = BiasTracker(NAMES, window=400)
    _feed(t, rng, 400, bias, noise)
    assert np.all(np.abs(t.bias - bias) <= 4 * t.bias_se)
    np.testing.assert_allclose(t.bias_se, noise / np.sqrt(400), rtol=0.15)
    # a new prediction off by the same bias comes back to the truth, its band a little wider
    mean, std = t.correct(np.array([525.0, 0.018]), np.array([8.0, 0.001]))
    assert np.all(np.abs(mean - [500.0, 0.020]) <= 4 * t.bias_se)
    assert np.all(std > [8.0, 0.001]) and np.all(std < np.array([8.0, 0.001]) * 1.01)


def test_coverage_counts_realised_values_inside_the_band():
    rng = np.random.default_rng(1)
    t = BiasTracker(NAMES, window=4000)
    _feed(t, rng, 4000, np.zeros(2), np.array([5.0, 0.001]))
    np.testing.assert_allclose(t.coverage(), 0.90, atol=0.02)  # unbiased, honest std
    biased = BiasTracker(NAMES, window=4000)
    _feed(biased, rng, 4000, np.array([10.0, 0.0]), np.array([5.0, 0.001]))
    assert biased.coverage()[0] < 0.6  # 2 std off: most outcomes fall outside the band


@settings(max_examples=30, deadline=None, database=None)
@given(
    bias=st.floats(-100.0, 100.0),
    noise=st.floats(0.1, 50.0),
    seed=st.integers(0, 2**32 - 1),
)
def test_correction_takes_out_any_constant_bias(bias, noise, seed):
    rng = np.random.default_rng(seed)
    t = BiasTracker(("x",), window=200)
    truth = rng.uniform(-10.0, 10.0, 200)
    realised = truth + rng.normal(0, noise, 200)
    t.update((truth + bias)[:, None], np.full((200, 1), noise), realised[:, None])
    mean, std = t.correct(np.array([bias]), np.array([noise]))
    # the corrected prediction of a true 0 is within 5 standard errors of it
    assert abs(mean[0]) <= 5 * t.bias_se[0] + 1e-9
    assert std[0] == pytest.approx(np.hypot(noise, t.bias_se[0]))


def test_window_keeps_only_the_latest_pairs_so_a_changed_bias_is_followed():
    rng = np.random.default_rng(2)
    t = BiasTracker(NAMES, window=100)
    _feed(t, rng, 300, np.array([20.0, 0.0]), np.array([1.0, 0.0001]))
    _feed(t, rng, 100, np.array([-5.0, 0.0]), np.array([1.0, 0.0001]))
    assert t.residuals.shape == (100, 2)
    assert t.bias[0] == pytest.approx(-5.0, abs=0.5)


def test_no_correction_before_enough_pairs_and_nan_outcomes_are_skipped():
    t = BiasTracker(NAMES)
    t.update([10.0, 0.1], [1.0, 0.01], [0.0, np.nan])
    mean, std = t.correct([10.0, 0.1], [1.0, 0.01])
    np.testing.assert_array_equal(mean, [10.0, 0.1])
    np.testing.assert_array_equal(std, [1.0, 0.01])
    t.update([[10.0, 0.1]] * (MIN_PAIRS - 1), [[1.0, 0.01]] * (MIN_PAIRS - 1), [[7.0, 0.1]] * 2)
    assert t.count.tolist() == [MIN_PAIRS, MIN_PAIRS - 1]
    assert t.bias[0] == pytest.approx((10 + 3 + 3) / 3) and t.bias[1] == 0.0


def test_overlapping_horizons_widen_the_standard_error():
    rng = np.random.default_rng(3)
    a, b = BiasTracker(NAMES), BiasTracker(NAMES, overlap=16.0)
    for t in (a, b):
        _feed(t, np.random.default_rng(3), 100, np.zeros(2), np.array([4.0, 0.001]))
    np.testing.assert_allclose(b.bias_se, 4.0 * a.bias_se)
    assert rng is not None


def test_json_round_trip():
    rng = np.random.default_rng(4)
    t = BiasTracker(NAMES, window=50, overlap=2.0)
    _feed(t, rng, 60, np.array([3.0, 0.001]), np.array([2.0, 0.001]))
    t.update([1.0, 0.1], [1.0, 0.01], [1.0, np.nan])
    back = BiasTracker.from_json(json.loads(json.dumps(t.to_json())))
    np.testing.assert_array_equal(back.residuals, t.residuals)
    np.testing.assert_array_equal(back.bias, t.bias)
    np.testing.assert_array_equal(back.bias_se, t.bias_se)
    with pytest.raises(ModelError, match="damaged"):
        BiasTracker.from_json({"names": ["x"]})


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (([1.0], [1.0, 1.0], [1.0, 1.0]), "predicted_mean"),
        (([1.0, np.nan], [1.0, 1.0], [1.0, 1.0]), "scrap_rate is nan"),
        (([1.0, 1.0], [1.0, -1.0], [1.0, 1.0]), ">= 0"),
        (([1.0, 1.0], [1.0, 1.0], [1.0, np.inf]), "realised: scrap_rate is inf"),
        (([[1.0, 1.0]] * 2, [1.0, 1.0], [1.0, 1.0]), "same shape"),
    ],
)
def test_bad_input_is_refused_with_the_value_and_where(args, match):
    with pytest.raises(ModelError, match=match):
        BiasTracker(NAMES).update(*args)


def test_bad_settings_are_refused():
    with pytest.raises(ModelError, match="window"):
        BiasTracker(NAMES, window=1)
    with pytest.raises(ModelError, match="overlap"):
        BiasTracker(NAMES, overlap=0.5)
    with pytest.raises(ModelError, match="at least one"):
        BiasTracker(())
