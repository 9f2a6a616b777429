"""Which process owns a run or a trial, and whether that process still runs.

An owner is ``host:pid:start`` (start time in clock ticks since boot, so that a reused pid is
not mistaken for the original owner). A dead owner on this host means its run or trial was
abandoned (SIGKILL, OOM, a full disk); an owner on another host cannot be checked from here.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path


def owner_id() -> str:
    """This process as ``host:pid:start``."""
    return f"{socket.gethostname()}:{os.getpid()}:{_start_ticks(os.getpid())}"


def owner_alive(owner: str) -> bool | None:
    """Whether the process ``owner`` still runs; None if it is on another host (or unreadable)."""
    parts = owner.rsplit(":", 2)
    if len(parts) != 3 or not parts[1].isdigit():
        return None
    host, pid, start = parts[0], int(parts[1]), parts[2]
    if host != socket.gethostname():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by another user
    state, ticks = _stat(pid)
    return ticks == start and state != "Z"  # a zombie has ended: its parent has not reaped it


def _start_ticks(pid: int) -> str:
    return _stat(pid)[1]


def _stat(pid: int) -> tuple[str, str]:
    """The process's state letter (``R``, ``S``, ``Z``…) and start time in clock ticks, from
    ``/proc`` (``("?", "?")`` where there is none)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return "?", "?"
    fields = stat.rsplit(")", 1)[1].split()
    return fields[0], fields[19]  # fields 3 and 22: state, starttime
