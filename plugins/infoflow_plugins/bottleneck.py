"""``bottleneck-mlp``: input -> hidden (256) -> bottleneck (k) -> classes, ReLU.

The question of the bottleneck notebook: how does the bottleneck's width shape I(X;T) and
I(T;Y) of that layer over training? Both layers are probed, as ``hidden`` and ``bottleneck``;
the measures are of the whole layer against the whole input (not unit i against pixel i).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from infoflow_plugins.mlp import ACTIVATION_NAMES
from infoflow_track import HParams, Plugin, hparam

if TYPE_CHECKING:
    from infoflow_plugins.nets.mlp import MLP


@dataclass(frozen=True)
class BottleneckConfig(HParams):
    bottleneck: int = hparam(20, low=1, high=4096, help="width of the bottleneck layer")
    hidden: int = hparam(256, low=1, high=65536, help="width of the layer before it")
    activation: str = hparam("relu", choices=ACTIVATION_NAMES, help="hidden nonlinearity")
    lr: float = hparam(1e-3, low=1e-6, high=1.0, log=True, help="Adam learning rate")
    weight_decay: float = hparam(0.0, low=0.0, high=1.0, help="Adam L2 weight decay")


class BottleneckPlugin(Plugin):
    name = "bottleneck-mlp"
    summary = "MLP input -> 256 -> bottleneck -> classes: how width shapes the layer's MI"
    api_version = "1.0"
    Config = BottleneckConfig
    search_space: ClassVar[dict[str, dict]] = {
        "bottleneck": {"type": "int", "low": 2, "high": 128, "log": True},
        "lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
    }

    def build(self, config: BottleneckConfig, data) -> MLP:
        from infoflow_plugins.nets.mlp import MLP

        widths = (config.hidden, config.bottleneck)
        return MLP(math.prod(data.input_shape), widths, data.num_classes, config.activation,
                   names=("hidden", "bottleneck"))  # fmt: skip
