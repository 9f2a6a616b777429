"""The per-epoch layer probe wired into a real run: metrics, CKA artifacts and figures in a
real MLflow store, and values that are the measures of the trained model's layers."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient

from infoflow_track.experiment import execute_run, plan_run
from infoflow_track.measures import cka, mi_binned, mi_kde
from infoflow_track.probe import LayerProbe, probe_activations
from infoflow_track.settings import RunSettings
from infoflow_track.tracking import Tracker

IB12 = {"widths": (10, 7, 5, 4, 3), "activation": "tanh"}
LAYERS = [f"hidden{i}" for i in range(1, 6)]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def kde_run(tmp_path_factory: pytest.TempPathFactory):
    """Two epochs of the ib12 network with the KDE estimator, recorded in a sqlite store."""
    root = tmp_path_factory.mktemp("probe")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    settings = RunSettings(dataset="ib12", epochs=2, mi="kde", noise_var=0.05, seed=3)
    plan = plan_run("mlp", IB12, settings)
    result = execute_run(plan, Tracker(uri), experiment="probe")
    return plan, result, MlflowClient(uri), root


def history(client: MlflowClient, run_id: str, key: str) -> dict[int, float]:
    return {m.step: m.value for m in client.get_metric_history(run_id, key)}


def test_every_layer_is_measured_every_epoch(kde_run) -> None:
    _, result, client, _ = kde_run
    for layer in LAYERS:
        for kind in ("mi_xt", "mi_ty", "cka_label", "cka_init"):
            values = history(client, result.run_id, f"{kind}/{layer}")
            assert sorted(values) == [1, 2], (kind, layer)
            assert all(math.isfinite(v) for v in values.values())
        mi_xt = history(client, result.run_id, f"mi_xt/{layer}")
        assert all(0.0 <= v <= 12.0 + 1e-4 for v in mi_xt.values())  # log2 of 4096 inputs


def test_logged_values_are_the_measures_of_the_trained_layers(kde_run) -> None:
    plan, result, client, _ = kde_run
    acts = probe_activations(plan.model, plan.data.x_probe)
    y = plan.data.y_probe
    labels = torch.nn.functional.one_hot(y, plan.data.num_classes).float()
    for layer, t in acts.items():
        i_xt, i_ty = mi_kde(t, y, noise_var=0.05)
        logged = {k: history(client, result.run_id, f"{k}/{layer}")[2] for k in ("mi_xt", "mi_ty")}
        assert logged["mi_xt"] == pytest.approx(i_xt.item(), abs=1e-5)
        assert logged["mi_ty"] == pytest.approx(i_ty.item(), abs=1e-5)
        label = history(client, result.run_id, f"cka_label/{layer}")[2]
        assert label == pytest.approx(cka(t, labels).item(), abs=1e-5)


def test_cka_init_compares_the_trained_layers_with_the_initial_ones(kde_run) -> None:
    plan, result, client, _ = kde_run
    initial = plan_run("mlp", IB12, plan.settings).model  # same seed: the same initial weights
    before = probe_activations(initial, plan.data.x_probe)
    after = probe_activations(plan.model, plan.data.x_probe)
    for layer in LAYERS:
        logged = history(client, result.run_id, f"cka_init/{layer}")[2]
        assert logged == pytest.approx(cka(after[layer], before[layer]).item(), abs=1e-5)
        assert logged < 0.999  # two epochs moved every layer away from its start


def test_estimator_settings_are_logged_as_params(kde_run) -> None:
    _, result, client, _ = kde_run
    params = client.get_run(result.run_id).data.params
    assert (params["mi"], params["noise_var"], params["bins"]) == ("kde", "0.05", "30")
    assert params["probe_size"] == "4096" and params["data.n_probe"] == "4096"


def test_cka_matrix_of_every_epoch_is_an_artifact(kde_run) -> None:
    _, result, client, root = kde_run
    names = sorted(a.path for a in client.list_artifacts(result.run_id, "cka"))
    assert names == ["cka/epoch_0001.json", "cka/epoch_0002.json"]
    local = Path(client.download_artifacts(result.run_id, "cka/epoch_0002.json", str(root)))
    record = json.loads(local.read_text())
    assert record["epoch"] == 2 and record["names"] == [*LAYERS, "labels (one-hot)"]
    matrix = np.array(record["matrix"], dtype=float)
    np.testing.assert_allclose(matrix, matrix.T)
    np.testing.assert_allclose(np.diag(matrix), 1.0, atol=1e-6)
    for i, layer in enumerate(LAYERS):
        label = history(client, result.run_id, f"cka_label/{layer}")[2]
        assert matrix[i, -1] == pytest.approx(label)


def test_information_plane_and_heatmap_are_png_artifacts(kde_run) -> None:
    _, result, client, root = kde_run
    for name in ("plots/information_plane.png", "plots/cka_heatmap.png"):
        local = Path(client.download_artifacts(result.run_id, name, str(root)))
        assert local.read_bytes()[:8] == PNG_MAGIC and local.stat().st_size > 10_000


def test_probe_bins_each_layer_with_the_run_setting() -> None:
    settings = RunSettings(dataset="ib12", bins=10)
    plan = plan_run("mlp", IB12, settings)
    probe = LayerProbe(plan.model, plan.data, settings)
    metrics = probe(plan.model, SimpleNamespace(step=1))
    acts = probe_activations(plan.model, plan.data.x_probe)
    for layer in LAYERS:
        i_xt, i_ty = mi_binned(acts[layer], plan.data.y_probe, n_bins=10)
        assert metrics[f"mi_xt/{layer}"] == pytest.approx(i_xt.item())
        assert metrics[f"mi_ty/{layer}"] == pytest.approx(i_ty.item())
    default = mi_binned(acts["hidden5"], plan.data.y_probe)[0].item()  # 30 bins
    assert metrics["mi_xt/hidden5"] != pytest.approx(default)  # the setting matters here
    assert metrics["cka_init/hidden1"] == pytest.approx(1.0)  # not trained yet
    assert probe.steps == [1] and probe.artifacts is None


def test_probe_restores_the_training_mode() -> None:
    plan = plan_run("mlp", IB12, RunSettings(dataset="ib12"))
    plan.model.train()
    probe_activations(plan.model, plan.data.x_probe)
    assert plan.model.training


def test_probe_restores_the_training_mode_when_the_forward_pass_fails() -> None:
    plan = plan_run("mlp", IB12, RunSettings(dataset="ib12"))
    with pytest.raises(RuntimeError):
        probe_activations(plan.model, plan.data.x_probe[:, :5])  # wrong input width
    assert plan.model.training


def test_a_run_whose_figures_fail_is_ended_failed(tmp_path, monkeypatch) -> None:
    def broken_finish(self) -> None:
        raise OSError("artifact store is full")

    monkeypatch.setattr(LayerProbe, "finish", broken_finish)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    plan = plan_run("mlp", IB12, RunSettings(dataset="ib12", epochs=1))
    with pytest.raises(OSError, match="artifact store is full"):
        execute_run(plan, Tracker(uri), experiment="broken-figures")
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("broken-figures").experiment_id])
    assert run.info.status == "FAILED"
    assert "artifact store is full" in run.data.tags["infoflow.error"]
    assert len(client.get_metric_history(run.info.run_id, "mi_xt/hidden1")) == 1  # kept
