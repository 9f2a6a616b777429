"""``two-timescale``: one wide hidden layer learning slower (or faster) than its readout.

The question of the two-timescale notebook: with a wide hidden layer (2000 units), how does
the ratio of the hidden layer's learning rate to the readout's change how well the hidden
kernel aligns with the labels? That alignment is ``cka_label/hidden`` (linear CKA between
the hidden representation and the one-hot labels), measured every epoch on the probe set.
SGD with two parameter groups: hidden at ``lr * lr_ratio``, readout at ``lr``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from infoflow_plugins.mlp import ACTIVATION_NAMES
from infoflow_track import HParams, Plugin, hparam

if TYPE_CHECKING:
    import torch

    from infoflow_plugins.nets.mlp import MLP


@dataclass(frozen=True)
class TwoTimescaleConfig(HParams):
    width: int = hparam(2000, low=1, high=65536, help="hidden layer width")
    activation: str = hparam("relu", choices=ACTIVATION_NAMES, help="hidden nonlinearity")
    lr: float = hparam(1e-2, low=1e-6, high=10.0, log=True, help="readout SGD learning rate")
    lr_ratio: float = hparam(
        0.1, low=0.0, high=1000.0, help="hidden lr / readout lr (0 freezes the hidden layer)"
    )
    momentum: float = hparam(0.0, low=0.0, high=0.999, help="SGD momentum, both groups")


class TwoTimescalePlugin(Plugin):
    name = "two-timescale"
    summary = "wide hidden layer with its own learning rate (lr_ratio x the readout's), SGD"
    api_version = "1.0"
    Config = TwoTimescaleConfig
    search_space: ClassVar[dict[str, dict]] = {
        "lr_ratio": {"type": "float", "low": 1e-3, "high": 10.0, "log": True},
        "lr": {"type": "float", "low": 1e-3, "high": 1e-1, "log": True},
    }

    def build(self, config: TwoTimescaleConfig, data) -> MLP:
        from infoflow_plugins.nets.mlp import MLP

        return MLP(math.prod(data.input_shape), (config.width,), data.num_classes,
                   config.activation, names=("hidden",))  # fmt: skip

    def configure_optimizer(self, model: MLP, config: TwoTimescaleConfig) -> torch.optim.SGD:
        import torch

        groups = [
            {"params": model.hidden.parameters(), "lr": config.lr * config.lr_ratio},
            {"params": model.readout.parameters(), "lr": config.lr},
        ]
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum)
