"""The ``local-mi`` rule's per-neuron losses (torch)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from infoflow_track.measures import mi_soft_per_unit

if TYPE_CHECKING:
    from infoflow_plugins.local_mi import LocalMIConfig

#: How row i's overlaps w_i . w_j (j != i) are penalised: the notebook's plain sum, which
#: rewards an anti-parallel copy (w_j = -w_i) as much as it punishes a parallel one, or the
#: sum of squares, which punishes both.
REDUNDANCY = {"dot": lambda overlaps: overlaps, "squared": torch.square}


def local_losses(
    pre: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor, config: LocalMIConfig,
    num_classes: int,
) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """(I(y_i; c) in bits, redundancy of row i), each (K,), for pre-activations (B, K) of a
    layer with weight (K, D) on a batch with labels (B,).

    ``(-mi + lambda_reg * redundancy).sum()`` has gradient dL_i/dw_i in row i: the MI is per
    unit, and the redundancy of row i holds the other rows as constants.
    """
    mi = mi_soft_per_unit(
        pre, labels, n_bins=config.mi_bins, bandwidth=config.bandwidth, n_classes=num_classes
    )
    overlaps = weight @ weight.detach().T  # (K, K): w_i . w_j, differentiable in row i only
    overlaps = overlaps - torch.diag_embed(torch.diagonal(overlaps))  # j != i
    return mi, REDUNDANCY[config.redundancy](overlaps).sum(dim=1)
