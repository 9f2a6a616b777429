"""``mlp``: a fully connected classifier with configurable hidden widths and activation.

Every hidden layer (after its activation) is probed, named ``hidden1`` .. ``hiddenK`` from
input to output unless other names are given. Inputs of any shape are flattened. The
module, :class:`infoflow_plugins.nets.mlp.MLP`, is shared by the other fully connected
built-ins.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from infoflow_track import HParams, Plugin, hparam

if TYPE_CHECKING:
    from infoflow_plugins.nets.mlp import MLP

#: The hidden nonlinearities (:data:`infoflow_plugins.nets.mlp.ACTIVATIONS` has their modules).
ACTIVATION_NAMES = ("relu", "tanh")


@dataclass(frozen=True)
class MLPConfig(HParams):
    widths: tuple[int, ...] = hparam(
        (256, 128, 64), low=1, high=65536, help="hidden layer widths, input side first"
    )
    activation: str = hparam("relu", choices=ACTIVATION_NAMES, help="hidden nonlinearity")
    lr: float = hparam(1e-3, low=1e-6, high=1.0, log=True, help="Adam learning rate")
    weight_decay: float = hparam(0.0, low=0.0, high=1.0, help="Adam L2 weight decay")


class MLPPlugin(Plugin):
    name = "mlp"
    summary = "fully connected net, hidden widths and activation configurable (backprop, Adam)"
    api_version = "1.0"
    Config = MLPConfig
    search_space: ClassVar[dict[str, dict]] = {
        "lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
        "widths": {"type": "categorical", "choices": ["128", "256,128,64", "512,256,128,64,32"]},
        "activation": {"type": "categorical", "choices": ["relu", "tanh"]},
    }

    def build(self, config: MLPConfig, data) -> MLP:
        from infoflow_plugins.nets.mlp import MLP

        return MLP(math.prod(data.input_shape), config.widths, data.num_classes, config.activation)
