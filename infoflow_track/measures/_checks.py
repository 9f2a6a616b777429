"""Argument checks shared by the measures: precise errors before any arithmetic, and the
inputs brought to a form every estimator can compute in."""

from __future__ import annotations

import torch


def layer_and_labels(t: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Check ``t`` (N, ...) floating activations and ``y`` (N,) integer labels on the same
    device (no device read: signs are checked by :func:`class_count`); return t as (N, D) in
    float32 or wider and y as int64.

    Half-precision activations are widened: their range and resolution are too small for
    sums of squares, bin scales and kernel sums.
    """
    if not t.is_floating_point() or t.dim() < 2 or t.shape[0] < 1:
        raise ValueError(f"activations must be a floating (N, ...) tensor, got {_show(t)}")
    if y.dim() != 1 or y.shape[0] != t.shape[0] or y.is_floating_point() or y.dtype == torch.bool:
        raise ValueError(f"labels must be an integer ({t.shape[0]},) tensor, got {_show(y)}")
    if y.device != t.device:
        raise ValueError(f"activations are on {t.device} but labels on {y.device}")
    return _wide(t.reshape(t.shape[0], -1)), y.long()


def replicate_layers(t: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`layer_and_labels` of K replicates: ``t`` (K, N, ...) against ``y`` (N,); return
    t as (K, N, D) in float32 or wider and y as int64."""
    if t.dim() < 3:
        raise ValueError(f"replicates must be a floating (K, N, ...) tensor, got {_show(t)}")
    _, y = layer_and_labels(t[0], y)
    return _wide(t.reshape(t.shape[0], t.shape[1], -1)), y


def class_count(y: torch.Tensor) -> int:
    """``y.max() + 1`` of labels y (N,), checked non-negative: one device-to-host read."""
    low, high = torch.stack(torch.aminmax(y)).tolist()
    if low < 0:
        raise ValueError("labels must be non-negative class indices")
    return high + 1


def paired(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Check two floating representations (N, ...) of the same N samples on one device;
    return them as (N, D1), (N, D2) in float32 or wider."""
    for name, t in (("x", x), ("y", y)):
        if not t.is_floating_point() or t.dim() < 2:
            raise ValueError(f"{name} must be a floating (N, ...) tensor, got {_show(t)}")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x and y must hold the same samples, got {x.shape[0]} and {y.shape[0]}")
    if x.device != y.device:
        raise ValueError(f"x is on {x.device} but y on {y.device}")
    return _wide(x.reshape(x.shape[0], -1)), _wide(y.reshape(y.shape[0], -1))


def all_finite(t: torch.Tensor) -> bool:
    """True if no activation is NaN or infinite (one device-to-host read)."""
    return bool(torch.isfinite(t).all())


def _wide(t: torch.Tensor) -> torch.Tensor:
    return t.float() if t.element_size() < 4 else t


def _show(t: torch.Tensor) -> str:
    return f"{t.dtype} of shape {tuple(t.shape)}"
