"""K replicates of one model as one packed ensemble, and the single model seen as K = 1.

:class:`Members` is what the engine and the probe evaluate: ``logits(x)`` -> (K, N, C) and
``intermediates(x)`` -> (logits, {layer: (K, N, ...)}) for x (N, ...) shared by the K members.
:class:`Single` wraps one ``nn.Module`` (K = 1). :class:`PackedEnsemble` stacks the
parameters of K models of one architecture, (K, ...) each (``torch.func.stack_module_state``),
and evaluates all K in one vectorised call (``vmap`` over ``functional_call``); its
``nn.Linear`` layers compute W x^T, keeping each member's activations (width, N) in memory,
which batched products over thin layers run several times faster than (N, width).

A model class may also evaluate K stacked copies of itself natively, without ``vmap``:
``forward_members(x)``, x (K, B, ...) (a stride-0 K axis where the members share the samples)
-> (logits (K, B, C), {layer: (K, B, ...)}), called on the module whose parameters are the
stacked ones (K, ...); :func:`member_linear` is its ``nn.Linear``. :func:`pack` checks it
against ``vmap`` of ``forward_intermediates``. Then the evaluation, the probe and, with the
plugin's default training step (cross-entropy), the training loss go through it: per-op
overhead of ``vmap`` and ``functional_call`` is most of a tiny network's step.

:func:`fit_packed` trains a packed ensemble exactly as :func:`~infoflow_track.plugin.
fit_backprop` trains each member: batches from each member's own seeded generator, the
plugin's training loss of every member in one vectorised call (``vmap``), one backward pass
of their sum (the members share no parameter, so each gets its own loss's gradient) and one
step of the plugin's optimizer, built over a module holding the stacked parameters. An
optimizer whose update is elementwise (Adam, SGD, ...) steps each member as its own would.
:func:`pack` packs K models, or says why they cannot be packed (the plugin's own ``fit``,
buffers such as batch-norm statistics, an optimizer that mixes elements, a training step
that cannot be vectorised).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from infoflow_track.plugin import Plugin

if TYPE_CHECKING:
    from infoflow_track.plugin import RunContext

_CHUNK = 8192  # samples per vectorised forward pass
#: Optimizers whose update of each element depends on that element's history alone.
ELEMENTWISE_OPTIMIZERS = (
    torch.optim.SGD, torch.optim.Adam, torch.optim.AdamW, torch.optim.RMSprop,
    torch.optim.Adagrad, torch.optim.Adamax, torch.optim.NAdam, torch.optim.RAdam,
)  # fmt: skip


class Members:
    """K models evaluated together; see the module docstring."""

    size: int
    training: bool

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """x (N, ...) -> (K, N, C), in the members' current mode."""
        raise NotImplementedError

    def intermediates(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """x (N, ...) -> (logits (K, N, C), {layer: (K, N, ...)})."""
        raise NotImplementedError

    def train(self, mode: bool = True) -> Members:
        raise NotImplementedError

    def eval(self) -> Members:
        return self.train(False)


class Single(Members):
    """One ``nn.Module`` as members, K = 1."""

    size = 1

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    @property
    def training(self) -> bool:
        return self.model.training

    def train(self, mode: bool = True) -> Single:
        self.model.train(mode)
        return self

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)[None]

    def intermediates(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        logits, layers = self.model.forward_intermediates(x)
        return logits[None], {name: act[None] for name, act in layers.items()}


@torch.no_grad()
def member_pass(members: Members, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Eval-mode forward pass of K members over x (N, ...) in chunks: (logits (K, N, C),
    {layer: (K, N, ...) float32}), each layer in the shape the model gives it."""
    was_training = members.training
    members.eval()
    logits, parts = [], {}
    try:
        for start in range(0, x.shape[0], _CHUNK):
            out, layers = members.intermediates(x[start : start + _CHUNK])
            logits.append(out)
            for name, act in layers.items():
                parts.setdefault(name, []).append(act.float())
    finally:
        members.train(was_training)
    joined = {name: chunks[0] if len(chunks) == 1 else torch.cat(chunks, dim=1)
              for name, chunks in parts.items()}  # fmt: skip
    return logits[0] if len(logits) == 1 else torch.cat(logits, dim=1), joined


def as_members(model: nn.Module | Members) -> Members:
    """``model`` itself if it is members already, else :class:`Single` of it."""
    return model if isinstance(model, Members) else Single(model)


class _Intermediates(nn.Module):
    """``forward`` of a wrapped model's ``forward_intermediates`` (for ``functional_call``)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> Any:
        return self.model.forward_intermediates(x)


class _TrainingStep(nn.Module):
    """``forward(x, y)``: the plugin's scalar training loss of the wrapped model."""

    def __init__(self, plugin: Plugin, model: nn.Module, config: Any) -> None:
        super().__init__()
        self.model = model
        self.plugin, self.config = plugin, config

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.plugin.training_step(self.model, x, y, self.config)


class _MemberLinear(nn.Linear):
    """``nn.Linear`` of one packed member, x (N, in) -> (N, out) computed as (W x^T + b)^T:
    under ``vmap`` the batched product is (K, out, in) @ (K, in, N), whose output runs along
    the long axis N, instead of (K, N, in) @ (K, in, out); the result is the same to float
    rounding."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 2:
            return F.linear(x, self.weight, self.bias)
        if self.bias is None:
            return (self.weight @ x.mT).mT
        return torch.addmm(self.bias[:, None], self.weight, x.mT).mT


def member_linear(layer: nn.Linear, h: torch.Tensor) -> torch.Tensor:
    """``layer`` of K packed members (weight (K, out, in), bias (K, out)) on each member's
    inputs h (K, in, N), features first: -> (K, out, N). A stride-0 K axis (inputs shared by
    the members) is one matrix product (K out, in) @ (in, N)."""
    k, out, width = layer.weight.shape
    if h.stride(0) == 0:
        flat = layer.weight.reshape(k * out, width)
        if layer.bias is None:
            return (flat @ h[0]).view(k, out, -1)
        return torch.addmm(layer.bias.reshape(k * out, 1), flat, h[0]).view(k, out, -1)
    if layer.bias is None:
        return layer.weight @ h
    return torch.baddbmm(layer.bias[:, :, None], layer.weight, h)


class PackedEnsemble(Members):
    """K models of one architecture with stacked parameters and buffers (K, ...).

    ``module`` is a copy of the architecture whose parameters are the stacked ones: build an
    optimizer over it as over one model, and its parameter groups hold all K members.
    """

    def __init__(self, models: Sequence[nn.Module]) -> None:
        params, buffers = stack_module_state(list(models))
        self.size = len(models)
        self.module = copy.deepcopy(models[0])
        for layer in self.module.modules():
            if type(layer) is nn.Linear:
                layer.__class__ = _MemberLinear
        trainable = {name: p.requires_grad for name, p in models[0].named_parameters()}
        for name, value in params.items():
            owner, _, attr = name.rpartition(".")
            stacked = nn.Parameter(value.detach(), requires_grad=trainable[name])
            setattr(self.module.get_submodule(owner), attr, stacked)
        self.params = dict(self.module.named_parameters())
        self.buffers = buffers
        self._forward = _Intermediates(self.module)
        self.native = callable(getattr(self.module, "forward_members", None))
        self.optimizer: torch.optim.Optimizer | None = None  # set by pack()
        self.losses: Any = None  # set by pack(): see member_losses

    @property
    def training(self) -> bool:
        return self.module.training

    def train(self, mode: bool = True) -> PackedEnsemble:
        self.module.train(mode)
        return self

    def state(self, prefix: str = "") -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """The stacked parameters (detached) and buffers, names prefixed for a wrapper."""
        params = {prefix + k: v.detach() for k, v in self.params.items()}
        return params, {prefix + k: v for k, v in self.buffers.items()}

    def intermediates(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if self.native:
            return self.native_intermediates(x)
        return self.vmap_intermediates(x)

    def native_intermediates(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The model's own ``forward_members`` on x (N, ...) shared by the K members."""
        with torch.no_grad():
            return self.module.forward_members(x.expand(self.size, *x.shape))

    def vmap_intermediates(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``vmap`` of ``forward_intermediates`` over the members, x (N, ...) shared."""
        params, buffers = self.state("model.")

        def one(p: dict, b: dict, chunk: torch.Tensor) -> Any:
            return functional_call(self._forward, {**p, **b}, (chunk,))

        parts = [vmap(one, in_dims=(0, 0, None))(params, buffers, x[start : start + _CHUNK])
                 for start in range(0, x.shape[0], _CHUNK)]  # fmt: skip
        if len(parts) == 1:
            return parts[0]
        logits = torch.cat([p[0] for p in parts], dim=1)
        layers = {name: torch.cat([p[1][name] for p in parts], dim=1) for name in parts[0][1]}
        return logits, layers

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.intermediates(x)[0]


def pack(plugin: Plugin, models: Sequence[nn.Module], config: Any, x: torch.Tensor,
         y: torch.Tensor) -> PackedEnsemble | str:  # fmt: skip
    """``models`` (K of one plugin, built with their seeds) packed with the plugin's optimizer,
    ready for :func:`fit_packed`; or why they cannot be: the plugin's own ``fit``, buffers
    (e.g. batch-norm statistics), an optimizer that mixes elements, or a training step that
    cannot be vectorised (tried on the training samples x (2, ...), y (2,))."""
    if type(plugin).fit is not Plugin.fit:
        return f"{type(plugin).__name__} trains by its own fit()"
    shapes = {(type(m), tuple((n, p.shape) for n, p in m.named_parameters())) for m in models}
    if len(shapes) > 1:
        return "the replicates' models differ in class or parameter shapes"
    buffers = [name for name, _ in models[0].named_buffers()]
    if buffers:
        return f"the model keeps buffers ({', '.join(buffers[:3])}), e.g. batch-norm statistics"
    packed = PackedEnsemble(models)
    if packed.native:
        _check_native(packed, x)
    optimizer = plugin.configure_optimizer(packed.module, config)
    if type(optimizer) not in ELEMENTWISE_OPTIMIZERS:
        return f"its optimizer {type(optimizer).__name__} is not known to update elementwise"
    _fused_where_left_to_torch(optimizer)
    losses = member_losses(plugin, packed, config)
    k = packed.size
    try:
        torch.autograd.grad(losses(x.expand(k, *x.shape), y.expand(k, *y.shape)).sum(),
                            [p for p in packed.params.values() if p.requires_grad])  # fmt: skip
    except Exception as exc:  # vmap refuses data-dependent control flow, random ops, ...
        return f"its training step cannot be vectorised ({type(exc).__name__}: {exc})"[:400]
    packed.optimizer, packed.losses = optimizer, losses
    return packed


def _fused_where_left_to_torch(optimizer: torch.optim.Optimizer) -> None:
    """Step the stacked tensors with the optimizer's fused kernel where it has one (Adam,
    AdamW, SGD, Adagrad) and the plugin left the implementation to torch (``fused`` and
    ``foreach`` None): the same update in one kernel per tensor instead of a dozen, about 3.5x
    faster for a packed MLP's Adam step on the CPU, where torch's default is a Python loop."""
    for group in optimizer.param_groups:
        free = group.get("fused", False) is None and group.get("foreach") is None
        if free and not group.get("differentiable") and not group.get("capturable"):
            group["fused"] = True


def _check_native(packed: PackedEnsemble, x: torch.Tensor) -> None:
    """Raise ``TypeError`` unless the model's ``forward_members`` gives what ``vmap`` of its
    ``forward_intermediates`` gives on x (N, ...): the same layers, shapes and values."""
    was_training = packed.training
    packed.eval()
    try:
        (logits, layers), (want, want_layers) = (packed.native_intermediates(x),
                                                 packed.vmap_intermediates(x))  # fmt: skip
    finally:
        packed.train(was_training)
    name = f"{type(packed.module).__name__}.forward_members"
    if list(layers) != list(want_layers):
        raise TypeError(
            f"{name} gives layers {list(layers)}, forward_intermediates {list(want_layers)}"
        )
    for what, got, expected in [("logits", logits, want), *((f"layer {n!r}", layers[n],
                                want_layers[n]) for n in want_layers)]:  # fmt: skip
        if got.shape != expected.shape or not torch.allclose(got, expected, rtol=1e-4, atol=1e-5):
            raise TypeError(f"{name} disagrees with forward_intermediates of each member on {what}")


def member_losses(plugin: Plugin, packed: PackedEnsemble, config: Any):
    """(x (K, B, ...), y (K, B)) -> (K,): each member's training loss (the plugin's
    ``training_step``) on its own batch, differentiable in the stacked parameters; the
    default cross-entropy of a model with ``forward_members`` is computed through it."""
    if packed.native and type(plugin).training_step is Plugin.training_step:

        def cross_entropy(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            logits = packed.module.forward_members(x)[0]  # (K, B, C)
            return F.cross_entropy(logits.transpose(1, 2), y, reduction="none").mean(dim=1)

        return cross_entropy
    step = _TrainingStep(plugin, packed.module, config)
    params = {"model." + name: p for name, p in packed.params.items()}
    buffers = {"model." + name: b for name, b in packed.buffers.items()}

    def loss(params: dict, buffers: dict, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return functional_call(step, {**params, **buffers}, (x, y))

    batched = vmap(loss, in_dims=(0, 0, 0, 0))
    return lambda x, y: batched(params, buffers, x, y)


def member_batches(ctx: RunContext, generators: Sequence[torch.Generator]):
    """One epoch of batches for K members: (x (K, B, ...), y (K, B)), member k's order drawn
    from its own generator exactly as :meth:`RunContext.batches` draws a single run's."""
    n = ctx.data.y_train.shape[0]
    size = ctx.settings.batch_size
    orders = torch.stack([torch.randperm(n, device=ctx.device, generator=g) for g in generators])
    for start in range(0, n, size):
        idx = orders[:, start : start + size]
        rows = idx.reshape(-1)  # index_select of flat rows: several times faster than x[idx]
        x = ctx.data.x_train.index_select(0, rows).view(*idx.shape, *ctx.data.x_train.shape[1:])
        yield x, ctx.data.y_train.index_select(0, rows).view(idx.shape)


def fit_packed(packed: PackedEnsemble, ctx: RunContext, generators: Sequence[torch.Generator]
               ) -> None:  # fmt: skip
    """:func:`~infoflow_track.plugin.fit_backprop` for all K members at once, member k's
    batches drawn from ``generators[k]``; ``packed`` comes from :func:`pack`."""
    for _ in range(ctx.epochs):
        packed.train()
        for x, y in member_batches(ctx, generators):
            packed.optimizer.zero_grad(set_to_none=True)
            packed.losses(x, y).sum().backward()
            packed.optimizer.step()
        ctx.end_epoch(packed)
