"""The training loop: reproducibility, batching, evaluation, hooks, custom fits, divergence."""

from __future__ import annotations

import math

import numpy as np
import pytest
from helpers import cpu

from infoflow_track.data import load_dataset
from infoflow_track.settings import RunSettings

SETTINGS = RunSettings(dataset="digits", epochs=2, batch_size=128)


@pytest.fixture(scope="module")
def digits():
    return load_dataset(SETTINGS, cpu())


def _train(data, settings=SETTINGS, plugin=None, **kwargs):
    from infoflow_plugins.mlp import MLPConfig, MLPPlugin

    from infoflow_track.engine import build_model, train

    plugin, config = plugin or MLPPlugin(), MLPConfig(widths=(32,))
    model = build_model(plugin, config, data, settings.seed)
    return train(plugin, model, config, data, settings, **kwargs)


def test_same_seed_same_run_other_seed_other_run(digits) -> None:
    a, b = _train(digits), _train(digits)
    assert a.metrics == b.metrics
    c = _train(digits, RunSettings(dataset="digits", epochs=2, batch_size=128, seed=1))
    assert c.metrics["loss/train"] != a.metrics["loss/train"]


def test_every_epoch_is_a_permutation_of_the_training_set(digits) -> None:
    import torch
    from infoflow_plugins.mlp import MLPPlugin

    seen = []

    class Recorder(MLPPlugin):
        def fit(self, model, ctx):
            for _ in range(2):
                ys = [y for _, y in ctx.batches()]
                sizes = [len(y) for y in ys]
                assert max(sizes) == ctx.settings.batch_size and sum(sizes) == len(digits.y_train)
                seen.append(torch.cat(ys))
                ctx.end_epoch(model)

    _train(digits, plugin=Recorder())
    for order in seen:
        assert torch.equal(order.sort().values, digits.y_train.sort().values)
    assert not torch.equal(seen[0], seen[1])  # a fresh permutation each epoch


def test_batch_order_follows_the_seed(digits) -> None:
    import torch
    from infoflow_plugins.mlp import MLPConfig, MLPPlugin

    from infoflow_track.engine import build_model, train

    orders = {}

    class Recorder(MLPPlugin):
        def fit(self, model, ctx):
            orders.setdefault(ctx.settings.seed, []).append(
                torch.cat([y for _, y in ctx.batches()])
            )
            ctx.end_epoch(model)

    for seed in (0, 0, 1):
        settings = RunSettings(dataset="digits", epochs=1, batch_size=128, seed=seed)
        model = build_model(MLPPlugin(), MLPConfig(widths=(8,)), digits, seed=0)  # same init
        train(Recorder(), model, MLPConfig(widths=(8,)), digits, settings)
    assert torch.equal(orders[0][0], orders[0][1])
    assert not torch.equal(orders[0][0], orders[1][0])


def test_model_check_leaves_batch_norm_statistics_alone(digits) -> None:
    import torch
    from infoflow_plugins.mlp import MLPConfig, MLPPlugin

    from infoflow_track.engine import build_model

    class WithBatchNorm(MLPPlugin):
        def build(self, config, data):
            model = super().build(config, data)
            model.norm = torch.nn.BatchNorm1d(64)
            inner = model.forward_intermediates
            model.forward_intermediates = lambda x: inner(model.norm(x.flatten(1)))
            return model

    model = build_model(WithBatchNorm(), MLPConfig(widths=(8,)), digits, seed=0)
    assert model.norm.num_batches_tracked == 0 and model.training


def test_evaluate_matches_an_independent_computation(digits) -> None:
    import torch
    from infoflow_plugins.mlp import MLPConfig, MLPPlugin

    from infoflow_track.engine import evaluate

    torch.manual_seed(0)
    model = MLPPlugin().build(MLPConfig(widths=(16,)), digits)
    acc, loss = evaluate(model, digits.x_test, digits.y_test)
    with torch.no_grad():
        logits = model(digits.x_test).double().numpy()
    y = digits.y_test.numpy()
    log_softmax = logits - logits.max(1, keepdims=True)
    log_softmax -= np.log(np.exp(log_softmax).sum(1, keepdims=True))
    assert acc == pytest.approx(float((logits.argmax(1) == y).mean()))
    assert loss == pytest.approx(float(-log_softmax[np.arange(len(y)), y].mean()), rel=1e-5)


def test_scores_read_off_the_probe_pass_equal_each_split_evaluated(digits) -> None:
    """Where the probe set holds every sample, the epoch end evaluates from its one pass."""
    import torch
    from infoflow_plugins.mlp import MLPConfig, MLPPlugin

    from infoflow_track.engine import EpochPass, build_model, evaluate, evaluate_splits
    from infoflow_track.ensemble import as_members, pack

    assert digits.probe_train is not None  # digits' probe holds all its samples by default
    plugin, config = MLPPlugin(), MLPConfig(widths=(16, 8))
    models = [build_model(plugin, config, digits, seed) for seed in (0, 1, 2)]
    packed = pack(plugin, models, config, digits.x_train[:2], digits.y_train[:2])
    for model in (models[0], packed):
        members = as_members(model)
        shared = EpochPass(members, digits)
        found = evaluate_splits(members, digits, shared)
        (acc_train, loss_train), (acc_test, loss_test) = (
            evaluate(model, digits.x_train, digits.y_train),
            evaluate(model, digits.x_test, digits.y_test),
        )
        for got, want in zip(found, (acc_train, acc_test, loss_train, loss_test), strict=True):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
        assert shared.layers["hidden1"].shape == (members.size, len(digits.y_probe), 16)


def test_custom_fit_phases_hooks_and_listeners_share_one_epoch_clock(digits) -> None:
    """A non-backprop rule: two phases, each calling end_epoch; hooks add metrics."""
    from infoflow_plugins.mlp import MLPPlugin

    heard = []

    class TwoPhases(MLPPlugin):
        def fit(self, model, ctx):
            for _phase in range(2):
                for _ in range(ctx.epochs):
                    ctx.end_epoch(model)

    result = _train(
        digits,
        plugin=TwoPhases(),
        hooks=[lambda model, ctx: {"probe/n": float(ctx.data.x_probe.shape[0])}],
        listeners=[lambda step, metrics: heard.append((step, dict(metrics)))],
    )
    assert [step for step, _ in heard] == [1, 2, 3, 4]
    assert result.steps == 4
    assert all(m["probe/n"] == 1797 for _, m in heard)
    assert {"acc/train", "acc/test", "loss/train", "loss/test"} <= set(heard[0][1])


def test_a_fit_logs_its_declared_metrics_with_the_epoch_and_no_others(digits) -> None:
    from infoflow_plugins.mlp import MLPPlugin

    heard = []

    class Phased(MLPPlugin):
        epoch_metrics = ("phase",)

        def fit(self, model, ctx):
            for phase in (1, 2):
                ctx.end_epoch(model, {"phase": phase})
            ctx.end_epoch(model, {"undeclared": 1.0})

    with pytest.raises(TypeError, match=r"undeclared metrics \['undeclared'\]"):
        _train(digits, plugin=Phased(), listeners=[lambda s, m: heard.append(m["phase"])])
    assert heard == [1.0, 2.0]


def test_untrained_model_is_at_chance_and_training_learns(digits) -> None:
    from infoflow_plugins.mlp import MLPPlugin

    class Untrained(MLPPlugin):
        def fit(self, model, ctx):
            ctx.end_epoch(model)

    before = _train(digits, plugin=Untrained()).metrics
    after = _train(digits).metrics
    assert before["acc/test"] < 0.35  # 10 classes: chance is 0.1
    assert after["acc/test"] > before["acc/test"] + 0.3
    assert after["loss/train"] < before["loss/train"]
    assert math.isclose(before["loss/train"], math.log(10), rel_tol=0.15)


def test_nan_loss_stops_the_run_as_diverged(digits) -> None:
    from infoflow_plugins.mlp import MLPPlugin

    from infoflow_track.engine import DivergedError

    class Diverging(MLPPlugin):
        def training_step(self, model, x, y, config):
            return super().training_step(model, x, y, config) * float("nan")

    measured = []

    def hook(model, ctx):
        measured.append(ctx.step)
        return {}

    heard = []
    with pytest.raises(DivergedError, match="epoch 1"):
        _train(digits, plugin=Diverging(), hooks=[hook], listeners=[lambda s, m: heard.append(m)])
    assert measured == [0]  # the initialisation is measured, the diverged model is not
    assert len(heard) == 1 and math.isnan(heard[0]["loss/train"])  # logged, then stopped


@pytest.mark.parametrize("name", ["conv 1", "h(1)", "", "x" * 101, "a/b"])
def test_layer_names_that_cannot_be_metric_keys_break_the_contract(digits, name: str) -> None:
    from infoflow_plugins.mlp import MLPConfig, MLPPlugin

    from infoflow_track.engine import build_model

    class OddNames(MLPPlugin):
        def build(self, config, data):
            model = super().build(config, data)
            inner = model.forward_intermediates
            model.forward_intermediates = lambda x: (inner(x)[0], {name: x.flatten(1)})
            return model

    with pytest.raises(TypeError, match="cannot be part of a metric key"):
        build_model(OddNames(), MLPConfig(widths=(8,)), digits, seed=0)


def test_a_fit_that_never_ends_an_epoch_is_an_error(digits) -> None:
    from infoflow_plugins.mlp import MLPPlugin

    class Silent(MLPPlugin):
        def fit(self, model, ctx):
            pass

    with pytest.raises(RuntimeError, match=r"never called ctx.end_epoch"):
        _train(digits, plugin=Silent())


def test_training_on_cuda_keeps_data_and_model_on_the_device() -> None:
    import torch

    if not torch.cuda.is_available():  # asked when it runs: collecting imports no torch
        pytest.skip("needs a CUDA device")
    settings = RunSettings(dataset="digits", epochs=1, device="cuda")
    data = load_dataset(settings, torch.device("cuda"))
    assert data.x_train.is_cuda and data.x_probe.is_cuda
    result = _train(data, settings)
    assert result.metrics["acc/test"] > 0.3
