"""Centred kernel alignment (Kornblith et al. 2019) and its minibatch form (Nguyen et al. 2021).

CKA(K, L) = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)) for Gram matrices K, L of the same N
samples under two representations. The biased form uses the centred Gram matrices
(HSIC = <HKH, HLH>_F up to a constant); the debiased form uses the unbiased HSIC estimator of
Song et al. (2012), which is near 0 for independent representations where the biased one is
not. A representation with zero variance has no CKA: the result is NaN.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from infoflow_track.measures._checks import paired

KERNELS = ("linear", "rbf")
#: Total width of representations up to which a biased CKA matrix is one Gram product.
BLOCK_FEATURES = 512


def cka(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    kernel: str = "linear",
    sigma_frac: float = 1.0,
    debiased: bool = False,
) -> torch.Tensor:
    """CKA of representations x (N, ...) and y (N, ...) of the same samples; a 0-d tensor.

    ``kernel="linear"`` works in feature space, O(N d^2); a layer wider than N is first
    reduced to N features with the same Gram matrix. ``kernel="rbf"`` uses
    exp(-|a - b|^2 / (2 sigma^2)) with sigma = ``sigma_frac`` x the median pairwise distance
    of each representation (the median over all N^2 entries, as Kornblith et al.'s code; if
    most samples coincide that median is 0 and the result NaN), and needs N x N memory.
    Half-precision input is computed in float32.
    """
    x, y = paired(x, y)
    if kernel not in KERNELS:
        raise ValueError(f"kernel must be one of {KERNELS}, got {kernel!r}")
    if debiased and x.shape[0] < 4:
        raise ValueError(f"debiased CKA needs at least 4 samples, got {x.shape[0]}")
    if kernel == "linear":
        x, y = linear_features(x), linear_features(y)
        xy, xx, yy = (_linear_hsic(a, b, debiased) for a, b in ((x, y), (x, x), (y, y)))
    else:
        if not (math.isfinite(sigma_frac) and sigma_frac > 0):
            raise ValueError(f"sigma_frac must be a positive number, got {sigma_frac}")
        k, l = rbf_gram(x, sigma_frac), rbf_gram(y, sigma_frac)  # noqa: E741
        if debiased:
            xy, xx, yy = (gram_hsic(a, b, True) for a, b in ((k, l), (k, k), (l, l)))
        else:  # centre each Gram once, not once per HSIC
            k, l = _double_centred(k), _double_centred(l)  # noqa: E741
            xy, xx, yy = (k * l).sum(), (k * k).sum(), (l * l).sum()
    return xy / (xx * yy).sqrt()


def cka_matrix(
    xs: Sequence[torch.Tensor], ys: Sequence[torch.Tensor] | None = None, *, debiased=False
) -> torch.Tensor:
    """Linear CKA between every x in ``xs`` and every y in ``ys`` (default ``xs``): (Lx, Ly).

    Every tensor is (N, ...) over the same N samples; each self-term is computed once, and
    with ``ys`` omitted each pair once (the matrix is exactly symmetric).
    """
    same = ys is None
    checked = [paired(xs[0], t)[1] for t in [*xs, *(ys or [])]]  # (N, D) each
    feats = [linear_features(x) for x in checked]
    return feature_cka_matrix(feats[: len(xs)], None if same else feats[len(xs) :],
                              debiased=debiased)  # fmt: skip


def feature_cka_matrix(
    xs: Sequence[torch.Tensor], ys: Sequence[torch.Tensor] | None = None, *, debiased=False
) -> torch.Tensor:
    """:func:`cka_matrix` of representations already in :func:`linear_features` form, each
    (..., N, d) with the same leading (replicate) dimensions: (..., Lx, Ly), every replicate's
    matrix from batched products."""
    if not debiased and sum(t.shape[-1] for t in [*xs, *(ys or [])]) <= BLOCK_FEATURES:
        return _block_cka_matrix(xs, ys)
    same = ys is None
    ys = xs if same else ys
    self_x = torch.stack([_linear_hsic(x, x, debiased) for x in xs], dim=-1)  # (..., Lx)
    self_y = self_x if same else torch.stack([_linear_hsic(y, y, debiased) for y in ys], -1)
    cross = torch.empty(*self_x.shape, len(ys), dtype=self_x.dtype, device=self_x.device)
    for i, x in enumerate(xs):
        for j, y in enumerate(ys):
            if same and j < i:
                cross[..., i, j] = cross[..., j, i]  # symmetric: each pair once
            elif same and i == j:
                cross[..., i, j] = self_x[..., i]
            else:
                cross[..., i, j] = _linear_hsic(x, y, debiased)
    return cross / (self_x[..., :, None] * self_y[..., None, :]).sqrt()


def _block_cka_matrix(xs: Sequence[torch.Tensor], ys: Sequence[torch.Tensor] | None
                      ) -> torch.Tensor:  # fmt: skip
    """Biased linear CKA of narrow representations from one Gram product of all of them
    side by side (:func:`hsic_blocks`), in float64."""
    groups = [t.double() for t in [*xs, *(ys or [])]]  # narrow: float64 costs little
    matrix = cka_of_hsic(hsic_blocks(groups))
    return matrix if ys is None else matrix[..., : len(xs), len(xs) :]


def cka_of_hsic(hsic: torch.Tensor) -> torch.Tensor:
    """CKA matrix (..., L, L) from the HSIC of every pair of L representations (..., L, L),
    made exactly symmetric: HSIC_ij / sqrt(HSIC_ii HSIC_jj)."""
    hsic = (hsic + hsic.transpose(-1, -2)) / 2
    self_terms = hsic.diagonal(dim1=-2, dim2=-1)
    return hsic / (self_terms[..., :, None] * self_terms[..., None, :]).sqrt()


def hsic_blocks(xs: Sequence[torch.Tensor], ys: Sequence[torch.Tensor] | None = None
                ) -> torch.Tensor:  # fmt: skip
    """Biased linear HSIC |X_i^T Y_j|_F^2 (up to the factor (N - 1)^-2) of every x in ``xs``
    and y in ``ys`` (default ``xs``), each (..., N, d) in :func:`linear_features` form:
    (..., Lx, Ly) float64.

    Narrow representations (each side's total width at most ``BLOCK_FEATURES``) take one
    product of all features side by side, G = X^T Y in their dtype, whose squares are summed
    over each pair of blocks by indicator matrices P (F, L): P_x^T (G∘G) P_y; wider ones a
    product per pair.
    """
    ys = xs if ys is None else ys
    if max(sum(t.shape[-1] for t in side) for side in (xs, ys)) > BLOCK_FEATURES:
        rows = [torch.stack([(x.transpose(-1, -2) @ y).double().square().sum(dim=(-2, -1))
                             for y in ys], dim=-1) for x in xs]  # fmt: skip
        return torch.stack(rows, dim=-2)
    x = _side_by_side(xs)
    y = x if ys is xs else _side_by_side(ys)
    gram = (x.transpose(-1, -2) @ y).double().square()
    return _block_indicator(xs, x.device).T @ gram @ _block_indicator(ys, x.device)


def _side_by_side(blocks: Sequence[torch.Tensor]) -> torch.Tensor:
    """Representations (..., N, d_i) side by side (..., N, sum d_i); one is not copied.
    Blocks kept features first in memory (packed members' layers) are joined so, whole rows
    of N at a time, and the result is a view (..., N, sum d_i) of that layout."""
    if len(blocks) == 1:
        return blocks[0]
    if all(b.stride(-2) == 1 for b in blocks):
        return torch.cat([b.transpose(-1, -2) for b in blocks], dim=-2).transpose(-1, -2)
    return torch.cat(list(blocks), dim=-1)


def _block_indicator(blocks: Sequence[torch.Tensor], device: torch.device) -> torch.Tensor:
    """(F, L) float64: column l is 1 on the features of block l of ``blocks`` side by side."""
    widths = torch.tensor([t.shape[-1] for t in blocks], device=device)
    owner = torch.repeat_interleave(torch.arange(len(blocks), device=device), widths)
    return torch.nn.functional.one_hot(owner, len(blocks)).double()


def rbf_gram(x: torch.Tensor, sigma_frac: float = 1.0) -> torch.Tensor:
    """(N, N) Gaussian Gram matrix of x (N, ...), bandwidth ``sigma_frac`` x median distance."""
    sq = _squared_distances(x)
    return torch.exp(-sq / (2.0 * sigma_frac**2 * _median(sq.flatten())))


def gram_hsic(k: torch.Tensor, l: torch.Tensor, debiased: bool = False) -> torch.Tensor:  # noqa: E741
    """HSIC of two (N, N) Gram matrices: <HKH, HLH>_F (biased, unnormalised) or Song's
    unbiased estimator (diagonals zeroed)."""
    if not debiased:
        return (_double_centred(k) * _double_centred(l)).sum()
    n = k.shape[0]
    k, l = k.clone(), l.clone()  # noqa: E741
    k.diagonal().zero_()
    l.diagonal().zero_()
    trace = (k * l).sum()
    k_rows, l_rows = k.sum(dim=1), l.sum(dim=1)
    return _unbiased(trace, k_rows.sum(), l_rows.sum(), k_rows @ l_rows, n)


class MinibatchCKA:
    """Streaming debiased linear CKA over minibatches (Nguyen et al. 2021).

    Each :meth:`update` adds the unbiased HSIC of every pair of layers on one batch; the CKA
    matrix normalises the sums once: CKA_ij = sum_b w_b HSIC_ij / sqrt(sum_b w_b HSIC_ii
    sum_b w_b HSIC_jj). With one batch holding all samples it equals
    ``cka(x, y, debiased=True)``.

    ``weighting`` sets w_b: ``"batch"`` (default) counts each batch's estimate once;
    ``"pairs"`` weights it by n_b (n_b - 3), the sum over its sample pairs that Nguyen et al.'s
    ``efficient_CKA.py`` accumulates. The two agree when all batches have one size and differ
    (by about 1e-3 on MNIST layers) when the last batch is smaller.
    """

    WEIGHTINGS = ("batch", "pairs")

    def __init__(self, weighting: str = "batch") -> None:
        if weighting not in self.WEIGHTINGS:
            raise ValueError(f"weighting must be one of {self.WEIGHTINGS}, got {weighting!r}")
        self.weighting = weighting
        self.cross: torch.Tensor | None = None  # (Lx, Ly) summed HSIC
        self.self_x: torch.Tensor | None = None  # (Lx,)
        self.self_y: torch.Tensor | None = None  # (Ly,)
        self.batches = 0

    def update(self, xs: Sequence[torch.Tensor], ys: Sequence[torch.Tensor] | None = None) -> None:
        """Add one batch: layers ``xs`` (each (B, ...)) against ``ys`` (default ``xs``)."""
        gx = _zero_diagonal_grams(xs)  # (Lx, B, B)
        gy = gx if ys is None else _zero_diagonal_grams(ys)
        if gx.shape[1] != gy.shape[1] or gx.shape[1] < 4:
            raise ValueError(f"each batch needs the same >= 4 samples, got {gx.shape[1]}, "
                             f"{gy.shape[1]}")  # fmt: skip
        cross, self_x, self_y = _pairwise_unbiased_hsic(gx, gy)
        if self.weighting == "pairs":
            n = gx.shape[1]
            cross, self_x, self_y = (v * (n * (n - 3)) for v in (cross, self_x, self_y))
        if self.cross is None:
            self.cross, self.self_x, self.self_y = cross, self_x, self_y
        else:
            self.cross = self.cross + cross
            self.self_x = self.self_x + self_x
            self.self_y = self.self_y + self_y
        self.batches += 1

    def compute(self) -> torch.Tensor:
        """The (Lx, Ly) CKA matrix of everything added so far."""
        if self.cross is None:
            raise RuntimeError("MinibatchCKA.compute() before any update()")
        return self.cross / (self.self_x[:, None] * self.self_y[None, :]).sqrt()


def linear_features(x: torch.Tensor) -> torch.Tensor:
    """Centred features (N, d) -> (N, min(d, N)) with the same linear Gram matrix, so the
    same linear CKA with anything: a compact form to keep a representation in.

    Centring leaves every HSIC here unchanged and keeps the sums of squares accurate; a layer
    wider than N is replaced by R^T from the QR factorisation X^T = QR (X X^T = R^T R), so no
    later product involves more than N columns.
    """
    x = x - x.mean(dim=0, keepdim=True)
    if x.shape[1] > x.shape[0]:
        x = torch.linalg.qr(x.T, mode="r").R.T
    return x


def _linear_hsic(x: torch.Tensor, y: torch.Tensor, debiased: bool) -> torch.Tensor:
    """HSIC of the linear kernels of x (..., N, d1), y (..., N, d2) (see
    :func:`linear_features`), without forming N x N matrices: (...) values."""
    n = x.shape[-2]
    trace = (x.transpose(-1, -2) @ y).square().sum(dim=(-2, -1))  # |X^T Y|_F^2
    if not debiased:
        return trace
    x_sq, y_sq = (x * x).sum(dim=-1), (y * y).sum(dim=-1)  # Gram diagonals (..., N)
    x_rows = (x @ x.sum(dim=-2)[..., None]).squeeze(-1) - x_sq  # zero-diagonal row sums
    y_rows = (y @ y.sum(dim=-2)[..., None]).squeeze(-1) - y_sq
    return _unbiased(trace - (x_sq * y_sq).sum(-1), x_rows.sum(-1), y_rows.sum(-1),
                     (x_rows * y_rows).sum(-1), n)  # fmt: skip


def _unbiased(trace, k_sum, l_sum, rows_dot, n: int) -> torch.Tensor:
    """Song et al.'s unbiased HSIC from tr(K~L~), 1'K~1, 1'L~1 and 1'K~L~1 (zero diagonals)."""
    return (trace + k_sum * l_sum / ((n - 1) * (n - 2)) - 2.0 * rows_dot / (n - 2)) / (n * (n - 3))


def _squared_distances(x: torch.Tensor) -> torch.Tensor:
    """(..., N, N) squared distances between the rows of x (..., N, d)."""
    sq = (x * x).sum(dim=-1)
    return (sq[..., :, None] + sq[..., None, :] - 2.0 * x @ x.transpose(-1, -2)).clamp_min_(0.0)


def _median(values: torch.Tensor) -> torch.Tensor:
    """The median along the last axis, (..., M) -> (...), the mean of the two middle values
    for an even count (as ``numpy.median``; ``torch.median`` returns the lower one)."""
    n = values.shape[-1]
    upper = values.kthvalue(n // 2 + 1, dim=-1).values
    return upper if n % 2 else (upper + values.kthvalue(n // 2, dim=-1).values) / 2


def _double_centred(k: torch.Tensor) -> torch.Tensor:
    """H K H with H = I - 11'/N."""
    return k - k.mean(dim=0, keepdim=True) - k.mean(dim=1, keepdim=True) + k.mean()


def _zero_diagonal_grams(xs: Sequence[torch.Tensor]) -> torch.Tensor:
    """(L, B, B) linear Gram matrices of layers (each (B, ...)) with zeroed diagonals, from
    centred features (the unbiased HSIC is the same; float32 sums stay accurate)."""
    features = [paired(xs[0], t)[1] for t in xs]
    grams = torch.stack([(x := t - t.mean(dim=0)) @ x.T for t in features])
    grams.diagonal(dim1=1, dim2=2).zero_()
    return grams


def _pairwise_unbiased_hsic(gx: torch.Tensor, gy: torch.Tensor):
    """Unbiased HSIC of every (x, y) pair and of each with itself, from zero-diagonal Grams
    (Lx, B, B) and (Ly, B, B): ((Lx, Ly), (Lx,), (Ly,))."""
    n = gx.shape[1]
    rows_x, rows_y = gx.sum(dim=2), gy.sum(dim=2)  # (L, B)
    sums_x, sums_y = rows_x.sum(dim=1), rows_y.sum(dim=1)  # (L,)
    flat_x, flat_y = gx.flatten(1), gy.flatten(1)
    cross = _unbiased(flat_x @ flat_y.T, sums_x[:, None], sums_y[None, :], rows_x @ rows_y.T, n)
    self_x = _unbiased((flat_x * flat_x).sum(1), sums_x, sums_x, (rows_x * rows_x).sum(1), n)
    self_y = _unbiased((flat_y * flat_y).sum(1), sums_y, sums_y, (rows_y * rows_y).sum(1), n)
    return cross, self_x, self_y
