"""Matrix-based Rényi α-entropy and mutual information (Giraldo, Rao & Príncipe 2015). Bits.

A representation of N samples is described by a Gram matrix K (N, N) of a positive definite
kernel with unit diagonal, normalised to A = K / tr(K). Its α-entropy is that of A's
eigenvalues λ,

    S_α(A) = log2(Σ λ_i^α) / (1 - α)        (α -> 1: -Σ λ_i log2 λ_i, von Neumann),

at most log2 N (A = I/N: every sample apart) and 0 for a rank-one A (all samples alike).
The joint entropy of two representations is that of the normalised Hadamard product, and

    I(X;T) = S(A_X) + S(A_T) - S(A_X ∘ A_T),   0 <= I(X;T) <= min(S(A_X), S(A_T)).

Kernels: the Gaussian kernel exp(-|a - b|^2 / (2 σ^2)) of whole samples — for a conv
feature map (N, C, H, W) the Frobenius distance of the maps, the tensor kernel of Wickstrøm,
Løkse, Kampffmeyer, Yu, Príncipe & Jenssen (2019) — or the multivariate form of Yu, Wickstrøm,
Jenssen & Príncipe (2019), the Hadamard product of one Gaussian Gram per channel; for labels
the class-indicator kernel, whose entropy is the α-entropy of the class frequencies.
"""

from __future__ import annotations

import math

import torch

from infoflow_track.measures._checks import class_count, layer_and_labels
from infoflow_track.measures.similarity import _median, _squared_distances

WIDTH_RULES = ("median", "fixed")
CONV_KERNELS = ("tensor", "channels")


def renyi_entropy(gram: torch.Tensor, alpha: float) -> torch.Tensor:
    """S_α in bits of Gram matrices ``gram`` (..., N, N), each normalised by its trace.

    One batched ``eigvalsh`` on the Gram's device; eigenvalues below 10 eps x the largest
    (rounding noise, which would count for α < 1) are taken as 0.
    """
    _check_alpha(alpha)
    a = gram / gram.diagonal(dim1=-2, dim2=-1).sum(-1)[..., None, None]
    lam = torch.linalg.eigvalsh(a)
    floor = lam.amax(dim=-1, keepdim=True) * (10 * torch.finfo(a.dtype).eps)
    lam = torch.where(lam > floor, lam, torch.zeros_like(lam))
    if alpha == 1.0:
        return -torch.special.xlogy(lam, lam).sum(-1) / math.log(2.0)
    return torch.log2((lam**alpha).sum(-1)) / (1.0 - alpha)


def kernel_width(t: torch.Tensor, *, rule: str = "median", scale: float = 1.0) -> torch.Tensor:
    """σ of the Gaussian kernel of samples t (N, ...): ``scale`` x the median distance between
    distinct samples (``rule="median"``), or ``scale`` itself (``rule="fixed"``). 0-d tensor.

    For ``channels`` kernels pass one channel's maps; the median is over the off-diagonal
    pairs; if they all coincide σ falls back to 1.
    """
    _check_width(rule, scale)
    if rule == "fixed":
        return torch.tensor(scale, dtype=_real(t), device=t.device)
    return _batched_median_width(_squared_distances(t.reshape(1, t.shape[0], -1)), rule, scale)[0]


def _check_width(rule: str, scale: float) -> None:
    if rule not in WIDTH_RULES:
        raise ValueError(f"rule must be one of {WIDTH_RULES}, got {rule!r}")
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be a positive number, got {scale}")


def gaussian_gram(t: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
    """(N, N) Gaussian Gram matrix of samples t (N, ...) under the Frobenius (tensor) distance."""
    sq = _squared_distances(t.reshape(t.shape[0], -1))
    return torch.exp(-sq / (2.0 * sigma**2))


def channel_gram(
    t: torch.Tensor, *, rule: str = "median", scale: float = 1.0, chunk: int = 16
) -> torch.Tensor:
    """(N, N) multivariate Gram of feature maps t (N, C, ...): the Hadamard product over the
    C channels of each channel's Gaussian Gram, every channel with its own width.

    Channels are taken ``chunk`` at a time (a batched distance computation), so memory is
    ``chunk`` x N x N. The product is taken in log space (a sum of exponents).
    """
    if t.dim() < 3:
        raise ValueError(f"channel kernels need maps (N, C, ...), got shape {tuple(t.shape)}")
    n, c = t.shape[:2]
    maps = t.reshape(n, c, -1).transpose(0, 1)  # (C, N, P)
    exponent = torch.zeros(n, n, dtype=_real(t), device=t.device)
    for start in range(0, c, chunk):  # chunks of channels, each a batched (k, N, N) step
        block = maps[start : start + chunk]
        norms = (block * block).sum(-1)  # (k, N)
        sq = norms[:, :, None] + norms[:, None, :] - 2 * block @ block.transpose(1, 2)
        sq = sq.clamp_min_(0.0)
        widths = _batched_median_width(sq, rule, scale)  # (k,)
        exponent -= (sq / (2.0 * widths[:, None, None] ** 2)).sum(0)
    return exponent.exp()


def _batched_median_width(sq: torch.Tensor, rule: str, scale: float) -> torch.Tensor:
    """σ of each of k kernels (channels, replicates) from squared distances (k, N, N), as
    :func:`kernel_width`: (k,)."""
    n = sq.shape[1]
    if rule == "fixed" or n < 2:  # one sample: no distance, σ = scale
        return torch.full((sq.shape[0],), scale, dtype=sq.dtype, device=sq.device)
    off = sq[:, ~torch.eye(n, dtype=torch.bool, device=sq.device)]  # (k, N(N-1))
    median = _median(off).sqrt()
    return scale * torch.where(median > 0, median, torch.ones_like(median))


def label_gram(y: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(N, N) class-indicator kernel of integer labels y (N,): 1 where the classes agree."""
    return (y[:, None] == y[None, :]).to(dtype)


def mi_renyi(
    t_gram: torch.Tensor,
    y_gram: torch.Tensor,
    x_gram: torch.Tensor,
    *,
    alpha: float = 1.01,
    s_x: torch.Tensor | None = None,
    s_y: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(I(X;T), I(T;Y), S(A_X), S(A_Y)) in bits from the three (N, N) Gram matrices.

    S(A_X) and S(A_Y) are the ceilings of the two estimates; pass them (``s_x``, ``s_y``) when
    known, as for every layer of a run: then three entropies, S(A_T), S(A_X∘A_T) and
    S(A_T∘A_Y), take one batched eigendecomposition. Estimates are held inside
    [0, ceiling] (rounding can put them a hair outside).
    """
    if s_x is None or s_y is None:
        s_x, s_y = renyi_entropy(torch.stack([x_gram, y_gram]), alpha).unbind()
    grams = torch.stack([t_gram, x_gram * t_gram, t_gram * y_gram])
    s_t, s_xt, s_ty = renyi_entropy(grams, alpha).unbind()
    i_xt = torch.minimum((s_x + s_t - s_xt).clamp_min(0.0), s_x)
    i_ty = torch.minimum((s_t + s_y - s_ty).clamp_min(0.0), s_y)
    return i_xt, i_ty, s_x, s_y


def mi_renyi_layer(
    t: torch.Tensor,
    y: torch.Tensor,
    x: torch.Tensor,
    *,
    alpha: float = 1.01,
    rule: str = "median",
    scale: float = 0.5,
    conv: str = "tensor",
) -> tuple[torch.Tensor, torch.Tensor]:
    """(I(X;T), I(T;Y)) in bits of layer t (N, ...) with inputs x (N, ...) and labels y (N,).

    The one-call form of :func:`mi_renyi` with the ``renyi`` estimator's defaults: Gaussian
    kernels of width :func:`kernel_width` for x and for t (``conv="channels"``:
    :func:`channel_gram` for maps (N, C, H, W)), the indicator kernel for y.
    """
    _, y = layer_and_labels(t, y)
    class_count(y)  # labels are checked non-negative
    layer = layer_gram(t, rule=rule, scale=scale, conv=conv)
    inputs = layer_gram(x, rule=rule, scale=scale)
    i_xt, i_ty, _, _ = mi_renyi(layer, label_gram(y, layer.dtype), inputs, alpha=alpha)
    return i_xt, i_ty


def layer_gram(
    t: torch.Tensor, *, rule: str = "median", scale: float = 1.0, conv: str = "tensor"
) -> torch.Tensor:
    """(N, N) Gram matrix of a layer t (N, ...): the tensor kernel, or per-channel kernels
    multiplied (``conv="channels"``, maps (N, C, ...) only; flat layers use the tensor
    kernel). Computed in float32 or wider."""
    return replicate_layer_grams(t[None], rule=rule, scale=scale, conv=conv)[0]


def replicate_layer_grams(
    t: torch.Tensor, *, rule: str = "median", scale: float = 1.0, conv: str = "tensor"
) -> torch.Tensor:
    """:func:`layer_gram` of K replicates t (K, N, ...) at once: (K, N, N), each with its own
    width. The tensor kernel is one batched product; per-channel kernels are made per
    replicate."""
    if conv not in CONV_KERNELS:
        raise ValueError(f"conv must be one of {CONV_KERNELS}, got {conv!r}")
    t = t.float() if t.element_size() < 4 else t
    if conv == "channels" and t.dim() >= 4:
        return torch.stack([channel_gram(r, rule=rule, scale=scale) for r in t])
    _check_width(rule, scale)
    sq = _squared_distances(t.reshape(t.shape[0], t.shape[1], -1))  # (K, N, N)
    widths = _batched_median_width(sq, rule, scale)
    return torch.exp(-sq / (2.0 * widths[:, None, None] ** 2))


def _check_alpha(alpha: float) -> None:
    if not (math.isfinite(alpha) and alpha > 0):
        raise ValueError(f"alpha must be a positive number, got {alpha}")


def _real(t: torch.Tensor) -> torch.dtype:
    return t.dtype if t.is_floating_point() and t.element_size() >= 4 else torch.float32
