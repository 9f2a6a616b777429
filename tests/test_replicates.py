"""Replicates: K seeds of one configuration, packed into one ensemble where the model allows.

Replicate k of a packed run must be the single run with seed ``seed + k``; the summaries are
checked against scipy's t interval, the logged run against its own per-replicate table.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
from helpers import cpu

from infoflow_track import HParams, Plugin, UserError, hparam
from infoflow_track.replicates import ReplicateTable, bound, summarise
from infoflow_track.settings import RunSettings

EPOCHS = 2


# -- summaries -----------------------------------------------------------------------------


def test_mean_sd_and_interval_match_scipy_over_the_kept_replicates() -> None:
    from scipy import stats

    rng = np.random.default_rng(0)
    values = {"acc/test": rng.normal(0.8, 0.05, 7).tolist(), "mi_xt/h": rng.random(7).tolist()}
    kept = [True, True, False, True, True, True, False]
    out = summarise(values, kept)
    for key, row in values.items():
        chosen = np.asarray(row)[np.asarray(kept)]
        low, high = stats.t.interval(0.95, len(chosen) - 1, chosen.mean(), stats.sem(chosen))
        assert out[key] == pytest.approx(chosen.mean())
        assert out[f"sd/{key}"] == pytest.approx(chosen.std(ddof=1))
        assert out[f"ci95/{key}"] == pytest.approx((high - low) / 2)
        assert bound(out, key, "lower") == pytest.approx(low)
        assert bound(out, key, "upper") == pytest.approx(high)
    assert bound(out, "acc/test", "mean") == out["acc/test"]
    assert bound(out, "nosuch", "lower") is None


def test_one_replicate_logs_its_values_alone_and_one_kept_has_no_spread() -> None:
    assert summarise({"acc/test": [0.5]}, [True]) == {"acc/test": 0.5}
    out = summarise({"acc/test": [0.5, math.nan]}, [True, False])
    assert out["acc/test"] == 0.5 and math.isnan(out["ci95/acc/test"])


def test_the_table_reads_back_with_pandas() -> None:
    import io

    import pandas as pd

    table = ReplicateTable([3, 4])
    table.add(0, {"acc/test": [0.1, 0.2]}, [True, True])
    table.add(1, {"acc/test": [0.3, math.nan], "phase": [1.0, 1.0]}, [True, False])
    frame = pd.read_csv(io.StringIO(table.csv_text()))
    assert list(frame.columns) == ["epoch", "seed", "kept", "acc/test", "phase"]
    assert frame["seed"].tolist() == [3, 4, 3, 4] and frame["kept"].tolist()[-1] == False  # noqa: E712
    assert frame["acc/test"].tolist()[:3] == [0.1, 0.2, 0.3]
    assert frame["phase"].isna().tolist() == [True, True, False, False]


# -- packed training reproduces single runs ------------------------------------------------


def _history(plugin: str, seed: int, replicates: int, mi: str = "binning,renyi"):
    from infoflow_track.engine import train
    from infoflow_track.experiment import plan_from, replicate_models
    from infoflow_track.probe import LayerProbe

    settings = {"dataset": "digits", "epochs": EPOCHS, "seed": seed, "mi": mi,
                "replicates": replicates, "device": "cpu", "batch_size": 128}  # fmt: skip
    extra = {"width": 64} if plugin == "two-timescale" else {}
    plan = plan_from(plugin, {**settings, **extra})
    model = replicate_models(plan)
    assert not isinstance(model, str), model
    probe = LayerProbe(model, plan.data, plan.estimators.estimators)
    result = train(plan.plugin, model, plan.config, plan.data, plan.settings, hooks=[probe])
    return result.history


@pytest.mark.slow
@pytest.mark.parametrize("plugin", ["mlp", "bottleneck-mlp", "two-timescale"])
def test_replicate_k_of_a_packed_run_is_the_single_run_with_seed_k(plugin: str) -> None:
    from infoflow_track.ensemble import PackedEnsemble  # noqa: F401  (packing is the point)

    k = 2
    packed = _history(plugin, 5, k)
    assert [e.step for e in packed] == list(range(EPOCHS + 1))
    for member in range(k):
        single = _history(plugin, 5 + member, 1)
        for p_epoch, s_epoch in zip(packed, single, strict=True):
            assert set(p_epoch.values) == set(s_epoch.values)
            for key, (value,) in s_epoch.values.items():
                got = p_epoch.values[key][member]
                assert got == pytest.approx(value, rel=1e-4, abs=1e-4), (member, key)
    accuracies = {tuple(e.values["acc/test"]) for e in packed[1:]}
    assert all(len(set(a)) > 1 for a in accuracies)  # the replicates really differ


def _packed_mlps(plugin=None, k: int = 3):
    from infoflow_plugins.mlp import MLPConfig, MLPPlugin

    from infoflow_track.data import load_dataset
    from infoflow_track.engine import build_model
    from infoflow_track.ensemble import pack

    data = load_dataset(RunSettings(dataset="ib12", device="cpu"), cpu())
    plugin, config = plugin or MLPPlugin(), MLPConfig(widths=(10, 7, 5, 4, 3))
    models = [build_model(plugin, config, data, seed) for seed in range(k)]
    return pack(plugin, models, config, data.x_train[:2], data.y_train[:2]), data


def test_a_native_packed_forward_and_loss_equal_vmap_of_each_member() -> None:
    """MLP.forward_members against vmap of forward_intermediates, and its cross-entropy
    and gradients against vmap of the plugin's training step."""
    import torch

    from infoflow_track.ensemble import _TrainingStep

    packed, data = _packed_mlps()
    assert packed.native
    logits, layers = packed.native_intermediates(data.x_probe)
    want, want_layers = packed.vmap_intermediates(data.x_probe)
    torch.testing.assert_close(logits, want)
    for name, act in want_layers.items():
        torch.testing.assert_close(layers[name], act)
    rows = torch.stack([torch.randperm(len(data.y_train))[:64] for _ in range(3)])  # (K, B)
    x, y = data.x_train[rows], data.y_train[rows]
    params = list(packed.params.values())
    native = packed.losses(x, y)
    grads = torch.autograd.grad(native.sum(), params)
    step = _TrainingStep(Plugin(), packed.module, None)
    one = {f"model.{n}": p for n, p in packed.params.items()}
    vmapped = torch.func.vmap(lambda p, x, y: torch.func.functional_call(step, p, (x, y)))(
        one, x, y
    )
    torch.testing.assert_close(native, vmapped)
    for got, want in zip(grads, torch.autograd.grad(vmapped.sum(), params), strict=True):
        torch.testing.assert_close(got, want)


def test_a_native_forward_that_disagrees_with_each_member_is_refused() -> None:
    from infoflow_plugins.mlp import MLPPlugin
    from infoflow_plugins.nets.mlp import MLP

    class Shifted(MLP):
        def forward_members(self, x):
            logits, acts = super().forward_members(x)
            return logits + 1e-2, acts

    class ShiftedPlugin(MLPPlugin):
        def build(self, config, data):
            model = super().build(config, data)
            model.__class__ = Shifted
            return model

    with pytest.raises(TypeError, match=r"Shifted\.forward_members disagrees .* on logits"):
        _packed_mlps(ShiftedPlugin())


def test_a_packed_optimizer_steps_fused_unless_the_plugin_chose() -> None:
    import torch
    from infoflow_plugins.mlp import MLPPlugin

    packed, _ = _packed_mlps()
    assert [g["fused"] for g in packed.optimizer.param_groups] == [True]

    class ForeachPlugin(MLPPlugin):
        def configure_optimizer(self, model, config):
            return torch.optim.Adam(model.parameters(), lr=config.lr, foreach=True)

    chosen, _ = _packed_mlps(ForeachPlugin())
    assert [(g["fused"], g["foreach"]) for g in chosen.optimizer.param_groups] == [(None, True)]


def test_packing_refusals_name_the_reason() -> None:
    import torch

    from infoflow_track.ensemble import pack

    class WithNorm(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.norm = torch.nn.BatchNorm1d(4)

    models = [WithNorm(), WithNorm()]
    x, y = torch.zeros(2, 4), torch.zeros(2, dtype=torch.long)
    assert "buffers (norm.running_mean" in pack(Plugin(), models, None, x, y)

    class OwnFit(Plugin):
        def fit(self, model, ctx):
            pass

    assert "trains by its own fit()" in pack(OwnFit(), models, None, x, y)

    class LBFGSPlugin(Plugin):
        def configure_optimizer(self, model, config):
            return torch.optim.LBFGS(model.parameters())

    linear = [torch.nn.Linear(4, 2), torch.nn.Linear(4, 2)]
    assert "LBFGS is not known to update elementwise" in pack(LBFGSPlugin(), linear, None, x, y)


# -- a whole run of replicates in a real MLflow store ----------------------------------------


@dataclass(frozen=True)
class BlowUpConfig(HParams):
    lr: float = hparam(1e-2, low=1e-6, high=1.0, help="Adam learning rate")


class BlowUpPlugin(Plugin):
    """A linear model whose seed-1 replicate starts with logits of 1e38: its loss is inf."""

    name = "blow-up"
    summary = "diverges for seed 1"
    api_version = "1.0"
    Config = BlowUpConfig
    search_space: ClassVar[dict] = {}

    def build(self, config, data):
        import torch

        scale = 1e38 if torch.initial_seed() == 1 else 1.0
        return _scaled_linear()(math.prod(data.input_shape), data.num_classes, scale)


@functools.cache
def _scaled_linear() -> type:
    """A linear layer with a fixed scale on its logits (a class made once: torch is imported
    by the tests that use it, never at collection)."""
    import torch

    class ScaledLinear(torch.nn.Module):
        def __init__(self, d: int, c: int, scale: float) -> None:
            super().__init__()
            self.fc = torch.nn.Linear(d, c)
            self.scale = torch.nn.Parameter(torch.tensor(scale), requires_grad=False)

        def forward_intermediates(self, x):
            out = self.fc(x.flatten(1)) * self.scale
            return out, {"out": out}

        def forward(self, x):
            return self.forward_intermediates(x)[0]

    return ScaledLinear


def _execute(tmp_path: Path, plugin, **settings):
    from infoflow_track.experiment import execute_run, plan_run
    from infoflow_track.registry import Entry
    from infoflow_track.tracking import Tracker

    entry = (
        plugin
        if isinstance(plugin, str)
        else Entry(plugin.name, f"{__name__}:{plugin.__name__}", "tests", "0", _loaded=plugin)
    )
    given = {"dataset": "digits", "epochs": EPOCHS, "mi": ("binning",), "device": "cpu",
             **settings}  # fmt: skip
    plan = plan_run(entry, {}, RunSettings(**given))
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}")
    return plan, tracker, lambda: execute_run(plan, tracker, experiment="reps")


@pytest.mark.slow
def test_a_run_of_replicates_logs_means_spreads_a_table_and_figures(tmp_path: Path) -> None:
    import pandas as pd
    from mlflow.tracking import MlflowClient

    plan, tracker, execute = _execute(tmp_path, "mlp", replicates=4, seed=10)
    result = execute()
    client = MlflowClient(tracker.uri)
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED" and run.data.params["replicates"] == "4"
    keys = set(run.data.metrics)
    for key in plan.metric_names():
        assert {key, f"sd/{key}", f"ci95/{key}"} <= keys
    local = client.download_artifacts(result.run_id, "replicates/metrics.csv", str(tmp_path))
    table = pd.read_csv(local)
    assert sorted(table["seed"].unique()) == [10, 11, 12, 13]
    assert sorted(table["epoch"].unique()) == list(range(EPOCHS + 1))
    for key in ("acc/test", "mi_xt/hidden1", "cka_label/hidden2"):
        logged = [m.value for m in sorted(client.get_metric_history(result.run_id, key),
                                          key=lambda m: m.step)]  # fmt: skip
        assert logged == pytest.approx(table.groupby("epoch")[key].mean().tolist())
        spread = client.get_metric_history(result.run_id, f"sd/{key}")
        by_epoch = table.groupby("epoch")[key].std(ddof=1)
        assert sorted(m.value for m in spread) == pytest.approx(sorted(by_epoch.tolist()))
    names = {a.path for a in client.list_artifacts(result.run_id, "plots")}
    assert {"plots/accuracy.png", "plots/information_plane.png"} <= names
    cka = json.loads(Path(client.download_artifacts(result.run_id, "cka/matrices.json",
                                                    str(tmp_path))).read_text())  # fmt: skip
    assert cka["epochs"] == list(range(EPOCHS + 1)) and cka["replicates"] == 4
    assert [a.path for a in client.list_artifacts(result.run_id, "cka")] == ["cka/matrices.json"]


@pytest.mark.slow
def test_a_model_that_cannot_be_packed_trains_its_replicates_in_turn_and_says_so(
    tmp_path: Path,
) -> None:
    from infoflow_track.engine import train
    from infoflow_track.experiment import plan_from
    from infoflow_track.probe import LayerProbe

    _plan, _, execute = _execute(tmp_path, "local-mi", replicates=2, seed=0)
    result = execute()
    assert sum("one after another" in w and "own fit()" in w for w in result.warnings) == 1
    single = plan_from("local-mi", {"dataset": "digits", "epochs": EPOCHS, "mi": "binning",
                                    "device": "cpu", "seed": 1})  # fmt: skip
    probe = LayerProbe(single.model, single.data, single.estimators.estimators)
    alone = train(single.plugin, single.model, single.config, single.data, single.settings,
                  hooks=[probe])  # fmt: skip
    from mlflow.tracking import MlflowClient

    local = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").download_artifacts(
        result.run_id, "replicates/metrics.csv", str(tmp_path))  # fmt: skip
    import pandas as pd

    table = pd.read_csv(local)
    seed1 = table[table["seed"] == 1].sort_values("epoch")
    expected = [e.values["acc/test"][0] for e in alone.history]
    assert seed1["acc/test"].tolist() == pytest.approx(expected)


@pytest.mark.slow
def test_a_diverging_replicate_fails_the_run_naming_its_seed(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    from infoflow_track.engine import DivergedError

    _, tracker, execute = _execute(tmp_path, BlowUpPlugin, replicates=3, seed=0)
    with pytest.raises(DivergedError, match=r"replicate seed 1\)"):
        execute()
    (run,) = MlflowClient(tracker.uri).search_runs([tracker.experiment_id("reps")])
    assert run.info.status == "FAILED" and "seed 1" in run.data.tags["infoflow.error"]


@pytest.mark.slow
def test_drop_diverged_leaves_the_seed_out_of_the_means(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    _, tracker, execute = _execute(tmp_path, BlowUpPlugin, replicates=3, seed=0,
                                   drop_diverged=True)  # fmt: skip
    result = execute()
    run = MlflowClient(tracker.uri).get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["infoflow.dropped"] == "seed 1 at epoch 0"
    assert math.isfinite(result.metrics["loss/train"])
    assert result.metrics["ci95/loss/train"] > 0  # two replicates kept: a spread


def test_replicates_are_checked_as_settings() -> None:
    with pytest.raises(UserError, match="replicates"):
        RunSettings(replicates=0)
    with pytest.raises(UserError, match="pass 4294967295"):
        RunSettings(seed=2**32 - 1, replicates=2)
