"""Each built-in experiment's scientific point, checked on its model or its rule."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import pytest
from helpers import cpu

from infoflow_track import UserError
from infoflow_track.data import load_dataset
from infoflow_track.estimators import resolve_estimators
from infoflow_track.settings import RunSettings

if TYPE_CHECKING:
    import torch


@pytest.fixture(scope="module")
def digits():
    return load_dataset(RunSettings(dataset="digits"), cpu())


def images(shape: str, size: int = 40):
    """Tiny synthetic images of ``shape`` (e.g. ``3x32x32``) in 3 classes."""
    spec = f"synthetic:size={size},shape={shape},classes=3"
    return load_dataset(RunSettings(dataset=spec, probe_size=16), cpu())


def fit(plugin, config, data, settings: RunSettings, hooks=()):
    from infoflow_track.engine import build_model, train

    model = build_model(plugin, config, data, settings.seed)
    return model, train(plugin, model, config, data, settings, hooks=hooks)


# --- mlp ----------------------------------------------------------------------------------


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_mlp_probes_every_hidden_layer_by_name_after_its_activation(activation, digits) -> None:
    import torch
    from infoflow_plugins.mlp import MLPConfig, MLPPlugin

    from infoflow_track.engine import build_model

    config = MLPConfig(widths=(20, 10, 5), activation=activation)
    model = build_model(MLPPlugin(), config, digits, seed=0)
    with torch.no_grad():
        _, layers = model.forward_intermediates(digits.x_test)
    assert list(layers) == ["hidden1", "hidden2", "hidden3"]
    assert [a.shape[1] for a in layers.values()] == [20, 10, 5]
    values = torch.cat([a.flatten() for a in layers.values()])
    if activation == "relu":
        assert values.min() == 0 and values.max() > 0
    else:
        assert -1 < values.min() < 0 < values.max() < 1


# --- bottleneck-mlp -----------------------------------------------------------------------


def test_a_narrower_bottleneck_ends_with_less_information_about_the_input(digits) -> None:
    from infoflow_plugins.bottleneck import BottleneckConfig, BottleneckPlugin

    from infoflow_track.engine import build_model, train
    from infoflow_track.probe import LayerProbe

    settings = RunSettings(dataset="digits", epochs=3, mi=("binning",))
    ends = {}
    for width in (2, 50):
        config = BottleneckConfig(bottleneck=width)
        model = build_model(BottleneckPlugin(), config, digits, settings.seed)
        estimators = resolve_estimators(settings.mi, {"binning": {"n_bins": 8}}).estimators
        probe = LayerProbe(model, digits, estimators)
        result = train(BottleneckPlugin(), model, config, digits, settings, hooks=[probe])
        ends[width] = (result.metrics["mi_xt/bottleneck"], result.metrics["mi_ty/bottleneck"])
        assert list(probe.layers) == ["hidden", "bottleneck"]
    (xt_narrow, ty_narrow), (xt_wide, ty_wide) = ends[2], ends[50]
    assert xt_narrow < xt_wide - 2.0  # bits
    assert ty_narrow < ty_wide  # and the narrow one keeps less about the label
    h_y = -sum(p * math.log2(p) for p in np.bincount(digits.y_probe) / len(digits.y_probe))
    for xt, ty in ends.values():
        assert 0 <= ty <= min(xt, h_y) + 1e-5  # data processing: I(T;Y) <= I(X;T), H(Y)


# --- simple-cnn ---------------------------------------------------------------------------


@pytest.mark.parametrize("shape", ["1x8x8", "1x28x28", "3x32x32", "3x7x5"])
def test_simple_cnn_fits_any_image_size_and_channel_count(shape: str) -> None:
    import torch
    from infoflow_plugins.simple_cnn import SimpleCNNConfig, SimpleCNNPlugin

    from infoflow_track.engine import build_model

    data = images(shape)
    c, h, w = (int(p) for p in shape.split("x"))
    model = build_model(SimpleCNNPlugin(), SimpleCNNConfig(channels=4), data, seed=0)
    with torch.no_grad():
        _, layers = model.forward_intermediates(data.x_train)
    half, quarter = (-(-h // 2), -(-w // 2)), (-(-h // 4), -(-w // 4))
    assert layers["conv1"].shape[1:] == (4, *half)
    assert layers["conv2"].shape[1:] == (8, *quarter)
    assert model.trunk.conv1.in_channels == c


def test_simple_cnn_conv1_is_shift_equivariant(digits) -> None:
    import torch
    from infoflow_plugins.simple_cnn import SimpleCNNConfig, SimpleCNNPlugin

    from infoflow_track.engine import build_model

    model = build_model(SimpleCNNPlugin(), SimpleCNNConfig(channels=3, kernel_size=3),
                        images("1x16x16"), seed=0)  # fmt: skip
    x = torch.zeros(1, 1, 16, 16)
    x[0, 0, 4:8, 5:9] = torch.randn(4, 4)
    shifted = torch.roll(x, shifts=(2, 2), dims=(2, 3))  # 2 pixels = 1 pooled cell
    with torch.no_grad():
        a = model.forward_intermediates(x)[1]["conv1"]
        b = model.forward_intermediates(shifted)[1]["conv1"]
    assert torch.allclose(torch.roll(a, shifts=(1, 1), dims=(2, 3)), b, atol=1e-6)


def test_simple_cnn_refuses_flat_inputs_naming_the_dataset() -> None:
    from infoflow_plugins.simple_cnn import SimpleCNNConfig, SimpleCNNPlugin

    data = load_dataset(RunSettings(dataset="ib12"), cpu())
    with pytest.raises(UserError, match=r"simple-cnn needs image inputs .* ib12 .*\(12,\)"):
        SimpleCNNPlugin().build(SimpleCNNConfig(), data)


def test_simple_cnn_learns_digits(digits) -> None:
    from infoflow_plugins.simple_cnn import SimpleCNNConfig, SimpleCNNPlugin

    _, result = fit(SimpleCNNPlugin(), SimpleCNNConfig(), digits, RunSettings(epochs=3))
    assert result.metrics["acc/test"] > 0.8  # chance is 0.1


# --- local-mi -----------------------------------------------------------------------------


@pytest.mark.parametrize("redundancy", ["dot", "squared"])
def test_local_rule_gives_row_i_the_gradient_of_its_own_loss_alone(redundancy: str) -> None:
    import torch
    from infoflow_plugins.local_mi import LocalMIConfig
    from infoflow_plugins.nets.local_mi import local_losses

    from infoflow_track.measures import mi_soft_per_unit

    torch.manual_seed(0)
    config = LocalMIConfig(redundancy=redundancy, lambda_reg=0.7)
    layer = torch.nn.Linear(6, 5)
    x, y = torch.randn(64, 6), torch.randint(0, 3, (64,))
    mi, red = local_losses(layer(x), y, layer.weight, config, 3)
    (config.lambda_reg * red - mi).sum().backward()
    vectorised = layer.weight.grad.clone(), layer.bias.grad.clone()
    for i in range(5):  # the per-neuron reference: L_i with every row live, rows != i ignored
        layer.zero_grad()
        w = layer.weight
        pre_i = (x @ w[i] + layer.bias[i])[:, None]  # (B, 1): neuron i alone
        mi_i = mi_soft_per_unit(pre_i, y, n_classes=3, n_bins=config.mi_bins,
                                bandwidth=config.bandwidth)  # fmt: skip
        overlaps = torch.stack([w[i] @ w[j] for j in range(5) if j != i])
        penalty = overlaps.sum() if redundancy == "dot" else overlaps.square().sum()
        (config.lambda_reg * penalty - mi_i[0]).backward()
        torch.testing.assert_close(vectorised[0][i], layer.weight.grad[i])
        torch.testing.assert_close(vectorised[1][i], layer.bias.grad[i])


def test_local_mi_trains_layer_by_layer_then_the_readout(digits) -> None:
    import torch
    from infoflow_plugins.local_mi import LocalMIConfig, LocalMIPlugin

    from infoflow_track.engine import build_model, train

    settings = RunSettings(dataset="digits", epochs=2)
    snapshots, phases = [], []

    def record(model, ctx):
        snapshots.append({k: v.clone() for k, v in model.state_dict().items()})
        return {}

    def heard(step, metrics):
        phases.append(metrics["phase"])

    plugin, config = LocalMIPlugin(), LocalMIConfig(widths=(8, 6))
    model = build_model(plugin, config, digits, settings.seed)
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    result = train(plugin, model, config, digits, settings, hooks=[record], listeners=[heard])
    assert result.steps == plugin.total_epochs(config, 2) == 6
    assert phases == [1, 1, 2, 2, 3, 3]

    def moved(key: str, a: dict, b: dict) -> bool:
        return not torch.equal(a[key], b[key])

    s = snapshots  # s[k] = state at step k; step 0 is the initialisation
    assert all(torch.equal(s[0][k], v) for k, v in initial.items())
    layer1, layer2, readout = "hidden.0.weight", "hidden.1.weight", "readout.weight"
    assert moved(layer1, s[0], s[2]) and not moved(layer1, s[2], s[6])
    assert not moved(layer2, s[0], s[2]) and moved(layer2, s[2], s[4])
    assert not moved(layer2, s[4], s[6])
    assert not moved(readout, s[0], s[4]) and moved(readout, s[4], s[6])
    norms = model.hidden[0].weight.norm(dim=1)
    torch.testing.assert_close(norms, torch.ones_like(norms))  # rows kept on the unit sphere


@pytest.mark.slow
def test_local_mi_beats_its_random_init_readout_on_digits(digits) -> None:
    from infoflow_plugins.local_mi import LocalMIConfig, LocalMIPlugin

    settings = RunSettings(dataset="digits", epochs=10)
    accuracy = {}
    for train_layers in (True, False):
        config = LocalMIConfig(train_layers=train_layers)
        _, result = fit(LocalMIPlugin(), config, digits, settings)
        accuracy[train_layers] = result.metrics["acc/test"]
    assert accuracy[True] > accuracy[False] + 0.05, accuracy


# --- weight-feedback ----------------------------------------------------------------------


def test_projection_is_seeded_fixed_and_held_within_64_mib() -> None:
    import torch
    from infoflow_plugins.nets.weight_feedback import MAX_PROJECTION_BYTES
    from infoflow_plugins.weight_feedback import WeightFeedbackConfig, WeightFeedbackPlugin

    from infoflow_track.engine import build_model

    data = images("3x32x32")
    config = WeightFeedbackConfig(feedback="projection", channels=20, hidden=500,
                                  feedback_dim=12)  # fmt: skip
    model = build_model(WeightFeedbackPlugin(), config, data, seed=0)
    p = model.projection
    assert p.shape == (12, model.fc_weight_count) and p.numel() * 4 <= MAX_PROJECTION_BYTES
    assert "projection" not in model.state_dict()  # re-derived from its seed, never saved
    other_init = build_model(WeightFeedbackPlugin(), config, data, seed=1)
    assert torch.equal(other_init.projection, p)  # fixed by projection_seed alone
    w = torch.cat([model.fc1.weight.flatten(), model.fc2.weight.flatten()])
    with torch.no_grad():
        ratio = (model.weight_summary().norm() / w.norm()).item()
    assert 0.5 < ratio < 1.5  # a norm-keeping random projection
    too_big = WeightFeedbackConfig(feedback="projection", channels=20, hidden=500,
                                   feedback_dim=64)  # fmt: skip
    features = model.trunk.out_features  # 40 x 8 x 8
    fits = [d for d in range(1, 64) if 4 * d * (500 * (features + d) + 3 * 500) <= 2**26]
    assert fits[-1] >= 12  # the largest feedback_dim whose P fits, counted independently
    with pytest.raises(UserError, match=f"limit is 64 MiB: use feedback_dim <= {fits[-1]},"):
        build_model(WeightFeedbackPlugin(), too_big, data, seed=0)
    huge = WeightFeedbackConfig(feedback="projection", hidden=60000, feedback_dim=8)
    with pytest.raises(UserError, match="even feedback_dim=1 does not fit"):
        build_model(WeightFeedbackPlugin(), huge, data, seed=0)


@pytest.mark.parametrize("shape", ["1x8x8", "1x28x28", "3x32x32"])
@pytest.mark.parametrize("feedback", ["none", "pool", "projection"])
def test_feedback_sizes_follow_the_model_and_the_data(shape: str, feedback: str) -> None:
    import torch
    from infoflow_plugins.weight_feedback import WeightFeedbackConfig, WeightFeedbackPlugin

    from infoflow_track.engine import build_model

    data = images(shape)
    config = WeightFeedbackConfig(feedback=feedback, feedback_dim=7, hidden=16)
    model = build_model(WeightFeedbackPlugin(), config, data, seed=0)
    extra = 0 if feedback == "none" else 7
    assert model.fc1.in_features == model.trunk.out_features + extra
    with torch.no_grad():
        _, layers = model.forward_intermediates(data.x_train)
    assert list(layers) == ["conv1", "conv2", "fc1"] and layers["fc1"].shape[1] == 16


def test_pool_summary_is_the_max_of_each_chunk_of_the_fc_weights(digits) -> None:
    import torch
    from infoflow_plugins.weight_feedback import WeightFeedbackConfig, WeightFeedbackPlugin

    from infoflow_track.engine import build_model

    config = WeightFeedbackConfig(feedback="pool", feedback_dim=9)
    model = build_model(WeightFeedbackPlugin(), config, digits, seed=0)
    w = torch.cat([model.fc1.weight.flatten(), model.fc2.weight.flatten()]).detach().numpy()
    n, d = len(w), 9
    bounds = [(i * n // d, -(-(i + 1) * n // d)) for i in range(d)]  # adaptive pooling chunks
    expected = np.array([w[a:b].max() for a, b in bounds])
    with torch.no_grad():
        np.testing.assert_array_equal(model.weight_summary().numpy(), expected)


def _fc_gradients(model, x, y) -> torch.Tensor:
    import torch
    import torch.nn.functional as F

    model.zero_grad()
    F.cross_entropy(model(x), y).backward()
    return torch.cat([model.fc1.weight.grad.flatten(), model.fc2.weight.grad.flatten()])


def test_feedback_gradient_flows_through_the_summary_only_when_asked(digits) -> None:
    import torch
    from infoflow_plugins.weight_feedback import WeightFeedbackConfig, WeightFeedbackPlugin

    from infoflow_track.engine import build_model

    x, y = digits.x_train[:64], digits.y_train[:64]
    grads = {}
    for flows in (False, True):
        config = WeightFeedbackConfig(feedback="pool", feedback_dim=9, feedback_grad=flows)
        grads[flows] = _fc_gradients(build_model(WeightFeedbackPlugin(), config, digits, 0), x, y)
    through = (grads[True] - grads[False]).abs() > 1e-9
    model = build_model(WeightFeedbackPlugin(), WeightFeedbackConfig(feedback_dim=9), digits, 0)
    w = torch.cat([model.fc1.weight.flatten(), model.fc2.weight.flatten()]).detach()
    n = len(w)
    argmax = {a + int(w[a : -(-(i + 1) * n // 9)].argmax()) for i, a in
              enumerate(i * n // 9 for i in range(9))}  # fmt: skip
    # the summary's gradient reaches exactly the weights that are the max of their chunk
    assert set(torch.nonzero(through).flatten().tolist()) == argmax


# --- two-timescale ------------------------------------------------------------------------


def test_learning_rates_land_on_their_parameter_groups(digits) -> None:
    import torch
    from infoflow_plugins.two_timescale import TwoTimescaleConfig, TwoTimescalePlugin

    from infoflow_track.engine import build_model

    config = TwoTimescaleConfig(width=30, lr=0.05, lr_ratio=0.01)
    plugin = TwoTimescalePlugin()
    model = build_model(plugin, config, digits, seed=0)
    optimizer = plugin.configure_optimizer(model, config)
    groups = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
    assert [groups[id(p)] for p in model.hidden.parameters()] == [pytest.approx(5e-4)] * 2
    assert [groups[id(p)] for p in model.readout.parameters()] == [0.05] * 2
    before = [p.detach().clone() for p in model.parameters()]
    plugin.training_step(model, digits.x_train[:64], digits.y_train[:64], config).backward()
    grads = [p.grad.clone() for p in model.parameters()]
    optimizer.step()
    rates = [5e-4, 5e-4, 0.05, 0.05]  # hidden weight, bias; readout weight, bias
    for p, p0, g, lr in zip(model.parameters(), before, grads, rates, strict=True):
        torch.testing.assert_close(p.detach(), p0 - lr * g)  # plain SGD: one step of lr * g


@pytest.mark.slow
def test_a_slower_hidden_layer_stays_nearer_its_initial_kernel() -> None:
    import torch
    from infoflow_plugins.two_timescale import TwoTimescaleConfig, TwoTimescalePlugin

    from infoflow_track.engine import build_model, train
    from infoflow_track.probe import LayerProbe

    settings = RunSettings(dataset="digits", classes=(8, 9), epochs=10)
    data = load_dataset(settings, cpu())
    moved = {}
    for ratio in (0.0, 0.01, 1.0):
        config = TwoTimescaleConfig(width=500, lr=0.05, lr_ratio=ratio)
        model = build_model(TwoTimescalePlugin(), config, data, settings.seed)
        initial = model.hidden[0].weight.detach().clone()
        probe = LayerProbe(model, data, resolve_estimators(settings.mi).estimators)
        result = train(TwoTimescalePlugin(), model, config, data, settings, hooks=[probe])
        moved[ratio] = result.metrics["cka_init/hidden"]
        if ratio == 0.0:
            assert torch.equal(model.hidden[0].weight, initial)  # frozen: random features
    assert moved[0.0] == pytest.approx(1.0, abs=1e-6)
    assert moved[0.0] > moved[0.01] > moved[1.0]


def test_the_plugin_classes_name_the_choices_their_torch_modules_implement() -> None:
    """The plugin modules import no torch, so their configs list the nonlinearities and
    redundancy kinds by name: the names must be exactly those the modules implement."""
    from infoflow_plugins.local_mi import REDUNDANCY_NAMES
    from infoflow_plugins.mlp import ACTIVATION_NAMES
    from infoflow_plugins.nets.local_mi import REDUNDANCY
    from infoflow_plugins.nets.mlp import ACTIVATIONS

    assert tuple(ACTIVATIONS) == ACTIVATION_NAMES and tuple(REDUNDANCY) == REDUNDANCY_NAMES


@pytest.mark.slow
def test_listing_plugins_imports_no_torch() -> None:
    """`infoflow plugins list` loads every built-in plugin class (its summary, its contract)
    without importing torch: a fresh interpreter, as the command starts."""
    import subprocess
    import sys

    code = ("import sys\nfrom infoflow_track.cli import main\nsys.argv = ['infoflow', 'plugins', "
            "'list']\ntry:\n    main()\nexcept SystemExit:\n    pass\n"
            "print('TORCH', 'torch' in sys.modules)")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert "BROKEN" not in done.stdout and "local-mi" in done.stdout, done.stdout + done.stderr
    assert done.stdout.strip().endswith("TORCH False"), done.stdout
