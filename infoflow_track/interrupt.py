"""Ctrl-C as a request to stop at the next epoch end, so that no run or database write is
cut in half: :class:`StopRequest`, used by `infoflow run` and by study workers."""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class StopRequest:
    """Ctrl-C as a request: the first stops training at the next epoch end (the run, and a
    study's trial, are closed cleanly, no database write is cut in half), a second stops it
    at once. ``check`` is the epoch listener that raises KeyboardInterrupt once requested;
    ``event`` carries the request from a study's parent to its spawned workers."""

    def __init__(self, event: Any = None) -> None:
        self.event = event
        self.requested = False

    def _on_sigint(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print("\nstopping after this epoch (Ctrl-C again stops at once)", file=sys.stderr,
              flush=True)  # fmt: skip

    @contextmanager
    def installed(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = signal.signal(signal.SIGINT, self._on_sigint)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)

    def check(self, *_: Any) -> None:
        """Raise KeyboardInterrupt if a stop was requested (also an epoch listener)."""
        if self.requested or (self.event is not None and self.event.is_set()):
            raise KeyboardInterrupt

    def wait(self, seconds: float) -> None:
        """Sleep ``seconds``, raising KeyboardInterrupt as soon as a stop is requested."""
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            self.check()
            time.sleep(min(left, 0.2))
        self.check()
