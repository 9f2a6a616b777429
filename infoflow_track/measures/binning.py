"""Mutual information of a layer by binning. Every value is in bits.

A layer's activations on the probe set are a tensor ``t`` of shape (N, ...), flattened to
(N, D); ``y`` holds the N integer labels. The network is deterministic, so H(T|X) = 0 and
I(X;T) = H(T), whatever repeats the probe inputs contain; I(T;Y) = H(T) + H(Y) - H(T,Y).
"""

from __future__ import annotations

import math

import torch

from infoflow_track.measures._checks import all_finite, class_count, layer_and_labels

_LN2 = math.log(2.0)


def entropy_bits(counts: torch.Tensor) -> torch.Tensor:
    """Entropy in bits of the distributions given by ``counts`` (..., M) along the last axis."""
    p = counts / counts.sum(dim=-1, keepdim=True)
    return -torch.special.xlogy(p, p).sum(dim=-1) / _LN2


def bin_codes(t: torch.Tensor, *, n_bins: int = 30, bin_width: float | None = None) -> torch.Tensor:
    """Bin index of every activation: (N, ...) -> (N, D) small non-negative integers.

    With ``bin_width`` None, ``n_bins`` equal bins span the layer's range [min, max] over all
    its units and samples (the top edge falls in the last bin); otherwise bins of that fixed
    width are anchored at 0 (edges at k * bin_width), so unbounded activations need no range.
    """
    t = t.reshape(t.shape[0], -1)
    if t.element_size() < 4:  # half precision cannot hold the bin scale
        t = t.float()
    if bin_width is None:
        if n_bins < 1:
            raise ValueError(f"n_bins must be at least 1, got {n_bins}")
        codes = _range_codes(t, n_bins, per_unit=False)
        n_codes = n_bins
    else:
        if not (math.isfinite(bin_width) and bin_width > 0):
            raise ValueError(f"bin_width must be a positive number, got {bin_width}")
        codes = torch.floor(t / bin_width)
        codes -= codes.min()
        n_codes = int(codes.max().item()) + 1
    return codes.to(_code_dtype(n_codes))


def _range_codes(t: torch.Tensor, n_bins: int, *, per_unit: bool) -> torch.Tensor:
    """(N, D) -> float bin indices 0..n_bins-1 of equal bins over [min, max], taken over the
    whole layer or over each unit (column); a constant range puts everything in bin 0."""
    low, high = torch.aminmax(t, dim=0) if per_unit else torch.aminmax(t)
    span = high - low
    scale = torch.where(span > 0, n_bins / span, torch.zeros_like(span))
    return ((t - low) * scale).floor_().clamp_(0, n_bins - 1)


def _code_dtype(n_codes: int) -> torch.dtype:
    """The narrowest integer type for codes 0..n_codes-1 (row deduplication is faster)."""
    if n_codes <= 2**8:
        return torch.uint8
    if n_codes <= 2**15:
        return torch.int16
    return torch.int32 if n_codes <= 2**31 else torch.int64


def symbols(codes: torch.Tensor) -> torch.Tensor:
    """(N, D) codes -> (N,) ids 0..S-1: samples with the same whole vector share an id."""
    return torch.unique(codes, dim=0, return_inverse=True)[1]


def mi_binned(
    t: torch.Tensor, y: torch.Tensor, *, n_bins: int = 30, bin_width: float | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(I(X;T), I(T;Y)) in bits by layer-wise binning; 0-d tensors on ``t``'s device.

    Parameters
    ----------
    t : (N, ...) activations of one layer on the probe set.
    y : (N,) integer class labels.
    n_bins, bin_width : see :func:`bin_codes`.

    Each sample's whole binned vector is one symbol, so I(X;T) = H(T) (at most log2 N) and
    I(T;Y) = H(T) + H(Y) - H(T,Y), with 0 <= I(T;Y) <= min(I(X;T), H(Y)). Activations that
    are not all finite give NaN. Half-precision input is measured in float32.
    """
    t, y = layer_and_labels(t, y)
    if not all_finite(t):
        return _undefined(t), _undefined(t)
    ids = symbols(bin_codes(t, n_bins=n_bins, bin_width=bin_width))
    n_classes = class_count(y)
    h_t = entropy_bits(torch.bincount(ids).double())
    h_y = entropy_bits(torch.bincount(y).double())
    h_ty = entropy_bits(torch.bincount(ids * n_classes + y).double())
    return h_t.to(t.dtype), (h_t + h_y - h_ty).clamp_min(0).to(t.dtype)


def mi_per_unit(
    t: torch.Tensor, y: torch.Tensor, *, n_bins: int = 30
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-unit binned MI averaged over units: (mean_k I(X;T_k), mean_k I(T_k;Y)) in bits.

    For comparison with older studies only: it treats each unit T_k alone, binned over its
    own range into ``n_bins`` bins, and says nothing about the layer as a whole (the sum of
    per-unit terms is no bound on I(X;T)). Use :func:`mi_binned` or :func:`mi_kde` for a
    layer. Vectorised over units: one ``bincount`` for all units.
    """
    t, y = layer_and_labels(t, y)
    if not all_finite(t):
        return _undefined(t), _undefined(t)
    n_units, n_classes = t.shape[1], class_count(y)
    codes = _range_codes(t, n_bins, per_unit=True).long()  # (N, K)
    unit = torch.arange(n_units, device=t.device) * n_bins  # offset of each unit's bins
    h_t = entropy_bits(_histogram(codes + unit, n_units, n_bins))
    joint = codes + unit * n_classes + y[:, None] * n_bins  # (unit, class, bin), row-major
    h_ty = entropy_bits(_histogram(joint, n_units, n_classes * n_bins))
    h_y = entropy_bits(torch.bincount(y).double())
    i_ty = (h_t + h_y - h_ty).clamp_min(0)
    return h_t.mean().to(t.dtype), i_ty.mean().to(t.dtype)


def _undefined(t: torch.Tensor) -> torch.Tensor:
    return torch.tensor(float("nan"), dtype=t.dtype, device=t.device)


def _histogram(flat_index: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """Counts of ``flat_index`` values as a (rows, cols) float64 table."""
    return torch.bincount(flat_index.reshape(-1), minlength=rows * cols).double().view(rows, cols)
