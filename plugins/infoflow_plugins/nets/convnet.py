"""The convolutional trunk shared by the image built-ins: two conv-ReLU-maxpool stages.

Stage sizes are derived from the data: ``same`` padding and ceil-mode pooling halve the
height and width (rounding up), so images of any size, 1 or 3 (or more) channels, fit.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class ConvTrunk(nn.Module):
    """x (B, C, H, W) -> two stages ``conv1`` (B, c, ceil(H/2), ceil(W/2)) and ``conv2``
    (B, 2c, ceil(H/4), ceil(W/4)); each stage is conv (k x k, same padding), ReLU, 2x2 max-pool.
    """

    def __init__(self, shape: tuple[int, int, int], channels: int, kernel_size: int) -> None:
        super().__init__()
        in_channels, height, width = shape
        pad = kernel_size // 2
        self.conv1 = nn.Conv2d(in_channels, channels, kernel_size, padding=pad)
        self.conv2 = nn.Conv2d(channels, 2 * channels, kernel_size, padding=pad)
        self.pool = nn.MaxPool2d(2, ceil_mode=True)
        self.act = nn.ReLU()
        out_h, out_w = (math.ceil(math.ceil(s / 2) / 2) for s in (height, width))
        self.out_features = 2 * channels * out_h * out_w  # flattened conv2 output

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(conv1 stage output, conv2 stage output)."""
        h1 = self.pool(self.act(self.conv1(x)))
        return h1, self.pool(self.act(self.conv2(h1)))
