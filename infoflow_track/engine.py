"""The one training loop every run goes through, and its epoch-end hooks.

``build_model`` builds the plugin's model (seeded) and checks that it exposes its probed
layers; ``train`` hands the plugin a :class:`RunContext` and lets it fit the model.
Each ``ctx.end_epoch(model)`` evaluates accuracy and loss on train and test, runs the
epoch-end hooks (measures attach here), logs every metric as one batch with step = epoch and
tells the listeners (progress display, pruning); the model at initialisation is evaluated,
measured and logged as step 0. A non-finite loss on the training split, evaluated at the
epoch end, stops the run.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
import torch.nn.functional as F

from infoflow_track.data import Dataset
from infoflow_track.names import EPOCH_METRICS, LAYER_NAME
from infoflow_track.plugin import Plugin, RunContext
from infoflow_track.settings import RunSettings

#: An epoch-end hook gets the model and the run context and returns metrics to log.
EpochHook = Callable[[torch.nn.Module, RunContext], Mapping[str, float]]
#: A listener gets (step, metrics of that step) after they are logged.
EpochListener = Callable[[int, Mapping[str, float]], None]

_EVAL_CHUNK = 8192  # samples per forward pass when evaluating


class DivergedError(RuntimeError):
    """The training loss became NaN or infinite."""


class StopEarly(Exception):
    """Raised by an epoch listener to end training after that epoch (a pruner's decision).

    :func:`train` returns normally with the epochs done so far; the message says why.
    """


class MetricSink(Protocol):
    """Where epoch metrics go; the tracking run logger satisfies it."""

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None: ...


@dataclass(frozen=True)
class TrainResult:
    metrics: dict[str, float]  # each metric's latest value (a plugin's may skip epochs)
    steps: int  # epochs completed, over all phases
    stopped: str | None = None  # why a listener stopped training early, if it did


def build_model(plugin: Plugin, config: Any, data: Dataset, seed: int) -> torch.nn.Module:
    """The plugin's model on ``data.device``, initialised from ``seed``, contract checked.

    Raises ``TypeError`` if the model does not map x (B, ...) to logits (B, num_classes)
    and named activations (B, ...) through ``forward_intermediates``, or if a layer name
    cannot be part of a metric key.
    """
    torch.manual_seed(seed)
    model = plugin.build(config, data).to(data.device)
    if not callable(getattr(model, "forward_intermediates", None)):
        raise TypeError(f"{type(model).__name__} has no forward_intermediates(x)")
    x = data.x_train[:2]  # a stratified split holds at least 2 training samples
    model.eval()  # no batch-norm statistics are updated by the check
    with torch.no_grad():
        out = model.forward_intermediates(x)
    model.train()
    if not (isinstance(out, tuple) and len(out) == 2 and isinstance(out[1], dict) and out[1]):
        raise TypeError("forward_intermediates(x) must return (logits, {layer_name: activation})")
    logits, layers = out
    if tuple(logits.shape) != (x.shape[0], data.num_classes):
        raise TypeError(
            f"logits have shape {tuple(logits.shape)} for {x.shape[0]} samples, expected "
            f"(B, {data.num_classes})"
        )
    for name, act in layers.items():
        ok = isinstance(name, str) and isinstance(act, torch.Tensor) and act.shape[0] == x.shape[0]
        if not ok:
            raise TypeError(f"layer {name!r} is not a (B, ...) tensor named by a string")
        if not LAYER_NAME.fullmatch(name):
            raise TypeError(
                f"layer name {name!r} cannot be part of a metric key: use 1-100 letters, "
                "digits, '_', '-' and '.'"
            )
    return model


@torch.no_grad()
def evaluate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """(accuracy in [0, 1], mean cross-entropy in nats) of ``model`` on x (N, ...), y (N,)."""
    was_training = model.training
    model.eval()
    correct = torch.zeros((), device=x.device)
    loss = torch.zeros((), device=x.device)
    for start in range(0, x.shape[0], _EVAL_CHUNK):
        logits = model(x[start : start + _EVAL_CHUNK]).float()
        target = y[start : start + _EVAL_CHUNK]
        loss += F.cross_entropy(logits, target, reduction="sum")
        correct += (logits.argmax(dim=1) == target).sum()
    model.train(was_training)
    n = max(x.shape[0], 1)
    return correct.item() / n, loss.item() / n


def train(
    plugin: Plugin,
    model: torch.nn.Module,
    config: Any,
    data: Dataset,
    settings: RunSettings,
    *,
    sink: MetricSink | None = None,
    hooks: Sequence[EpochHook] = (),
    listeners: Sequence[EpochListener] = (),
) -> TrainResult:
    """Fit ``model`` with the plugin; every epoch end is evaluated, hooked, logged, heard.

    The model at initialisation is evaluated, hooked and logged as step 0 first (listeners
    hear epochs 1, 2, ... only). A listener may raise :class:`StopEarly` to end training
    after the epoch it heard.
    """
    device = data.device
    generator = torch.Generator(device=device).manual_seed(settings.seed)
    last: dict[str, float] = {}

    def on_epoch_end(
        model: torch.nn.Module, step: int, extra: Mapping[str, float]
    ) -> dict[str, float]:
        unknown = set(extra) - set(plugin.epoch_metrics)
        if unknown:
            raise TypeError(
                f"{type(plugin).__name__} logged undeclared metrics {sorted(unknown)}: list "
                "them in its epoch_metrics"
            )
        acc_train, loss_train = evaluate(model, data.x_train, data.y_train)
        acc_test, loss_test = evaluate(model, data.x_test, data.y_test)
        values = (acc_train, acc_test, loss_train, loss_test)
        metrics = dict(zip(EPOCH_METRICS, values, strict=True))
        metrics.update({name: float(value) for name, value in extra.items()})
        diverged = not math.isfinite(loss_train)
        for hook in () if diverged else hooks:  # no measures of a diverged model
            metrics.update(hook(model, ctx))
        if sink is not None:
            sink.log_metrics(metrics, step)
        for listener in listeners if step else ():  # initialisation is measured, not heard
            listener(step, metrics)
        last.update(metrics)  # a plugin metric of an earlier phase keeps its latest value
        if diverged:
            raise DivergedError(f"training loss is {loss_train} at epoch {step}")
        return metrics

    ctx = RunContext(config, data, settings, device, generator, on_epoch_end)
    on_epoch_end(model, 0, {})  # step 0: the model at initialisation
    try:
        plugin.fit(model, ctx)
    except StopEarly as stop:
        return TrainResult(dict(last), ctx.step, stopped=str(stop))
    if ctx.step == 0:
        raise RuntimeError(f"{type(plugin).__name__}.fit never called ctx.end_epoch(model)")
    return TrainResult(dict(last), ctx.step)
