"""Mutual information of a layer by binning. Every value is in bits.

A layer's activations on the probe set are a tensor ``t`` of shape (N, ...), flattened to
(N, D); ``y`` holds the N integer labels. The network is deterministic, so H(T|X) = 0 and
I(X;T) = H(T), whatever repeats the probe inputs contain; I(T;Y) = H(T) + H(Y) - H(T,Y).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from infoflow_track.measures._checks import (
    all_finite,
    class_count,
    layer_and_labels,
    replicate_layers,
)

_LN2 = math.log(2.0)


def entropy_bits(counts: torch.Tensor) -> torch.Tensor:
    """Entropy in bits of the distributions given by ``counts`` (..., M) along the last axis."""
    p = counts / counts.sum(dim=-1, keepdim=True)
    return -torch.special.xlogy(p, p).sum(dim=-1) / _LN2


def bin_codes(
    t: torch.Tensor,
    *,
    n_bins: int = 30,
    bin_width: float | None = None,
    value_range: tuple[float, float] | None = None,
) -> torch.Tensor:
    """Bin index of every activation: (N, ...) -> (N, D) small non-negative integers.

    With ``bin_width`` None, ``n_bins`` equal bins span the layer's range [min, max] over all
    its units and samples (the top edge falls in the last bin), or the fixed ``value_range``
    (low, high) when given (values outside fall in the end bins); otherwise bins of that fixed
    width are anchored at 0 (edges at k * bin_width), so unbounded activations need no range.
    """
    t = t.reshape(1, t.shape[0], -1)
    return replicate_bin_codes(t, n_bins=n_bins, bin_width=bin_width, value_range=value_range)[0]


def replicate_bin_codes(
    t: torch.Tensor,
    *,
    n_bins: int = 30,
    bin_width: float | None = None,
    value_range: tuple[float, float] | None = None,
) -> torch.Tensor:
    """:func:`bin_codes` of K replicates at once: (K, N, ...) -> (K, N, D), each replicate's
    range its own (with ``bin_width``, codes are shifted to start at 0 per replicate)."""
    codes, n_codes = _float_codes(t, n_bins=n_bins, bin_width=bin_width, value_range=value_range)
    return codes.to(_code_dtype(n_codes))


def _float_codes(
    t: torch.Tensor,
    *,
    n_bins: int,
    bin_width: float | None,
    value_range: tuple[float, float] | None,
    extremes: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, int]:
    """:func:`replicate_bin_codes` as floats (K, N, D), whole numbers 0..n_codes-1, and
    n_codes: what :func:`replicate_mi_of_codes` reads without a cast to integers.
    ``extremes`` are each replicate's (min, max) (K,) when known."""
    t = t.reshape(t.shape[0], t.shape[1], -1)
    if t.element_size() < 4:  # half precision cannot hold the bin scale
        t = t.float()
    if extremes is None:
        extremes = t.amin(dim=(1, 2)), t.amax(dim=(1, 2))  # (K,) each, no copy
    t_min, t_max = (m.to(t.dtype)[:, None, None] for m in extremes)
    if bin_width is None:
        if n_bins < 1:
            raise ValueError(f"n_bins must be at least 1, got {n_bins}")
        if value_range is None:
            codes = _scaled_codes(t, t_min, t_max, n_bins)
        else:
            low, high = value_range
            if not (math.isfinite(low) and math.isfinite(high) and low < high):
                raise ValueError(f"value_range must be finite (low, high), got {value_range}")
            codes = (t - low).mul_(n_bins / (high - low)).floor_().clamp_(0, n_bins - 1)
        n_codes = n_bins
    else:
        if not (math.isfinite(bin_width) and bin_width > 0):
            raise ValueError(f"bin_width must be a positive number, got {bin_width}")
        codes = torch.div(t, bin_width).floor_()
        # floor(v / width) is monotone in v: each replicate's codes span those of its extremes
        low, high = torch.floor(t_min / bin_width), torch.floor(t_max / bin_width)
        codes -= low
        n_codes = int((high - low).max()) + 1
    return codes, n_codes


def _scaled_codes(t: torch.Tensor, low, high, n_bins: int) -> torch.Tensor:
    """Float bin indices 0..n_bins-1 of t in equal bins over [low, high] (broadcast against
    t); a constant range puts everything in bin 0."""
    span = high - low
    scale = torch.where(span > 0, n_bins / span, torch.zeros_like(span))
    return (t - low).mul_(scale).floor_().clamp_(0, n_bins - 1)


def _range_codes(t: torch.Tensor, n_bins: int) -> torch.Tensor:
    """(N, D) -> float bin indices 0..n_bins-1 of equal bins over each unit's [min, max]."""
    low, high = torch.aminmax(t, dim=0)
    return _scaled_codes(t, low, high, n_bins)


def _code_dtype(n_codes: int) -> torch.dtype:
    """The narrowest integer type for codes 0..n_codes-1 (row deduplication is faster)."""
    if n_codes <= 2**8:
        return torch.uint8
    if n_codes <= 2**15:
        return torch.int16
    return torch.int32 if n_codes <= 2**31 else torch.int64


def equal_mass_codes(t: torch.Tensor, n_bins: int) -> torch.Tensor:
    """Per-unit equal-mass bins: (N, ...) -> (N, D) codes 0..n_bins-1.

    A sample's code in a unit is floor(n_bins x (samples below its value in that unit) / N):
    the unit's k/n_bins quantiles are its bin edges, so each bin holds about N/n_bins samples,
    equal values always share a bin and a unit with few distinct values uses fewer bins
    (a half-zero ReLU unit: the zeros in bin 0). Invariant to any increasing transform of a
    unit. Adaptive binning of Chelombiev, Houghton & O'Donnell (ICLR 2019).
    """
    return replicate_equal_mass_codes(t.reshape(1, t.shape[0], -1), n_bins)[0]


def replicate_equal_mass_codes(t: torch.Tensor, n_bins: int) -> torch.Tensor:
    """:func:`equal_mass_codes` of K replicates at once: (K, N, ...) -> (K, N, D)."""
    if n_bins < 1:
        raise ValueError(f"n_bins must be at least 1, got {n_bins}")
    t = t.reshape(t.shape[0], t.shape[1], -1)
    t = t.float() if t.element_size() < 4 else t
    columns = t.transpose(1, 2).contiguous()  # (K, D, N)
    below = torch.searchsorted(columns.sort(dim=-1).values, columns)  # values below each
    return ((below * n_bins) // t.shape[1]).transpose(1, 2).to(_code_dtype(n_bins))


def symbols(codes: torch.Tensor) -> torch.Tensor:
    """(N, D) codes -> (N,) ids 0..S-1: samples with the same whole vector share an id."""
    return replicate_symbols(codes[None])[0]


def mi_of_codes(codes: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(H(T), I(T;Y)) in bits (float64, 0-d) of binned activations (N, D) and labels (N,):
    each row's whole code vector is one symbol."""
    h_t, i_ty = replicate_mi_of_codes(codes[None], y)
    return h_t[0], i_ty[0]


def replicate_mi_of_codes(
    codes: torch.Tensor, y: torch.Tensor, n_codes: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(H(T), I(T;Y)) in bits, float64 (K,), of K replicates' codes (K, N, D), labels (N,);
    codes are integers, or whole floats 0..n_codes-1 when ``n_codes`` is given.

    When a row's code vector and its label fit in one int64 (see :func:`_row_numbers`),
    each replicate's N numbers are sorted once and H(T, Y) and H(T) read off the lengths of
    their runs; else one row deduplication serves all K (:func:`replicate_symbols`).
    """
    k, n = codes.shape[:2]
    n_classes = class_count(y)
    h_y = entropy_bits(torch.bincount(y).double())
    label_bits = (n_classes - 1).bit_length()
    numbers = _row_numbers(codes, 1 << label_bits, n_codes)
    if numbers is not None:  # (K, N), the label in the low bits: T's runs are joint >> bits
        joint = _sorted_rows(numbers.bitwise_left_shift_(label_bits).bitwise_or_(y))
        both = torch.cat([joint.bitwise_right_shift(label_bits), joint])  # (2K, N), sorted
        h_t, h_ty = _sorted_run_entropy(both).view(2, k)
        return h_t, (h_t + h_y - h_ty).clamp_min(0)
    ids, owner = replicate_symbols(codes if n_codes is None else codes.to(_code_dtype(n_codes)))
    n_symbols = len(owner)
    joint = torch.bincount(ids * n_classes + y.repeat(k), minlength=n_symbols * n_classes)
    h_t = _entropy_by_owner(torch.bincount(ids, minlength=n_symbols)[:, None], owner, k, n)
    h_ty = _entropy_by_owner(joint.view(-1, n_classes), owner, k, n)
    return h_t, (h_t + h_y - h_ty).clamp_min(0)


def _row_numbers(
    codes: torch.Tensor, spare: int = 1, base: int | None = None
) -> torch.Tensor | None:
    """Each row's code vector (K, N, D) as one number (K, N) int64 in base max code + 1
    (or ``base``, for codes known to be 0..base-1), leaving room to multiply by ``spare``;
    None when that does not fit in 62 bits (D log2(base) + log2 spare, e.g. 10 units of 30
    bins for 128 replicates or classes) or the codes are not non-negative integers."""
    d = codes.shape[2]
    if base is None:
        if codes.is_floating_point():
            return None
        low, high = (0, 0) if not codes.numel() else torch.stack(codes.aminmax()).tolist()
        if low < 0:
            return None
        base = int(high) + 1
    if d * math.log2(base) + math.log2(spare) >= 62:
        return None
    # units grouped so that each group's number is exact in the codes' float type: one
    # product (K, N, D) @ (D, G) gives the G group numbers, int64 arithmetic joins them
    values = codes if codes.is_floating_point() else codes.float()
    exact_bits = 1 - round(math.log2(torch.finfo(values.dtype).eps))  # exact below 2**bits
    per_group = d if base == 1 else max(1, int(exact_bits // math.log2(base)))
    place = torch.arange(d - 1, -1, -1, device=codes.device)  # unit j's digit, first highest
    group = place // per_group
    n_groups = int(place[0]) // per_group + 1 if d else 1
    within = torch.zeros(d, n_groups, dtype=values.dtype, device=codes.device)
    within[torch.arange(d, device=codes.device), group] = float(base) ** (place % per_group).to(
        values.dtype
    )
    # along memory: packed replicates' layers are (K, D, N) in memory, see ensemble
    parts = values @ within if values.stride(2) == 1 else (within.T @ values.mT).mT  # (K, N, G)
    scale = base ** (per_group * torch.arange(n_groups, device=codes.device))
    return (parts.long() * scale).sum(dim=2)


def _sorted_rows(rows: torch.Tensor) -> torch.Tensor:
    """Each row of (K, N) integers sorted; on the CPU by NumPy, whose vectorised sort of
    rows of a few thousand int64 is about twice as fast as torch's."""
    if rows.device.type == "cpu":
        return torch.from_numpy(np.sort(rows.numpy(), axis=1))
    return rows.sort(dim=1).values


def _sorted_run_entropy(rows: torch.Tensor) -> torch.Tensor:
    """Entropy in bits (K,) float64 of each row of sorted values (K, N): of the distribution
    of its distinct values, whose counts c are the lengths of the runs of equal values,
    H = log2 N - sum(c log2 c) / N, with c log2 c looked up in a table of 0..N."""
    k, n = rows.shape
    starts = torch.ones_like(rows, dtype=torch.bool)
    torch.ne(rows[:, 1:], rows[:, :-1], out=starts[:, 1:])
    run = starts.cumsum(dim=1)
    run += (n * torch.arange(k, device=rows.device) - 1)[:, None]  # runs of row r: r n + ...
    counts = torch.bincount(run.view(-1), minlength=k * n)  # (K N,), zero past a row's runs
    c = torch.arange(n + 1, device=rows.device, dtype=torch.float64)
    c_log_c = c * torch.log2(c.clamp_min(1))  # 0 log 0 = 0
    return math.log2(n) - c_log_c.index_select(0, counts).view(k, n).sum(dim=1) / n


def replicate_symbols(codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symbols of K replicates' codes (K, N, D) (any values; non-negative integers take the
    fast path): ids (K N,) numbering the distinct (replicate,
    code vector) pairs 0..S-1, and the replicate of each symbol (S,).

    When replicate and vector fit in one int64 (:func:`_row_numbers` with room for K), each
    row is that one number and a 1-D ``unique`` numbers them, many times faster than
    deduplicating rows; else rows are deduplicated with the replicate index as their first
    column.
    """
    k, n, _ = codes.shape
    numbers = _row_numbers(codes, k)
    if numbers is not None:
        span = int(numbers.max()) + 1 if numbers.numel() else 1
        keys = torch.arange(k, device=codes.device)[:, None] * span + numbers
        unique, ids = torch.unique(keys.reshape(-1), return_inverse=True)
        return ids, unique // span
    dtype = torch.promote_types(codes.dtype, _code_dtype(k))
    replicate = torch.arange(k, device=codes.device, dtype=dtype)
    rows = torch.cat([replicate[:, None, None].expand(k, n, 1), codes.to(dtype)], dim=2)
    unique, ids = torch.unique(rows.reshape(k * n, -1), dim=0, return_inverse=True)
    return ids, unique[:, 0].long()


def _entropy_by_owner(counts: torch.Tensor, owner: torch.Tensor, k: int, n: int) -> torch.Tensor:
    """Entropies in bits (K,) of K distributions of n samples each, given as counts (S, M)
    whose row s belongs to distribution owner[s]."""
    p = counts.double() / n
    terms = -torch.special.xlogy(p, p).sum(dim=1) / _LN2  # (S,)
    return torch.zeros(k, dtype=terms.dtype, device=terms.device).index_add_(0, owner, terms)


def mi_adaptive_binned(
    t: torch.Tensor, y: torch.Tensor, *, n_bins: int = 10
) -> tuple[torch.Tensor, torch.Tensor]:
    """(I(X;T), I(T;Y)) in bits by per-unit equal-mass bins (:func:`equal_mass_codes`), each
    sample's whole binned vector one symbol; 0-d tensors on ``t``'s device, NaN for
    activations that are not all finite."""
    t, y = layer_and_labels(t, y)
    i_xt, i_ty = replicate_mi_adaptive_binned(t[None], y, n_bins=n_bins)
    return i_xt[0], i_ty[0]


def replicate_mi_adaptive_binned(
    t: torch.Tensor, y: torch.Tensor, *, n_bins: int = 10
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`mi_adaptive_binned` of K replicates t (K, N, ...) at once: (K,) tensors."""
    return _replicate_mi(t, y, lambda flat, _: (replicate_equal_mass_codes(flat, n_bins), n_bins))


def mi_binned(
    t: torch.Tensor,
    y: torch.Tensor,
    *,
    n_bins: int = 30,
    bin_width: float | None = None,
    value_range: tuple[float, float] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(I(X;T), I(T;Y)) in bits by layer-wise binning; 0-d tensors on ``t``'s device.

    Parameters
    ----------
    t : (N, ...) activations of one layer on the probe set.
    y : (N,) integer class labels.
    n_bins, bin_width, value_range : see :func:`bin_codes`.

    Each sample's whole binned vector is one symbol, so I(X;T) = H(T) (at most log2 N) and
    I(T;Y) = H(T) + H(Y) - H(T,Y), with 0 <= I(T;Y) <= min(I(X;T), H(Y)). Activations that
    are not all finite give NaN. Half-precision input is measured in float32.
    """
    t, y = layer_and_labels(t, y)
    options = {"n_bins": n_bins, "bin_width": bin_width, "value_range": value_range}
    i_xt, i_ty = replicate_mi_binned(t[None], y, **options)
    return i_xt[0], i_ty[0]


def replicate_mi_binned(
    t: torch.Tensor,
    y: torch.Tensor,
    *,
    n_bins: int = 30,
    bin_width: float | None = None,
    value_range: tuple[float, float] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`mi_binned` of K replicates t (K, N, ...) at once, each binned over its own
    range: (K,) tensors; a replicate whose activations are not all finite gives NaN."""
    options = {"n_bins": n_bins, "bin_width": bin_width, "value_range": value_range}
    return _replicate_mi(
        t, y, lambda flat, extremes: _float_codes(flat, **options, extremes=extremes)
    )


def _replicate_mi(t: torch.Tensor, y: torch.Tensor, code) -> tuple[torch.Tensor, torch.Tensor]:
    """(H(T), I(T;Y)) (K,) in t's dtype of replicates t (K, N, ...) binned by ``code``
    (flat (K, N, D), its extremes (low, high) (K,) each) -> (codes 0..n_codes-1, n_codes);
    NaN for a replicate that is not all finite (binned as zeros)."""
    flat, y = replicate_layers(t, y)
    low, high = flat.amin(dim=(1, 2)), flat.amax(dim=(1, 2))  # (K,) each; NaN propagates
    finite = torch.isfinite(low) & torch.isfinite(high)
    if not bool(finite.all()):
        flat = torch.where(finite[:, None, None], flat, 0.0)
        low, high = torch.where(finite, low, 0.0), torch.where(finite, high, 0.0)
    codes, n_codes = code(flat, (low, high))
    h_t, i_ty = replicate_mi_of_codes(codes, y, n_codes)
    nan = torch.tensor(math.nan, dtype=flat.dtype, device=flat.device)
    return tuple(torch.where(finite, v.to(flat.dtype), nan) for v in (h_t, i_ty))


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
    codes = _range_codes(t, n_bins).long()  # (N, K)
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
