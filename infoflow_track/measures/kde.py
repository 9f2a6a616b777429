"""Kolchinsky & Tracey pairwise-distance bounds on the MI of a noisy layer. Bits.

The layer T is read as T + Z with Gaussian noise Z ~ N(0, noise_var * I), i.e. a mixture of
N Gaussians centred on the probe activations. Its entropy is bounded above by the KL form
and below by the Bhattacharyya form (Kolchinsky & Tracey, Entropy 2017; used by Saxe et al.
2018). Subtracting the noise entropy leaves, with kernel variance s = noise_var (upper) or
4 * noise_var (lower) and S_i = sum_j exp(-|t_i - t_j|^2 / (2 s)):

    I(X;T) = log N - mean_i log S_i
    I(T;Y) = H(Y) + mean_i log(S_i^same class / S_i)

Each S_i contains its own term 1, so 0 <= I(X;T) <= log N without any max-subtraction
(estimates are clamped at 0: rounding gives a constant layer -1e-7 bits).
Rows are processed in chunks of at most ``chunk_bytes`` of distances (one chunk when N x N
fits), and of the symmetric kernel only the blocks on and right of the diagonal are computed.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from infoflow_track.measures._checks import class_count, layer_and_labels, replicate_layers
from infoflow_track.measures.binning import entropy_bits

_LN2 = math.log(2.0)
BOUNDS = ("upper", "lower")
#: Bytes of scratch memory per chunk of the distance matrix.
CHUNK_BYTES = 32 * 2**20


def mi_kde(
    t: torch.Tensor,
    y: torch.Tensor,
    *,
    noise_var: float = 0.1,
    bound: str = "upper",
    chunk_bytes: int = CHUNK_BYTES,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(I(X;T), I(T;Y)) in bits under additive Gaussian noise; 0-d tensors on ``t``'s device.

    Parameters
    ----------
    t : (N, ...) activations of one layer on the probe set (computed in ``t``'s dtype, at
        least float32); NaN or infinite activations give NaN.
    y : (N,) integer class labels.
    noise_var : variance of the added noise, in squared activation units.
    bound : "upper" (KL) or "lower" (Bhattacharyya) pairwise-distance bound. I(X;T) is
        bounded so; I(T;Y) is the difference of two bounds of the same kind (as Saxe et al.),
        an estimate rather than a strict bound.
    chunk_bytes : memory of one chunk of rows of the distance matrix, the only large
        scratch buffer (one chunk is alive at a time).
    """
    t, y = layer_and_labels(t, y)
    i_xt, i_ty = replicate_mi_kde(t[None], y, noise_var=noise_var, bound=bound,
                                  chunk_bytes=chunk_bytes)  # fmt: skip
    return i_xt[0], i_ty[0]


def replicate_mi_kde(
    t: torch.Tensor,
    y: torch.Tensor,
    *,
    noise_var: float = 0.1,
    bound: str = "upper",
    chunk_bytes: int = CHUNK_BYTES,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`mi_kde` of K replicates t (K, N, ...) at once: (K,) tensors, the K distance
    matrices computed as batched products (``chunk_bytes`` bounds all K chunks together)."""
    t, y = replicate_layers(t, y)
    if bound not in BOUNDS:
        raise ValueError(f"bound must be one of {BOUNDS}, got {bound!r}")
    if not (math.isfinite(noise_var) and noise_var > 0):
        raise ValueError(f"noise_var must be a positive number, got {noise_var}")
    t = t - t.mean(dim=1, keepdim=True)  # distances unchanged; |a|^2 + |b|^2 - 2ab: precision
    n = t.shape[1]
    kernel_var = noise_var if bound == "upper" else 4.0 * noise_var
    onehot = F.one_hot(y, class_count(y)).to(t.dtype)  # (N, C)
    log_all, log_same = _log_kernel_sums(t, y, onehot, kernel_var, chunk_bytes)
    h_y = entropy_bits(onehot.sum(dim=0))
    i_xt = (math.log(n) - log_all.mean(dim=1)) / _LN2
    i_ty = h_y + (log_same - log_all).mean(dim=1) / _LN2
    return i_xt.clamp_min(0.0), i_ty.clamp_min(0.0)  # a constant layer: -1e-7 by rounding


def _log_kernel_sums(
    t: torch.Tensor, y: torch.Tensor, onehot: torch.Tensor, kernel_var: float, chunk_bytes: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(log S_i, log S_i^same class), each (K, N), of replicates t (K, N, D) from the Gaussian
    kernel in row chunks.

    The kernel is symmetric, so each chunk of rows is paired only with itself and later
    columns; the block's transpose feeds the later rows. Half the products and exponentials.
    """
    k, n = t.shape[:2]
    rows = max(1, min(n, chunk_bytes // (k * n * t.element_size())))
    scaled_norms = (t * t).sum(dim=2) / (2.0 * kernel_var)  # (K, N) |t_i|^2 / (2 s)
    # near and below log(tiny) exp() yields subnormals, many times slower to make and to sum;
    # such terms are < 1e-37 against each row's own term 1, so they are held just above it
    floor = math.log(torch.finfo(t.dtype).tiny) + 1.0
    sums = torch.zeros(k, n, onehot.shape[1], dtype=t.dtype, device=t.device)  # per class
    for start in range(0, n, rows):
        stop = min(start + rows, n)
        # log-kernel -|t_i - t_j|^2 / (2 s) from inner products and norms: (K, R, N - start)
        block = torch.baddbmm(
            -scaled_norms[:, None, start:], t[:, start:stop], t[:, start:].transpose(1, 2),
            alpha=1 / kernel_var,
        )  # fmt: skip
        block.sub_(scaled_norms[:, start:stop, None]).clamp_(min=floor, max=0.0)
        diag = torch.arange(stop - start, device=t.device)
        block[:, diag, diag] = 0.0  # exact self-distance despite rounding
        block.exp_()
        sums[:, start:stop] += block @ onehot[start:]
        sums[:, stop:] += block[:, :, stop - start :].transpose(1, 2) @ onehot[start:stop]
    log_all = sums.sum(dim=2).log()
    log_same = sums.gather(2, y.expand(k, n)[:, :, None]).squeeze(2).log()
    return log_all, log_same
