"""Talking to a running MLflow UI server (``infoflow ui``): wait until it answers, call its
REST API (what its pages are built from). Used by the UI tests and screenshots."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request

#: A guard against a hung server only: callers wait for it to answer, not for a timer.
HANG_S = 600.0


def wait_until_serving(server: subprocess.Popen, base: str) -> float:
    """Seconds until ``base``/health answered; RuntimeError as soon as the server process
    exits (with its output), or if it hangs for :data:`HANG_S`."""
    started = time.monotonic()
    while True:
        try:
            with urllib.request.urlopen(f"{base}/health", timeout=2):
                return time.monotonic() - started
        except OSError:
            if server.poll() is not None:
                output = server.stdout.read() if server.stdout else ""
                raise RuntimeError(f"the UI server exited: {output}") from None
            if time.monotonic() - started > HANG_S:
                raise RuntimeError(f"the UI server did not answer in {HANG_S:.0f} s") from None
            time.sleep(0.25)


def rest(base: str, path: str, body: dict | None = None) -> dict:
    """GET (or with ``body``, POST) ``base``/api/2.0/mlflow/``path``: the JSON answer."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"{base}/api/2.0/mlflow/{path}", data=data,
                                     headers={"Content-Type": "application/json"})  # fmt: skip
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())
