"""The built-in plugins' models: the probed-layer contract and each model's own promises."""

from __future__ import annotations

import pytest
import torch
from infoflow_plugins.mlp import MLPConfig, MLPPlugin

from infoflow_track.data import load_dataset
from infoflow_track.engine import build_model
from infoflow_track.registry import discover
from infoflow_track.settings import RunSettings

BUILTINS = sorted(n for n, e in discover().items() if e.package == "infoflow-plugins")


@pytest.fixture(scope="module")
def digits():
    return load_dataset(RunSettings(dataset="digits"), torch.device("cpu"))


@pytest.mark.parametrize("name", BUILTINS)
def test_builtin_default_model_exposes_named_layers_consistently(name: str, digits) -> None:
    plugin = discover()[name].load()()
    model = build_model(plugin, plugin.Config(), digits, seed=0)  # checks the contract
    model.eval()
    with torch.no_grad():
        logits, layers = model.forward_intermediates(digits.x_test)
        assert torch.equal(logits, model(digits.x_test))
    assert all(act.shape[0] == digits.x_test.shape[0] for act in layers.values())


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_mlp_probes_every_hidden_layer_by_name_after_its_activation(activation, digits) -> None:
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
