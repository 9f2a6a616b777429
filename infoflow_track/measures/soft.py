"""A differentiable per-unit estimate of I(T_k; Y), for learning rules that maximise MI.

Hard binning has zero gradient almost everywhere. Here each activation is assigned softly
to ``n_bins`` bin centres spanning its unit's range in the batch (a softmax over negative
squared distances, with a Gaussian of ``bandwidth`` bin widths), and the MI of the soft
bin-by-label table is taken per unit. As ``bandwidth`` -> 0 the assignment becomes the hard
per-unit binning of :func:`~infoflow_track.measures.mi_per_unit`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from infoflow_track.measures._checks import class_count, layer_and_labels

_LN2 = math.log(2.0)
_TINY = 1e-12  # keeps log finite (and its gradient) where a soft bin is empty


def mi_soft_per_unit(
    t: torch.Tensor,
    y: torch.Tensor,
    *,
    n_bins: int = 16,
    bandwidth: float = 0.5,
    n_classes: int | None = None,
) -> torch.Tensor:
    """I(T_k; Y) in bits for every unit k of a batch, differentiable in ``t``: (B, K) -> (K,).

    Parameters
    ----------
    t : (B, K) unit activations of one batch (requires_grad as you need); half precision is
        computed in float32.
    y : (B,) integer labels.
    n_bins : soft bins per unit; their centres span each unit's batch range (not
        differentiated through).
    bandwidth : standard deviation of the assignment kernel, in bin widths.
    n_classes : number of classes (default: ``y.max() + 1``).
    """
    if t.dim() != 2:
        raise ValueError(f"activations must be (B, K), got shape {tuple(t.shape)}")
    t, y = layer_and_labels(t, y)
    if n_bins < 2 or not (math.isfinite(bandwidth) and bandwidth > 0):
        raise ValueError(f"need n_bins >= 2 and bandwidth > 0, got {n_bins} and {bandwidth}")
    k = n_classes if n_classes is not None else class_count(y)  # given: no device read
    with torch.no_grad():
        low, high = t.min(dim=0).values, t.max(dim=0).values  # (K,)
        width = ((high - low) / n_bins).clamp_min(torch.finfo(t.dtype).eps)
        steps = torch.arange(n_bins, device=t.device, dtype=t.dtype) + 0.5
        centres = low[:, None] + width[:, None] * steps  # (K, M)
    z = (t[:, :, None] - centres) / (bandwidth * width[:, None])  # (B, K, M)
    assign = torch.softmax(-0.5 * z * z, dim=-1)  # soft bin of each activation
    onehot = F.one_hot(y, k).to(t.dtype)  # (B, C)
    joint = torch.einsum("bkm,bc->kmc", assign, onehot) / t.shape[0]  # (K, M, C)
    p_bin, p_y = joint.sum(dim=2), onehot.mean(dim=0)
    return (_entropy(p_bin) + _entropy(p_y) - _entropy(joint.flatten(1))) / _LN2


def _entropy(p: torch.Tensor) -> torch.Tensor:
    """Entropy in nats along the last axis of probabilities ``p``."""
    return -(p * (p + _TINY).log()).sum(dim=-1)
