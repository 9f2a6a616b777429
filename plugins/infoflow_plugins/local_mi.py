"""``local-mi``: a local, per-neuron learning rule trained greedily, layer by layer.

Each neuron i of the layer being trained minimises its own loss

    L_i = -I(y_i; c) + lambda_reg * sum_{j != i} w_i . w_j

where y_i = w_i . x + b_i is its pre-activation, c the label, and I a differentiable
estimate (soft binning, :func:`infoflow_track.measures.mi_soft_per_unit`): a hard
histogram has zero gradient, so the notebook's rule only ever trained its redundancy term.
All neurons of a layer update in one vectorised step whose gradient for row i is exactly
dL_i/dw_i: the MI estimate is per unit, and the redundancy sees the other rows as constants.
The MI estimate is invariant to the scale of w_i, so rows are kept at unit norm (projected
after each step): that bounds the redundancy term, which is otherwise lowered without end
by growing the rows apart. ``redundancy = squared`` penalises (w_i . w_j)^2 instead: the plain
dot product is lowest for anti-parallel rows, which carry the same information.

Training: layer 1 for ``epochs`` epochs, freeze; layer 2, freeze; ...; then the linear
readout by backprop (cross-entropy, Adam) for ``epochs`` epochs on the frozen layers. Every
epoch of every phase ends with ``ctx.end_epoch``, so it is measured and logged; the metric
``phase`` says which (1..K layers, K + 1 the readout). During the layer phases the readout is
still untrained, so ``acc/*`` means something only in the last phase.
``train_layers = false`` skips the layer phases: the same readout on the same architecture
left at random initialisation, the baseline the rule has to beat.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from infoflow_plugins.mlp import ACTIVATION_NAMES
from infoflow_track import HParams, Plugin, RunContext, hparam

if TYPE_CHECKING:
    from infoflow_plugins.nets.mlp import MLP

#: How row i's overlaps w_i . w_j (j != i) are penalised (see
#: :data:`infoflow_plugins.nets.local_mi.REDUNDANCY`).
REDUNDANCY_NAMES = ("dot", "squared")


@dataclass(frozen=True)
class LocalMIConfig(HParams):
    widths: tuple[int, ...] = hparam(
        (16, 16), low=1, high=65536, help="widths of the locally trained layers, input first"
    )
    activation: str = hparam("tanh", choices=ACTIVATION_NAMES, help="hidden nonlinearity")
    lambda_reg: float = hparam(1.0, low=0.0, high=100.0, help="weight of the redundancy term")
    redundancy: str = hparam(
        "dot", choices=REDUNDANCY_NAMES, help="dot: sum_{j!=i} w_i.w_j; squared: of (w_i.w_j)^2"
    )
    lr: float = hparam(1e-3, low=1e-6, high=1.0, log=True, help="Adam lr of the local rule")
    readout_lr: float = hparam(1e-2, low=1e-6, high=1.0, log=True, help="Adam lr of readout")
    mi_bins: int = hparam(16, low=2, high=256, help="soft bins per unit of the MI estimate")
    bandwidth: float = hparam(0.5, low=1e-3, high=10.0, help="soft-bin kernel width, in bin widths")
    train_layers: bool = hparam(
        True, help="false: leave the layers at random initialisation (the baseline)"
    )


class LocalMIPlugin(Plugin):
    name = "local-mi"
    summary = "greedy layer-wise local rule: max I(y_i; label) - lambda * redundancy, then readout"
    api_version = "1.0"
    Config = LocalMIConfig
    epoch_metrics = ("phase", "local/mi", "local/redundancy")
    search_space: ClassVar[dict[str, dict]] = {
        "lambda_reg": {"type": "float", "low": 1e-4, "high": 1.0, "log": True},
        "lr": {"type": "float", "low": 1e-3, "high": 1e-1, "log": True},
    }

    def build(self, config: LocalMIConfig, data) -> MLP:
        import torch

        from infoflow_plugins.nets.mlp import MLP

        model = MLP(math.prod(data.input_shape), config.widths, data.num_classes,
                    config.activation)  # fmt: skip
        with torch.no_grad():
            for layer in model.hidden:
                layer.weight.div_(layer.weight.norm(dim=1, keepdim=True))
        return model

    def total_epochs(self, config: LocalMIConfig, epochs: int) -> int:
        phases = len(config.widths) + 1 if config.train_layers else 1
        return phases * epochs

    def fit(self, model: MLP, ctx: RunContext) -> None:
        model.requires_grad_(False)
        if ctx.config.train_layers:
            for depth in range(len(model.hidden)):
                self._fit_layer(model, depth, ctx)
        self._fit_readout(model, ctx)

    def _fit_layer(self, model: MLP, depth: int, ctx: RunContext) -> None:
        """Phase ``depth + 1``: the local rule on hidden layer ``depth``, the others frozen."""
        import torch

        from infoflow_plugins.nets.local_mi import local_losses

        config, layer = ctx.config, model.hidden[depth]
        layer.requires_grad_(True)
        optimizer = torch.optim.Adam(layer.parameters(), lr=config.lr)
        for _ in range(ctx.epochs):
            sums = torch.zeros(2, device=ctx.device)
            batches = 0
            for x, y in ctx.batches():
                with torch.no_grad():
                    inputs = model.features(x, depth)
                mi, redundancy = local_losses(
                    layer(inputs), y, layer.weight, config, ctx.data.num_classes
                )
                loss = (config.lambda_reg * redundancy - mi).sum()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                with torch.no_grad():
                    layer.weight.div_(layer.weight.norm(dim=1, keepdim=True).clamp_min(1e-12))
                    sums += torch.stack([mi.mean(), redundancy.mean()])
                batches += 1
            mean_mi, mean_redundancy = (sums / batches).tolist()
            extra = {"phase": depth + 1, "local/mi": mean_mi, "local/redundancy": mean_redundancy}
            ctx.end_epoch(model, extra)
        layer.requires_grad_(False)

    def _fit_readout(self, model: MLP, ctx: RunContext) -> None:
        """Last phase: the linear readout by backprop on the frozen layers."""
        import torch
        import torch.nn.functional as F

        model.readout.requires_grad_(True)
        optimizer = torch.optim.Adam(model.readout.parameters(), lr=ctx.config.readout_lr)
        for _ in range(ctx.epochs):
            for x, y in ctx.batches():
                with torch.no_grad():
                    features = model.features(x)
                loss = F.cross_entropy(model.readout(features), y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            ctx.end_epoch(model, {"phase": len(model.hidden) + 1})
