"""The ensemble network: folded numpy weights compute what torch computes; constants stay exact."""

from __future__ import annotations

import numpy as np
import torch

from linetwin.models.dataset import Dataset
from linetwin.models.device import torch_threads
from linetwin.models.features import FeatureSchema
from linetwin.models.network import EnsembleMLP, numpy_forward
from linetwin.models.surrogate import Surrogate
from linetwin.models.train import TrainConfig, fit
from linetwin.twin.spec import LineSpec


def scaled_data(rng: np.random.Generator, n: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Inputs with means and scales far from 0 and 1 (one column constant), outputs likewise
    (two columns constant, one of them zero)."""
    x = rng.normal(size=(n, 5)) * [50.0, 0.01, 3.0, 1.0, 7.0] + [200.0, 1.0, -40.0, 0.0, 5.0]
    x[:, 3] = 2.5  # constant input
    y = rng.normal(size=(n, 4)) * [30.0, 0.001, 1.0, 1.0] + [150.0, 0.02, 0.0, 0.0]
    y[:, 2] = 0.0  # constant zero output (scrap on a line without any)
    y[:, 3] = 3.5  # constant output
    return x, y


def random_net(seed: int) -> tuple[EnsembleMLP, np.ndarray]:
    rng = np.random.default_rng(seed)
    x, y = scaled_data(rng)
    net = EnsembleMLP(5, 4, (8, 6), members=3, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():  # non-zero biases too, so their folding is checked
        for b in net.bias:
            b.normal_(generator=torch.Generator().manual_seed(seed + 1))
    net.set_normalisation(x, y)
    return net.eval(), x


def test_numpy_forward_of_folded_layers_equals_torch_forward() -> None:
    for seed in (0, 1, 2):
        net, x = random_net(seed)
        with torch.no_grad():
            want = net(torch.as_tensor(x, dtype=torch.float32)).double().numpy()
        got = numpy_forward(net.numpy_layers(), x)
        assert got.shape == want.shape == (3, len(x), 4)
        scale = np.abs(want).max(axis=(0, 1)) + 1e-12
        np.testing.assert_allclose(got / scale, want / scale, atol=2e-5)
        # members differ (independent initialisation), and the outputs do depend on x
        assert np.ptp(got[:, :, 0], axis=0).max() > 0
        assert np.ptp(got[0, :, 0]) > 0


def test_numpy_layers_are_copies_in_float64() -> None:
    net, _ = random_net(3)
    layers = net.numpy_layers()
    assert [w.shape for w, _ in layers] == [(3, 5, 8), (3, 8, 6), (3, 6, 4)]
    assert [b.shape for _, b in layers] == [(3, 8), (3, 6), (3, 4)]
    assert all(w.dtype == np.float64 and b.dtype == np.float64 for w, b in layers)
    before = net.weight[1].detach().clone()
    layers[1][0][...] = 0.0  # writing to the arrays leaves the network alone
    torch.testing.assert_close(net.weight[1].detach(), before)


def test_constant_outputs_are_predicted_exactly() -> None:
    net, x = random_net(4)
    far = x * 10.0 - 1000.0  # also far outside the data
    for inputs in (x, far):
        with torch.no_grad():
            out = net(torch.as_tensor(inputs, dtype=torch.float32)).numpy()
        assert (out[:, :, 2] == 0.0).all()
        assert (out[:, :, 3] == 3.5).all()
        folded = numpy_forward(net.numpy_layers(), inputs)
        assert (folded[:, :, 2] == 0.0).all()
        assert (folded[:, :, 3] == 3.5).all()
        assert np.ptp(folded[:, :, 0]) > 0  # a varying output does vary


def test_constant_input_keeps_unit_scale_and_finite_outputs() -> None:
    net, x = random_net(5)
    assert net.x_std[3].item() == 1.0
    assert net.y_std[2].item() == 0.0 and net.y_scale[2].item() == 1.0
    x2 = x.copy()
    x2[:, 3] = -7.0  # a value the constant column never took
    assert np.isfinite(numpy_forward(net.numpy_layers(), x2)).all()


def test_training_keeps_a_constant_output_exact(line3: LineSpec) -> None:
    """Fit on data with a constant zero target: the trained ensemble predicts exactly zero."""
    schema = FeatureSchema.from_spec(line3)
    rng = np.random.default_rng(8)
    n = 200
    state = rng.random((n, schema.n_state))
    sp = schema.lower + rng.random((n, schema.n_setpoints)) * (schema.upper - schema.lower)
    y = np.zeros((n, schema.n_outputs))
    y[:, 0] = 100.0 + 50.0 * sp[:, 0] - 20.0 * state[:, 0]
    y[:, 2] = 5.0 + sp[:, 1]
    data = Dataset(schema, state, sp, y, y, 1, 0)
    with torch_threads(1):  # a tiny network: one thread is fastest (see conftest)
        net, report = fit(
            data.subset(np.arange(160)),
            data.subset(np.arange(160, n)),
            TrainConfig(hidden=(8,), members=2, max_epochs=20, batch_size=64),
        )
    assert report.epochs >= 1 and np.isfinite(report.best_valid_loss)
    model = Surrogate(schema, net, np.ones(schema.n_outputs), data.inputs, 1.0)
    pred = model.predict(state, sp)  # 200 rows: the torch path
    assert (pred.members[:, :, 1] == 0.0).all()
    assert (pred.members[:, :, 3:] == 0.0).all()
    assert (pred.std[:, 1] == 0.0).all()
    small = model.predict(state[:10], sp[:10])  # the numpy path
    assert (small.mean[:, 1] == 0.0).all()
    assert np.ptp(pred.mean[:, 0]) > 0
