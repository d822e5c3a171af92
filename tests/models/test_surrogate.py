"""The trained surrogate: accurate beyond a constant, one answer on both paths, exact gradients,
an OOD score that flags far-out inputs, calibrated bands, clear errors."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from linetwin.models.dataset import Dataset
from linetwin.models.errors import ModelError
from linetwin.models.features import OUT_ENERGY, OUT_GOOD, OUT_SCRAP
from linetwin.models.pipeline import r2
from linetwin.models.surrogate import NUMPY_MAX_BATCH, Z90, Surrogate


def test_training_report_says_what_was_done(trained: tuple[Surrogate, dict[str, Any]]) -> None:
    model, report = trained
    tr, m = report["training"], report["metrics"]
    assert tr["samples"] == 2000 and tr["train"] + tr["valid"] == 2000
    assert 1 <= tr["best_epoch"] <= tr["epochs"] <= 80
    assert tr["total_seconds"] >= tr["fit_seconds"] > 0
    assert m["device"] == "cpu"
    assert model.metadata == report
    assert np.isfinite(model.ood_threshold) and model.ood_threshold > 0
    assert model.band_scale.shape == (model.schema.n_outputs,) and (model.band_scale > 0).all()


def test_reported_accuracy_beats_a_constant(trained: tuple[Surrogate, dict[str, Any]]) -> None:
    kpis = trained[1]["metrics"]["kpis"]
    assert kpis["throughput_per_hour"]["r2"] > 0.7
    assert kpis["energy_kwh_per_hour"]["r2"] > 0.7
    for k in kpis.values():
        assert k["mae"] >= 0


def test_beats_the_training_mean_on_fresh_states(model: Surrogate, fresh: Dataset) -> None:
    pred = model.predict_batched(fresh.state, fresh.setpoints).mean
    const = np.broadcast_to(model.net.y_mean.numpy().astype(float), pred.shape)
    truth = fresh.targets
    for j in (OUT_GOOD, OUT_SCRAP, OUT_ENERGY):
        err_model = np.mean((pred[:, j] - truth[:, j]) ** 2)
        err_const = np.mean((const[:, j] - truth[:, j]) ** 2)
        assert err_model < 0.35 * err_const, model.schema.output_names[j]
    scores = r2(pred, truth)
    assert scores[OUT_GOOD] > 0.7 and scores[OUT_ENERGY] > 0.7
    assert r2(const, truth)[OUT_GOOD] < 0.1  # the constant explains nothing


def test_small_batch_numpy_path_equals_large_batch_torch_path(
    model: Surrogate, fresh: Dataset
) -> None:
    small, large = 12, 160
    assert small <= NUMPY_MAX_BATCH < large  # the two paths are the two sizes
    big = model.predict(fresh.state[:large], fresh.setpoints[:large])
    few = model.predict(fresh.state[:small], fresh.setpoints[:small])
    scale = np.abs(big.mean).max(axis=0) + 1e-9
    for a, b in ((few.mean, big.mean[:small]), (few.std, big.std[:small])):
        np.testing.assert_allclose(a / scale, b / scale, atol=1e-5)
    np.testing.assert_allclose(few.members / scale, big.members[:, :small] / scale, atol=1e-5)
    one = model.predict(fresh.state[3], fresh.setpoints[3])  # 1-D rows are one sample
    np.testing.assert_allclose(one.mean[0] / scale, big.mean[3] / scale, atol=1e-5)


def test_prediction_shapes_and_band(model: Surrogate, fresh: Dataset) -> None:
    pred = model.predict(fresh.state[:7], fresh.setpoints[:7])
    n_out = model.schema.n_outputs
    assert pred.mean.shape == pred.std.shape == (7, n_out)
    assert pred.members.shape == (5, 7, n_out)
    np.testing.assert_allclose(pred.mean, pred.members.mean(axis=0))
    np.testing.assert_allclose(pred.std, pred.members.std(axis=0) * model.band_scale)
    low, high = pred.band()
    np.testing.assert_allclose(high - low, 2 * Z90 * pred.std)
    assert (low <= pred.mean).all() and (pred.mean <= high).all()
    assert (pred.std[:, OUT_GOOD] > 0).all()  # members disagree somewhat


def test_one_state_broadcasts_over_many_setpoints(model: Surrogate, fresh: Dataset) -> None:
    state = fresh.state[5]
    sp = fresh.setpoints[:100]
    got = model.predict(state[None, :], sp)
    want = model.predict(np.repeat(state[None, :], 100, axis=0), sp)
    np.testing.assert_array_equal(got.mean, want.mean)
    assert got.mean.shape == (100, model.schema.n_outputs)
    few = model.predict(state, sp[:8])  # numpy path, 1-D state
    np.testing.assert_allclose(few.mean, want.mean[:8], rtol=1e-5, atol=1e-6)
    assert np.ptp(got.mean[:, OUT_GOOD]) > 0  # the setpoints matter


def test_predict_batched_equals_predict(model: Surrogate, fresh: Dataset) -> None:
    whole = model.predict(fresh.state, fresh.setpoints)
    chunked = model.predict_batched(fresh.state, fresh.setpoints, chunk=50)
    np.testing.assert_allclose(chunked.mean, whole.mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(chunked.std, whole.std, rtol=1e-4, atol=1e-6)


def test_predict_batched_broadcasts_one_state(model: Surrogate, fresh: Dataset) -> None:
    sp = fresh.setpoints[:100]
    got = model.predict_batched(fresh.state[:1], sp, chunk=30)
    want = model.predict(fresh.state[:1], sp)
    np.testing.assert_allclose(got.mean, want.mean, rtol=1e-5, atol=1e-6)


def test_gradient_matches_finite_differences(model: Surrogate, fresh: Dataset) -> None:
    schema = model.schema
    weights = np.zeros(schema.n_outputs)
    weights[[OUT_GOOD, OUT_SCRAP, OUT_ENERGY]] = [4.0, -1.5, -0.2]
    weights[3:] = 0.3
    rows = np.arange(0, 160, 16)
    state, sp = fresh.state[rows], fresh.setpoints[rows]
    obj, grad = model.gradient(state, sp, weights)
    assert obj.shape == (len(rows),) and grad.shape == sp.shape
    np.testing.assert_allclose(obj, model.predict(state, sp).mean @ weights, rtol=1e-5, atol=1e-4)
    h = 1e-5 * (schema.upper - schema.lower)
    fd = np.empty_like(grad)
    for k in range(schema.n_setpoints):
        up, down = sp.copy(), sp.copy()
        up[:, k] += h[k]
        down[:, k] -= h[k]
        f_up = model.predict(state, up).mean @ weights
        f_down = model.predict(state, down).mean @ weights
        fd[:, k] = (f_up - f_down) / (2 * h[k])
    scale = np.abs(fd).max(axis=0) + 1e-9
    # ReLU members are piecewise linear: away from kinks the two agree to float precision
    close = np.abs(grad - fd) <= 1e-3 * scale + 1e-3 * np.abs(fd)
    assert close.mean() >= 0.95, (grad, fd)
    assert np.abs(fd).max() > 0


def test_gradient_broadcasts_one_state(model: Surrogate, fresh: Dataset) -> None:
    weights = np.zeros(model.schema.n_outputs)
    weights[OUT_GOOD] = 1.0
    obj1, grad1 = model.gradient(fresh.state[0], fresh.setpoints[:6], weights)
    obj, grad = model.gradient(np.repeat(fresh.state[:1], 6, axis=0), fresh.setpoints[:6], weights)
    np.testing.assert_allclose(obj1, obj, rtol=1e-6)
    np.testing.assert_allclose(grad1, grad, rtol=1e-6)


def test_jacobian_matches_gradient(model: Surrogate, fresh: Dataset) -> None:
    """The exact Jacobian of the mean outputs, contracted with weights, is the gradient."""
    rng = np.random.default_rng(5)
    for row in (0, 33, 97):
        mean, jac = model.jacobian(fresh.state[row], fresh.setpoints[row])
        assert mean.shape == (model.schema.n_outputs,)
        assert jac.shape == (model.schema.n_outputs, model.schema.n_setpoints)
        np.testing.assert_allclose(
            mean, model.predict(fresh.state[row], fresh.setpoints[row]).mean[0], rtol=1e-9
        )
        weights = rng.normal(size=model.schema.n_outputs)
        _obj, grad = model.gradient(fresh.state[row], fresh.setpoints[row], weights)
        scale = np.abs(grad).max() + 1e-9
        np.testing.assert_allclose(weights @ jac / scale, grad[0] / scale, atol=1e-4)


def test_ood_score_flags_far_out_inputs(model: Surrogate, fresh: Dataset) -> None:
    schema = model.schema
    typical = model.ood_score(fresh.state, fresh.setpoints)
    assert typical.shape == (len(fresh),) and (typical >= 0).all()
    # training-like inputs (fresh states from the same process) are mostly inside
    assert np.mean(typical > model.ood_threshold) < 0.3

    span = schema.upper - schema.lower
    far_sp = fresh.setpoints[:20] + 3.0 * span  # setpoints far above the box
    far_state = fresh.state[:20].copy()
    far_state[:, schema.state_names.index("temperature.oven")] += 500.0
    far_state[:, schema.state_names.index("recent_throughput_per_hour")] *= 20.0
    for state, sp in ((fresh.state[:20], far_sp), (far_state, fresh.setpoints[:20])):
        scores = model.ood_score(state, sp)
        assert (scores > model.ood_threshold).all()
        assert scores.min() > typical.max()
    # farther is more out of distribution
    farther = model.ood_score(fresh.state[:20], fresh.setpoints[:20] + 6.0 * span)
    assert (farther > model.ood_score(fresh.state[:20], far_sp)).all()


def test_ood_score_of_training_inputs_is_small(model: Surrogate) -> None:
    ref = model.ood_reference[:200]
    n_state = model.schema.n_state
    scores = model.ood_score(ref[:, :n_state], ref[:, n_state:])
    assert np.mean(scores > model.ood_threshold) < 0.05


def test_calibration_coverage_is_near_nominal(
    trained: tuple[Surrogate, dict[str, Any]], fresh: Dataset
) -> None:
    model, report = trained
    cal = report["metrics"]["calibration"]
    assert cal["nominal"] == 0.9
    assert 0.7 <= cal["coverage_mean"] <= 1.0
    assert set(cal["coverage"]) == set(model.schema.output_names)
    assert all(0.5 <= c <= 1.0 for c in cal["coverage"].values())
    # on fresh data, too
    pred = model.predict_batched(fresh.state, fresh.setpoints)
    low, high = pred.band()
    inside = (fresh.targets >= low) & (fresh.targets <= high)
    assert 0.7 <= inside.mean() <= 1.0
    # the band is not trivially wide: a quarter of its width covers far less
    narrow = np.abs(fresh.targets - pred.mean) <= 0.25 * Z90 * pred.std
    assert narrow.mean() < 0.6


@pytest.mark.parametrize("method", ["predict", "ood_score", "gradient", "predict_batched"])
@pytest.mark.parametrize("wrong", ["state+1", "state-1", "setpoints+1", "setpoints-1"])
def test_wrong_feature_counts_raise_model_error(
    model: Surrogate, fresh: Dataset, method: str, wrong: str
) -> None:
    state, sp = fresh.state[:4], fresh.setpoints[:4]
    if wrong.startswith("state"):
        state = np.concatenate([state, state[:, :1]], axis=1) if "+" in wrong else state[:, :-1]
    else:
        sp = np.concatenate([sp, sp[:, :1]], axis=1) if "+" in wrong else sp[:, :-1]
    args: tuple[Any, ...] = (state, sp)
    if method == "gradient":
        args = (*args, np.ones(model.schema.n_outputs))
    with pytest.raises(ModelError, match=r"expected \d+ state and \d+ setpoint features"):
        getattr(model, method)(*args)


def test_mismatched_batch_sizes_raise_model_error(model: Surrogate, fresh: Dataset) -> None:
    with pytest.raises(ModelError):
        model.predict(fresh.state[:3], fresh.setpoints[:5])
