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
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

import torch
import torch.nn.functional as F

from infoflow_track.data import Dataset
from infoflow_track.ensemble import Members, PackedEnsemble, as_members, fit_packed, member_pass
from infoflow_track.names import EPOCH_METRICS, LAYER_NAME
from infoflow_track.plugin import Plugin, RunContext
from infoflow_track.replicates import seeds_of, summarise
from infoflow_track.settings import RunSettings

#: An epoch-end hook gets the model (one module, or packed replicates) and the run context
#: and returns metrics to log: a float each, or K floats each for K packed replicates.
EpochHook = Callable[[Any, RunContext], Mapping[str, Any]]
#: A listener gets (step, metrics of that step) after they are logged.
EpochListener = Callable[[int, Mapping[str, float]], None]

_EVAL_CHUNK = 8192  # samples per forward pass when evaluating


class DivergedError(RuntimeError):
    """The training loss became NaN or infinite; ``history`` holds the epochs up to then."""

    def __init__(self, message: str, history: Sequence[EpochValues] = ()) -> None:
        super().__init__(message)
        self.history = list(history)


class StopEarly(Exception):
    """Raised by an epoch listener to end training after that epoch (a pruner's decision).

    :func:`train` returns normally with the epochs done so far; the message says why.
    """


class MetricSink(Protocol):
    """Where epoch metrics go; the tracking run logger satisfies it."""

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None: ...


class EpochValues(NamedTuple):
    """One epoch end's values of each replicate: {key: K floats}, and which were kept."""

    step: int
    values: dict[str, list[float]]
    kept: tuple[bool, ...]


@dataclass(frozen=True)
class TrainResult:
    metrics: dict[str, float]  # each metric's latest mean (a plugin's may skip epochs)
    steps: int  # epochs completed, over all phases
    stopped: str | None = None  # why a listener stopped training early, if it did
    history: list[EpochValues] = field(default_factory=list)  # every epoch end, step 0 first
    dropped: dict[int, int] = field(default_factory=dict)  # diverged seed -> its epoch


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
def evaluate(model: torch.nn.Module | Members, x: torch.Tensor, y: torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """(accuracy in [0, 1], mean cross-entropy in nats) of each of K members on x (N, ...),
    y (N,): two (K,) float64 tensors on x's device (K = 1 for one module)."""
    members = as_members(model)
    was_training = members.training
    members.eval()
    found = [_scores(members.logits(x[start : start + _EVAL_CHUNK]), y[start : start + _EVAL_CHUNK])
             for start in range(0, x.shape[0], _EVAL_CHUNK)]  # fmt: skip
    members.train(was_training)
    correct, loss = (torch.stack(parts).sum(dim=0) for parts in zip(*found, strict=True))
    return correct / x.shape[0], loss / x.shape[0]


def _mean_scores(logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(accuracy, mean cross-entropy in nats) of each member, (K,) float64, from logits
    (K, N, C) against y (N,)."""
    correct, loss = _scores(logits, y)
    return correct / y.shape[0], loss / y.shape[0]


def _scores(logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(correct predictions, summed cross-entropy in nats) of each member, (K,) float64 each,
    from logits (K, N, C) against y (N,)."""
    logits = logits.float().contiguous()  # packed members give a layout argmax reads slowly
    target = y.expand(logits.shape[:2])
    losses = F.cross_entropy(logits.transpose(1, 2), target, reduction="none")  # (K, N)
    correct = (logits.argmax(dim=2) == target).sum(dim=1)
    return correct.double(), losses.sum(dim=1).double()


class EpochPass:
    """The members' eval-mode forward pass over the probe set at one epoch end, made once
    when first asked for (:func:`~infoflow_track.ensemble.member_pass`): the probe reads its
    layers, and the evaluation its logits where the probe set holds every train and test
    sample (``data.probe_train``)."""

    def __init__(self, members: Members, data: Dataset) -> None:
        self.members, self.x = members, data.x_probe
        self._out: tuple[torch.Tensor, dict[str, torch.Tensor]] | None = None

    def _result(self) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if self._out is None:
            self._out = member_pass(self.members, self.x)
        return self._out

    @property
    def logits(self) -> torch.Tensor:
        """(K, N_probe, C)."""
        return self._result()[0]

    @property
    def layers(self) -> dict[str, torch.Tensor]:
        """{layer: (K, N_probe, ...) float32}."""
        return self._result()[1]


def evaluate_splits(members: Members, data: Dataset, shared: EpochPass) -> list[torch.Tensor]:
    """[accuracy on train, on test, mean cross-entropy on train, on test], (K,) float64 each:
    read off the shared pass where the probe set holds every sample, else evaluated."""
    splits = ((data.x_train, data.y_train, data.probe_train),
              (data.x_test, data.y_test, data.probe_test))  # fmt: skip
    if data.probe_train is None:
        found = [evaluate(members, x, y) for x, y, _ in splits]
    else:
        found = [_mean_scores(shared.logits.index_select(1, rows), y) for _, y, rows in splits]
    (acc_train, loss_train), (acc_test, loss_test) = found
    return [acc_train, acc_test, loss_train, loss_test]


def train(
    plugin: Plugin,
    model: torch.nn.Module | PackedEnsemble,
    config: Any,
    data: Dataset,
    settings: RunSettings,
    *,
    sink: MetricSink | None = None,
    hooks: Sequence[EpochHook] = (),
    listeners: Sequence[EpochListener] = (),
) -> TrainResult:
    """Fit ``model`` with the plugin; every epoch end is evaluated, hooked, logged, heard.

    ``model`` is one module (seed ``settings.seed``) or a :class:`PackedEnsemble` of K
    replicates (seeds ``settings.seed + k``), trained by :func:`fit_packed`; the sink and the
    listeners get each metric's mean over the replicates and its spread keys (see
    :mod:`infoflow_track.replicates`). A replicate whose training loss turns non-finite fails
    the run, naming its seed, unless ``settings.drop_diverged`` (with K >= 2) leaves it out
    from that epoch on.

    The model at initialisation is evaluated, hooked and logged as step 0 first (listeners
    hear epochs 1, 2, ... only). A listener may raise :class:`StopEarly` to end training
    after the epoch it heard.
    """
    device = data.device
    members = as_members(model)
    seeds = seeds_of(settings.seed, members.size)
    generators = [torch.Generator(device=device).manual_seed(s) for s in seeds]
    kept = [True] * members.size
    dropped: dict[int, int] = {}  # seed -> epoch it diverged on
    history: list[EpochValues] = []
    last: dict[str, float] = {}

    def on_epoch_end(model: Any, step: int, extra: Mapping[str, float]) -> dict[str, float]:
        unknown = set(extra) - set(plugin.epoch_metrics)
        if unknown:
            raise TypeError(
                f"{type(plugin).__name__} logged undeclared metrics {sorted(unknown)}: list "
                "them in its epoch_metrics"
            )
        shared = EpochPass(as_members(model), data)
        rows = torch.stack(evaluate_splits(shared.members, data, shared)).cpu().tolist()
        values = dict(zip(EPOCH_METRICS, rows, strict=True))
        values.update({name: [float(value)] * len(kept) for name, value in extra.items()})
        diverged = [s for s, loss, keep in zip(seeds, rows[2], kept, strict=True)
                    if keep and not math.isfinite(loss)]  # fmt: skip
        if diverged and settings.drop_diverged and len(seeds) > 1 and len(diverged) < sum(kept):
            for seed in diverged:
                kept[seeds.index(seed)] = False
                dropped[seed] = step
            diverged = []
        ctx.epoch_pass = shared
        try:
            for hook in () if diverged else hooks:  # no measures of a diverged model
                values.update({k: _per_member(v, len(kept)) for k, v in hook(model, ctx).items()})
        finally:
            ctx.epoch_pass = None
        metrics = summarise(values, kept)
        if sink is not None:
            sink.log_metrics(metrics, step)
        history.append(EpochValues(step, values, tuple(kept)))
        for listener in listeners if step else ():  # initialisation is measured, not heard
            listener(step, metrics)
        last.update(metrics)  # a plugin metric of an earlier phase keeps its latest value
        if diverged:
            loss = rows[2][seeds.index(diverged[0])]
            who = f" (replicate seed {diverged[0]})" if len(seeds) > 1 else ""
            raise DivergedError(f"training loss is {loss} at epoch {step}{who}", history)
        return metrics

    ctx = RunContext(config, data, settings, device, generators[0], on_epoch_end)
    on_epoch_end(model, 0, {})  # step 0: the model at initialisation
    try:
        if isinstance(model, PackedEnsemble):
            fit_packed(model, ctx, generators)
        else:
            plugin.fit(model, ctx)
    except StopEarly as stop:
        return TrainResult(dict(last), ctx.step, str(stop), history, dict(dropped))
    if ctx.step == 0:
        raise RuntimeError(f"{type(plugin).__name__}.fit never called ctx.end_epoch(model)")
    return TrainResult(dict(last), ctx.step, None, history, dict(dropped))


def merge_histories(histories: Sequence[Sequence[EpochValues]]) -> list[EpochValues]:
    """The epochs of K replicates trained one by one (one member each) as K-member epochs;
    a replicate that stopped early (diverged) is NaN and not kept from there on."""
    longest = max(histories, key=len)
    merged = []
    for i, epoch in enumerate(longest):
        here = [h[i] if i < len(h) else None for h in histories]
        values = {key: [e.values.get(key, [math.nan])[0] if e else math.nan for e in here]
                  for key in epoch.values}  # fmt: skip
        kept = tuple(bool(e and e.kept[0] and math.isfinite(e.values["loss/train"][0]))
                     for e in here)  # fmt: skip
        merged.append(EpochValues(epoch.step, values, kept))
    return merged


def _per_member(value: Any, k: int) -> list[float]:
    """A hook's value of one metric as K floats: a sequence of K, or one value for all."""
    if isinstance(value, (list, tuple)):
        return [float(v) for v in value]
    return [float(value)] * k
