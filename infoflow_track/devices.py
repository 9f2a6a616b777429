"""Resolve ``--device auto|cpu|cuda|cuda:N`` to an available ``torch.device``."""

from __future__ import annotations

import re

import torch

from infoflow_track.errors import UserError, choices_text


def available_devices() -> list[str]:
    """Names of the devices usable here: ``cpu`` and one ``cuda:N`` per visible GPU."""
    return ["cpu"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]


def resolve_device(text: str) -> torch.device:
    """Map the ``--device`` text to a device that exists here, or raise :class:`UserError`."""
    name = text.strip().lower()
    valid = ["auto", *available_devices()]
    if name == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    match = re.fullmatch(r"cuda(?::(\d+))?", name)
    if match is None:
        raise UserError(f"unknown --device {text!r}: valid here are {choices_text(valid)}")
    index = int(match.group(1) or 0)
    if index >= torch.cuda.device_count():
        raise UserError(
            f"--device {text!r} is not available on this machine "
            f"({torch.cuda.device_count()} CUDA device(s) visible): valid here are "
            f"{choices_text(valid)}"
        )
    return torch.device("cuda", index)


def describe_device(device: torch.device) -> str:
    """``cpu`` or ``cuda:0 (NVIDIA H100 80GB HBM3)``, for run tags."""
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)


def worker_device(text: str, worker: int) -> str | None:
    """The device of parallel worker ``worker``: with ``auto`` or ``cuda`` and several GPUs
    visible, GPUs round-robin (``cuda:{worker % count}``); otherwise None (keep ``text``)."""
    count = torch.cuda.device_count()
    if text.strip().lower() in ("auto", "cuda") and count > 0:
        return f"cuda:{worker % count}"
    return None
