"""The ``weight-feedback`` module: the conv trunk, fc1 fed [conv features, weight summary],
fc2; and the fixed random projection of its fc weights."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from infoflow_plugins.nets.convnet import ConvTrunk
from infoflow_track import UserError

if TYPE_CHECKING:
    from infoflow_plugins.weight_feedback import WeightFeedbackConfig

MAX_PROJECTION_BYTES = 64 * 2**20


def fc_weight_count(features: int, hidden: int, classes: int, dim: int) -> int:
    """Weights of fc1 (hidden x (features + dim)) and fc2 (classes x hidden)."""
    return hidden * (features + dim) + classes * hidden


def projection(features: int, hidden: int, classes: int, config) -> torch.Tensor:
    """P (feedback_dim, fc weights) float32, N(0, 1/feedback_dim), from ``projection_seed``.

    A UserError, before anything is allocated, if P would take more than 64 MiB; it names the
    largest ``feedback_dim`` that fits.
    """
    dim = config.feedback_dim

    def size(d: int) -> int:  # bytes of P for feedback_dim d
        return 4 * d * fc_weight_count(features, hidden, classes, d)

    if size(dim) > MAX_PROJECTION_BYTES:
        # size(d) = 4 * (hidden * d^2 + hidden * (features + classes) * d): its positive root
        a, b = hidden, hidden * (features + classes)
        best = int((-b + math.sqrt(b * b + a * MAX_PROJECTION_BYTES)) / (2 * a))
        best += size(best + 1) <= MAX_PROJECTION_BYTES
        best -= size(best) > MAX_PROJECTION_BYTES  # float rounding either way
        advice = (f"use feedback_dim <= {best}" if best >= 1 else
                  "even feedback_dim=1 does not fit: use a smaller hidden")  # fmt: skip
        raise UserError(
            f"feedback=projection with feedback_dim={dim} needs a {size(dim) / 2**20:.0f} MiB "
            f"projection ({fc_weight_count(features, hidden, classes, dim)} fc weights x "
            f"{dim}); the limit is 64 MiB: {advice}, or feedback=pool"
        )
    generator = torch.Generator().manual_seed(config.projection_seed)
    n = fc_weight_count(features, hidden, classes, dim)
    return torch.randn(dim, n, generator=generator) / dim**0.5


class WeightFeedbackNet(nn.Module):
    """x (B, C, H, W) -> logits (B, num_classes); fc1 sees [conv features, weight summary]."""

    def __init__(self, shape: tuple[int, int, int], num_classes: int,
                 config: WeightFeedbackConfig) -> None:  # fmt: skip
        super().__init__()
        self.config = config
        self.trunk = ConvTrunk(shape, config.channels, config.kernel_size)
        self.summary_dim = 0 if config.feedback == "none" else config.feedback_dim
        if config.feedback == "projection":  # checked before any fc weight is allocated
            sizes = (self.trunk.out_features, config.hidden, num_classes)
            self.register_buffer("projection", projection(*sizes, config), persistent=False)
        self.fc1 = nn.Linear(self.trunk.out_features + self.summary_dim, config.hidden)
        self.fc2 = nn.Linear(config.hidden, num_classes)
        self.act = nn.ReLU()

    @property
    def fc_weight_count(self) -> int:
        return self.fc1.weight.numel() + self.fc2.weight.numel()

    def weight_summary(self) -> torch.Tensor:
        """The fed-back vector (summary_dim,), from fc1's and fc2's current weights."""
        with torch.set_grad_enabled(self.config.feedback_grad and torch.is_grad_enabled()):
            weights = torch.cat([self.fc1.weight.flatten(), self.fc2.weight.flatten()])
            if self.config.feedback == "pool":
                return F.adaptive_max_pool1d(weights[None, None], self.summary_dim)[0, 0]
            return self.projection @ weights

    def forward_intermediates(
        self, x: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        h1, h2 = self.trunk(x)
        features = h2.flatten(1)
        if self.summary_dim:
            summary = self.weight_summary().expand(x.shape[0], -1)
            features = torch.cat([features, summary], dim=1)
        hidden = self.act(self.fc1(features))
        return self.fc2(hidden), {"conv1": h1, "conv2": h2, "fc1": hidden}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_intermediates(x)[0]
