"""The per-epoch layer probe wired into a real run: metrics, CKA artifacts and figures in a
real MLflow store, and values that are the measures of the trained model's layers."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING

import numpy as np
import pytest

from infoflow_track.estimators import resolve_estimators
from infoflow_track.settings import RunSettings
from infoflow_track.tracking import Tracker

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

    from infoflow_track.probe import LayerProbe

IB12 = {"widths": (10, 7, 5, 4, 3), "activation": "tanh"}
LAYERS = [f"hidden{i}" for i in range(1, 6)]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def kde_run(tmp_path_factory: pytest.TempPathFactory):
    """Two epochs of the ib12 network with KDE (primary) and binning, recorded in a sqlite
    store."""
    from mlflow.tracking import MlflowClient

    from infoflow_track.experiment import execute_run, plan_run

    root = tmp_path_factory.mktemp("probe")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    settings = RunSettings(dataset="ib12", epochs=2, mi=("kde", "binning"), seed=3)
    plan = plan_run("mlp", IB12, settings, {"kde": {"noise_var": 0.05}})
    result = execute_run(plan, Tracker(uri), experiment="probe")
    return plan, result, MlflowClient(uri), root


def history(client: MlflowClient, run_id: str, key: str) -> dict[int, float]:
    return {m.step: m.value for m in client.get_metric_history(run_id, key)}


KEYS = ("mi_xt", "mi_ty", "ceiling_xt", "ceiling_ty", "mi_xt.lower", "mi_ty.lower",
        "mi_xt.binning", "mi_ty.binning", "ceiling_xt.binning", "ceiling_ty.binning",
        "cka_label", "cka_init")  # fmt: skip


@pytest.mark.slow
def test_every_layer_is_measured_at_initialisation_and_every_epoch(kde_run) -> None:
    _, result, client, _ = kde_run
    for layer in LAYERS:
        for kind in KEYS:
            values = history(client, result.run_id, f"{kind}/{layer}")
            assert sorted(values) == [0, 1, 2], (kind, layer)
            assert all(math.isfinite(v) for v in values.values())
        for qualifier in ("", ".binning"):
            ceiling = history(client, result.run_id, f"ceiling_xt{qualifier}/{layer}")
            assert list(ceiling.values()) == pytest.approx([12.0] * 3)  # H(X) of 4096 inputs
            mi_xt = history(client, result.run_id, f"mi_xt{qualifier}/{layer}")
            assert all(0.0 <= v <= 12.0 + 1e-4 for v in mi_xt.values())
        lower = history(client, result.run_id, f"mi_xt.lower/{layer}")
        upper = history(client, result.run_id, f"mi_xt/{layer}")
        assert all(lower[step] <= upper[step] + 1e-9 for step in upper)


@pytest.mark.slow
def test_logged_values_are_the_measures_of_the_trained_layers(kde_run) -> None:
    import torch

    from infoflow_track.measures import cka, mi_binned, mi_kde
    from infoflow_track.probe import probe_activations

    plan, result, client, _ = kde_run
    acts = probe_activations(plan.model, plan.data.x_probe)
    y = plan.data.y_probe
    labels = torch.nn.functional.one_hot(y, plan.data.num_classes).float()
    for layer, t in acts.items():
        i_xt, i_ty = mi_kde(t, y, noise_var=0.05)
        logged = {k: history(client, result.run_id, f"{k}/{layer}")[2] for k in KEYS}
        assert logged["mi_xt"] == pytest.approx(i_xt.item(), abs=1e-5)
        assert logged["mi_ty"] == pytest.approx(i_ty.item(), abs=1e-5)
        low_xt, low_ty = mi_kde(t, y, noise_var=0.05, bound="lower")
        assert logged["mi_xt.lower"] == pytest.approx(low_xt.item(), abs=1e-5)
        assert logged["mi_ty.lower"] == pytest.approx(low_ty.item(), abs=1e-5)
        b_xt, b_ty = mi_binned(t, y, n_bins=30)
        assert logged["mi_xt.binning"] == pytest.approx(b_xt.item(), abs=1e-5)
        assert logged["mi_ty.binning"] == pytest.approx(b_ty.item(), abs=1e-5)
        label = history(client, result.run_id, f"cka_label/{layer}")[2]
        assert label == pytest.approx(cka(t.double(), labels.double()).item(), abs=1e-6)  # f64


@pytest.mark.slow
def test_cka_init_compares_the_trained_layers_with_the_initial_ones(kde_run) -> None:
    from infoflow_track.experiment import plan_run
    from infoflow_track.measures import cka
    from infoflow_track.probe import probe_activations

    plan, result, client, _ = kde_run
    initial = plan_run("mlp", IB12, plan.settings).model  # same seed: the same initial weights
    before = probe_activations(initial, plan.data.x_probe)
    after = probe_activations(plan.model, plan.data.x_probe)
    for layer in LAYERS:
        logged = history(client, result.run_id, f"cka_init/{layer}")[2]
        assert logged == pytest.approx(cka(after[layer], before[layer]).item(), abs=1e-5)
        assert logged < 0.999  # two epochs moved every layer away from its start


@pytest.mark.slow
def test_estimators_and_their_options_are_logged_as_params_and_tags(kde_run) -> None:
    _, result, client, _ = kde_run
    run = client.get_run(result.run_id)
    params = run.data.params
    assert (params["mi"], params["mi.kde.noise_var"]) == ("kde,binning", "0.05")
    assert (params["mi.binning.n_bins"], params["mi.binning.bin_width"]) == ("30", "none")
    assert params["probe_size"] == "4096" and params["data.n_probe"] == "4096"
    assert run.data.tags["infoflow.mi"] == "kde,binning"
    assert "infoflow.saturated" in run.data.tags


@pytest.mark.slow
def test_cka_matrix_of_every_epoch_is_one_artifact(kde_run) -> None:
    _, result, client, root = kde_run
    names = sorted(a.path for a in client.list_artifacts(result.run_id, "cka"))
    assert names == ["cka/matrices.json"]  # one per run, written at its end
    local = Path(client.download_artifacts(result.run_id, "cka/matrices.json", str(root)))
    record = json.loads(local.read_text())
    assert record["names"] == [*LAYERS, "labels (one-hot)"] and record["replicates"] == 1
    steps = [m.step for m in client.get_metric_history(result.run_id, f"cka_label/{LAYERS[0]}")]
    assert record["epochs"] == sorted(steps) and len(record["matrices"]) == len(steps)
    for epoch, rows in zip(record["epochs"], record["matrices"], strict=True):
        matrix = np.array(rows, dtype=float)
        np.testing.assert_allclose(matrix, matrix.T)
        np.testing.assert_allclose(np.diag(matrix), 1.0, atol=1e-6)
        for i, layer in enumerate(LAYERS):
            label = history(client, result.run_id, f"cka_label/{layer}")[epoch]
            assert matrix[i, -1] == pytest.approx(label)


@pytest.mark.slow
def test_information_plane_and_heatmap_are_png_artifacts(kde_run) -> None:
    _, result, client, root = kde_run
    for name in ("plots/information_plane.png", "plots/cka_heatmap.png"):
        local = Path(client.download_artifacts(result.run_id, name, str(root)))
        assert local.read_bytes()[:8] == PNG_MAGIC and local.stat().st_size > 10_000


def probe_of(plan, *names: str, **options) -> LayerProbe:
    from infoflow_track.probe import LayerProbe

    return LayerProbe(plan.model, plan.data, resolve_estimators(names, options).estimators)


def test_probe_measures_each_layer_with_the_configured_estimators() -> None:
    import torch

    from infoflow_track.experiment import plan_run
    from infoflow_track.measures import mi_binned, mi_renyi_layer
    from infoflow_track.probe import probe_activations

    plan = plan_run("mlp", IB12, RunSettings(dataset="ib12"))
    probe = probe_of(plan, "binning", "renyi", binning={"n_bins": 10}, renyi={"samples": 256})
    metrics = probe(plan.model, SimpleNamespace(step=1))
    acts = probe_activations(plan.model, plan.data.x_probe)
    x, y = plan.data.x_probe, plan.data.y_probe
    rows = torch.linspace(0, len(y) - 1, 256).round().long()  # renyi's evenly spread samples
    for layer in LAYERS:
        i_xt, i_ty = mi_binned(acts[layer], y, n_bins=10)
        assert metrics[f"mi_xt/{layer}"] == pytest.approx(i_xt.item())
        assert metrics[f"mi_ty/{layer}"] == pytest.approx(i_ty.item())
        r_xt, r_ty = mi_renyi_layer(acts[layer][rows], y[rows], x[rows], scale=0.5)
        assert metrics[f"mi_xt.renyi/{layer}"] == pytest.approx(r_xt.item(), abs=1e-5)
        assert metrics[f"mi_ty.renyi/{layer}"] == pytest.approx(r_ty.item(), abs=1e-5)
    default = mi_binned(acts["hidden5"], y)[0].item()  # 30 bins
    assert metrics["mi_xt/hidden5"] != pytest.approx(default)  # the option matters here
    assert metrics["cka_init/hidden1"] == pytest.approx(1.0)  # not trained yet
    assert probe.steps == [1] and probe.artifacts is None


@pytest.mark.slow
def test_a_layer_that_never_leaves_its_ceiling_is_flagged_with_advice() -> None:
    from infoflow_track.experiment import plan_run

    plan = plan_run("mlp", {"widths": (64, 3)}, RunSettings(dataset="digits"))
    probe = probe_of(plan, "renyi", "binning")
    for step in (1, 2):
        probe(plan.model, SimpleNamespace(step=step))
    ceiling = math.log2(plan.data.y_probe.shape[0])  # distinct inputs: H(X) = log2 N
    assert probe.history["ceiling_xt.binning/hidden1"] == [pytest.approx(ceiling)] * 2
    assert probe.saturated() == {"binning": ["hidden1"]}  # 64 units: every sample apart
    warning = probe.saturation_warning()
    assert "hidden1 under binning" in warning and "binning.n_bins" in warning
    assert "hidden2" not in warning  # 3 units: below its ceiling


def test_probe_restores_the_training_mode() -> None:
    from infoflow_track.experiment import plan_run
    from infoflow_track.probe import probe_activations

    plan = plan_run("mlp", IB12, RunSettings(dataset="ib12"))
    plan.model.train()
    probe_activations(plan.model, plan.data.x_probe)
    assert plan.model.training


def test_probe_restores_the_training_mode_when_the_forward_pass_fails() -> None:
    from infoflow_track.experiment import plan_run
    from infoflow_track.probe import probe_activations

    plan = plan_run("mlp", IB12, RunSettings(dataset="ib12"))
    with pytest.raises(RuntimeError):
        probe_activations(plan.model, plan.data.x_probe[:, :5])  # wrong input width
    assert plan.model.training


@pytest.mark.slow
def test_a_run_whose_figures_fail_is_ended_failed(tmp_path, monkeypatch) -> None:
    from mlflow.tracking import MlflowClient

    from infoflow_track.experiment import execute_run, plan_run
    from infoflow_track.probe import LayerProbe

    def broken_finish(self, figures: bool = True) -> None:
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
    assert len(client.get_metric_history(run.info.run_id, "mi_xt/hidden1")) == 2  # kept


def test_the_information_plane_has_a_panel_per_estimator_with_its_ceilings() -> None:
    from infoflow_track.plots import information_plane

    plane = {"mi_xt": {"h1": [1.0, 2.0]}, "mi_ty": {"h1": [0.5, 0.7]},
             "ceiling_xt": {"h1": [6.5, 6.5]}, "ceiling_ty": {"h1": [1.0, 1.0]}}  # fmt: skip
    other = {**plane, "ceiling_xt": {"h1": [10.0, 10.0]}}
    fig = information_plane([0, 1], {"renyi (alpha=1.01)": plane, "binning (n_bins=30)": other})
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in panels] == ["renyi (alpha=1.01)", "binning (n_bins=30)"]
    for ax, ceiling in zip(panels, (6.5, 10.0), strict=True):
        dashed = [line for line in ax.lines if line.get_linestyle() == "--"]
        vertical = {
            line.get_xdata()[0] for line in dashed if line.get_xdata()[0] == line.get_xdata()[1]
        }
        horizontal = {
            line.get_ydata()[0] for line in dashed if line.get_ydata()[0] == line.get_ydata()[1]
        }
        assert vertical == {ceiling} and horizontal == {1.0}
