"""The plugin contract, checked on every registered plugin: each promise the framework relies
on (build, forward, named layers, one measured and logged epoch on tiny data)."""

from __future__ import annotations

import math

import optuna
import pytest
import torch
from mlflow.tracking import MlflowClient

from infoflow_track.data import load_dataset
from infoflow_track.engine import LAYER_NAME, build_model
from infoflow_track.experiment import execute_run, plan_run
from infoflow_track.hparams import parse_config, specs
from infoflow_track.probe import LAYER_MEASURES
from infoflow_track.registry import check_contract, discover
from infoflow_track.settings import RunSettings
from infoflow_track.study.space import check_space
from infoflow_track.tracking import Tracker

PLUGINS = sorted(discover())
#: Tiny images every plugin takes: 120 samples of 1 x 8 x 8 in 3 classes.
TINY = RunSettings(dataset="synthetic:size=120,shape=1x8x8,classes=3", epochs=1,
                   batch_size=32, probe_size=64)  # fmt: skip


@pytest.fixture(scope="module")
def store_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One real SQLite store for the module: creating one costs seconds."""
    return f"sqlite:///{tmp_path_factory.mktemp('store') / 'mlflow.db'}"


@pytest.fixture(scope="module")
def tiny():
    return load_dataset(TINY, torch.device("cpu"))


def plugin_of(name: str):
    return discover()[name].load()()


def test_every_builtin_is_registered() -> None:
    builtins = {n for n, e in discover().items() if e.package == "infoflow-plugins"}
    expected = {"mlp", "bottleneck-mlp", "simple-cnn", "local-mi", "weight-feedback",
                "two-timescale"}  # fmt: skip
    assert builtins == expected


@pytest.mark.parametrize("name", PLUGINS)
def test_declares_a_valid_contract_and_a_searchable_default_space(name: str) -> None:
    entry = discover()[name]
    assert entry.broken_reason() is None
    cls = entry.load()
    check_contract(cls, name)
    assert "\n" not in cls.summary and cls.Config() == parse_config(cls.Config, {})
    dims = check_space(cls.search_space, specs(cls.Config), "search_space")
    sampled = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0)).ask()
    point = {key: dim.suggest(sampled) for key, dim in dims.items()}
    assert set(point) == set(cls.search_space)
    parse_config(cls.Config, point)  # a point of the default space is a valid config


@pytest.mark.parametrize("name", PLUGINS)
def test_builds_seeded_and_exposes_named_layers(name: str, tiny) -> None:
    plugin = plugin_of(name)
    config = plugin.Config()
    model = build_model(plugin, config, tiny, seed=3)
    again = build_model(plugin, config, tiny, seed=3)
    for a, b in zip(model.state_dict().values(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    model.eval()
    with torch.no_grad():
        logits, layers = model.forward_intermediates(tiny.x_test)
        assert torch.equal(logits, model(tiny.x_test))
    assert logits.shape == (tiny.x_test.shape[0], tiny.num_classes)
    assert layers and all(LAYER_NAME.fullmatch(n) for n in layers)
    assert all(a.shape[0] == tiny.x_test.shape[0] and a.isfinite().all() for a in layers.values())


@pytest.mark.parametrize("name", PLUGINS)
def test_one_epoch_on_tiny_data_is_measured_and_logged(name: str, store_uri: str) -> None:
    plan = plan_run(name, {}, TINY)
    result = execute_run(plan, Tracker(store_uri), experiment="conformance")
    client = MlflowClient(store_uri)
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    steps = plan.total_epochs
    assert result.epochs == steps
    layers = list(plan.model.forward_intermediates(plan.data.x_probe[:2])[1])
    expected = set(plan.metric_names())
    assert {f"{m}/{layer}" for m in LAYER_MEASURES for layer in layers} <= expected
    assert set(run.data.metrics) == expected
    for key in expected:  # a plugin's own metrics may belong to some of its phases only
        logged = [m.step for m in client.get_metric_history(result.run_id, key)]
        every = list(range(1, steps + 1))
        assert logged == every or (key in plan.plugin.epoch_metrics and set(logged) < set(every))
    values = run.data.metrics
    assert math.isfinite(values["loss/train"]) and 0.0 <= values["acc/test"] <= 1.0
    for layer in layers:
        assert 0.0 <= values[f"mi_ty/{layer}"] <= values[f"mi_xt/{layer}"] + 1e-9
        assert values[f"mi_xt/{layer}"] <= math.log2(plan.data.y_probe.shape[0]) + 1e-9
    artifacts = {a.path for a in client.list_artifacts(result.run_id, "plots")}
    assert {"plots/information_plane.png", "plots/cka_heatmap.png"} <= artifacts
