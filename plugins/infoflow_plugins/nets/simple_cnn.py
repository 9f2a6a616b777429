"""The ``simple-cnn`` module: the shared conv trunk and a linear readout."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from infoflow_plugins.nets.convnet import ConvTrunk

if TYPE_CHECKING:
    from infoflow_plugins.simple_cnn import SimpleCNNConfig


class SimpleCNN(nn.Module):
    """x (B, C, H, W) -> logits (B, num_classes); layers conv1 and conv2 probed."""

    def __init__(self, shape: tuple[int, int, int], num_classes: int, config: SimpleCNNConfig):
        super().__init__()
        self.trunk = ConvTrunk(shape, config.channels, config.kernel_size)
        self.readout = nn.Linear(self.trunk.out_features, num_classes)

    def forward_intermediates(
        self, x: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        h1, h2 = self.trunk(x)
        return self.readout(h2.flatten(1)), {"conv1": h1, "conv2": h2}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.readout(self.trunk(x)[1].flatten(1))
