"""Argument checks shared by the measures: precise errors before any arithmetic."""

from __future__ import annotations

import torch


def check_layer_and_labels(t: torch.Tensor, y: torch.Tensor) -> None:
    """``t`` (N, ...) floating activations with N >= 1, ``y`` (N,) non-negative int labels."""
    if not t.is_floating_point() or t.dim() < 2 or t.shape[0] < 1:
        raise ValueError(f"activations must be a floating (N, ...) tensor, got {_show(t)}")
    if y.dim() != 1 or y.shape[0] != t.shape[0] or y.is_floating_point() or y.dtype == torch.bool:
        raise ValueError(f"labels must be an integer ({t.shape[0]},) tensor, got {_show(y)}")


def check_paired(x: torch.Tensor, y: torch.Tensor) -> None:
    """Two floating representations (N, ...) of the same N samples."""
    for name, t in (("x", x), ("y", y)):
        if not t.is_floating_point() or t.dim() < 2:
            raise ValueError(f"{name} must be a floating (N, ...) tensor, got {_show(t)}")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x and y must hold the same samples, got {x.shape[0]} and {y.shape[0]}")


def _show(t: torch.Tensor) -> str:
    return f"{t.dtype} of shape {tuple(t.shape)}"
