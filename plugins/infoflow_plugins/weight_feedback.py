"""``weight-feedback``: a conv net whose classifier also sees a summary of its own weights.

The weight-feedback notebook's question: does feeding a summary of the network's fully
connected weights back into its input help? The summary, a vector of ``feedback_dim``
values, is appended to the flattened conv features before ``fc1``:

- ``none``: no feedback (the plain conv net);
- ``pool``: adaptive max-pooling of all fc weights (``fc1`` then ``fc2``, row-major) into
  ``feedback_dim`` contiguous chunks;
- ``projection``: a fixed random projection P w of all fc weights w (n values), with P of
  shape (feedback_dim, n), entries N(0, 1/feedback_dim) (norms kept in expectation), drawn from
  ``projection_seed``. P is held on the device and may take at most 64 MiB; a larger one is
  refused with the largest ``feedback_dim`` that fits.

Every size is derived from the model and the data (the notebook searched dimensions by brute
force and padded with ones). ``feedback_grad`` says whether the loss differentiates through
the summary into the weights it summarises (the notebook used ``.data``: it did not).
Probed: ``conv1``, ``conv2`` and ``fc1``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from infoflow_plugins.convnet import ConvTrunk, image_shape
from infoflow_track import HParams, Plugin, UserError, hparam

FEEDBACK = ("none", "pool", "projection")
MAX_PROJECTION_BYTES = 64 * 2**20


@dataclass(frozen=True)
class WeightFeedbackConfig(HParams):
    feedback: str = hparam("pool", choices=FEEDBACK, help="summary of the fc weights fed back")
    feedback_dim: int = hparam(16, low=1, high=65536, help="length of the summary vector")
    feedback_grad: bool = hparam(
        False, help="whether gradients flow through the summary into the fc weights"
    )
    projection_seed: int = hparam(0, low=0, high=2**31 - 1, help="seed of the projection P")
    channels: int = hparam(5, low=1, high=512, help="channels of conv1; conv2 has twice as many")
    kernel_size: int = hparam(5, choices=(1, 3, 5, 7), help="square kernel, same padding")
    hidden: int = hparam(50, low=1, high=65536, help="width of fc1")
    lr: float = hparam(1e-3, low=1e-6, high=1.0, log=True, help="Adam learning rate")
    weight_decay: float = hparam(0.0, low=0.0, high=1.0, help="Adam L2 weight decay")


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


class WeightFeedbackPlugin(Plugin):
    name = "weight-feedback"
    summary = "conv net fed a summary of its own fc weights (none, max-pool or projection)"
    api_version = "1.0"
    Config = WeightFeedbackConfig
    search_space: ClassVar[dict[str, dict]] = {
        "feedback": {"type": "categorical", "choices": list(FEEDBACK)},
        "feedback_dim": {"type": "int", "low": 4, "high": 64, "log": True},
        "feedback_grad": {"type": "categorical", "choices": [False, True]},
    }

    def build(self, config: WeightFeedbackConfig, data) -> WeightFeedbackNet:
        return WeightFeedbackNet(image_shape(data, self.name), data.num_classes, config)
