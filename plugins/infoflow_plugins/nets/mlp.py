"""The fully connected module shared by ``mlp``, ``bottleneck-mlp``, ``two-timescale`` and
``local-mi``."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
from torch import nn

from infoflow_track.ensemble import member_linear

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh}


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

    def forward_members(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """:meth:`forward_intermediates` of K packed members at once (parameters stacked
        (K, ...), see :mod:`infoflow_track.ensemble`): x (K, B, ...) -> (logits (K, B, C),
        {layer name: (K, B, width)}), each computed features first, (K, width, B)."""
        h = x.flatten(2).mT
        acts = {}
        for name, layer in zip(self.layer_names, self.hidden, strict=True):
            h = self.act(member_linear(layer, h))
            acts[name] = h.mT
        return member_linear(self.readout, h).mT, acts
