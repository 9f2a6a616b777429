"""A dataset as its source gives it, on the host, and what sources share to make one."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class RawData:
    """A dataset as its source gives it, on the host: x (N, *shape) float32, y (N,) int64, and
    the source's official test set x_test (M, *shape), y_test (M,) if it has one."""

    x: np.ndarray
    y: np.ndarray
    class_names: tuple[str, ...]
    x_test: np.ndarray | None = None
    y_test: np.ndarray | None = None


def one_line(exc: BaseException) -> str:
    """An exception's message on one line, at most 300 characters (for a UserError)."""
    return " ".join(str(exc).split())[:300]


def standardise(x: np.ndarray, dims: tuple[int, ...] | None = None) -> np.ndarray:
    """Shift and scale float32 ``x`` in place to zero mean and unit variance over ``dims``: one
    affine map per index of the other dims (``(0, 2, 3)``: per channel of (N, C, H, W)), one
    for all values if None. A constant slice is only shifted. Returns ``x``.

    Such a fixed map speeds up training and leaves every MI unchanged.
    """
    import torch  # here, not at import: reading a dataset's files needs no torch

    t = torch.from_numpy(x)
    var, mean = torch.var_mean(t, dim=dims, correction=0, keepdim=True)  # float64 sums on CPU
    t.sub_(mean).div_(torch.where(var > 0, var.sqrt(), 1.0))
    return x


def with_official_test(
    x: np.ndarray, y: np.ndarray, n_train: int | None, names: tuple[str, ...]
) -> RawData:
    """RawData of rows x, y: the rows from ``n_train`` on are the official test set (None:
    there is none)."""
    if n_train is None:
        return RawData(x, y, names)
    return RawData(x[:n_train], y[:n_train], names, x[n_train:], y[n_train:])
