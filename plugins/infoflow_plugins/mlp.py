"""``mlp``: a fully connected classifier with configurable hidden widths and activation.

Every hidden layer (after its activation) is probed, named ``hidden1`` .. ``hiddenK`` from
input to output unless other names are given. Inputs of any shape are flattened. The
:class:`MLP` module is shared by the other fully connected built-ins.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from infoflow_track import HParams, Plugin, hparam

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh}


@dataclass(frozen=True)
class MLPConfig(HParams):
    widths: tuple[int, ...] = hparam(
        (256, 128, 64), low=1, high=65536, help="hidden layer widths, input side first"
    )
    activation: str = hparam("relu", choices=tuple(ACTIVATIONS), help="hidden nonlinearity")
    lr: float = hparam(1e-3, low=1e-6, high=1.0, log=True, help="Adam learning rate")
    weight_decay: float = hparam(0.0, low=0.0, high=1.0, help="Adam L2 weight decay")


class MLP(nn.Module):
    """x (B, *input_shape) -> logits (B, num_classes), through ``len(widths)`` hidden layers.

    ``names`` are the probed layers' names (default ``hidden1`` .. ``hiddenK``).
    """

    def __init__(self, in_features: int, widths: Sequence[int], num_classes: int,
                 activation: str, names: Sequence[str] | None = None) -> None:  # fmt: skip
        super().__init__()
        sizes = (in_features, *widths)
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(sizes))
        self.act = ACTIVATIONS[activation]()
        self.readout = nn.Linear(sizes[-1], num_classes)
        self.layer_names = tuple(names or (f"hidden{i + 1}" for i in range(len(widths))))

    def features(self, x: torch.Tensor, depth: int | None = None) -> torch.Tensor:
        """Activation (B, width) after the first ``depth`` hidden layers (default: all);
        ``depth=0`` is the flattened input."""
        h = x.flatten(1)
        for layer in self.hidden[:depth]:
            h = self.act(layer(h))
        return h

    def forward_intermediates(
        self, x: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(logits (B, C), {layer name: activation (B, width)})."""
        h = x.flatten(1)
        acts = {}
        for name, layer in zip(self.layer_names, self.hidden, strict=True):
            h = self.act(layer(h))
            acts[name] = h
        return self.readout(h), acts

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.readout(self.features(x))


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
        return MLP(math.prod(data.input_shape), config.widths, data.num_classes, config.activation)
