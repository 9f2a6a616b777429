"""The suite itself: collecting it imports none of torch, MLflow and Optuna, and its markers
are registered and carried, so that `pytest -m "not slow"` is a quick loop."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from helpers import REPO

MARKERS = {"slow", "e2e"}
HEAVY = ("torch", "mlflow", "optuna")

#: Collects the suite as `pytest --collect-only` does, in a fresh interpreter, then prints one
#: line: the heavy modules that collecting imported and each test's marker names.
COLLECT = f"""
import json, sys
import pytest

class Record:
    items = []

    def pytest_collection_finish(self, session):
        Record.items = [(i.nodeid, sorted({{m.name for m in i.iter_markers()}}))
                        for i in session.items]

code = pytest.main(["--collect-only", "-q", "-p", "no:cacheprovider", "tests"],
                   plugins=[Record()])
heavy = sorted(m for m in {HEAVY!r} if m in sys.modules)
print("LAYOUT " + json.dumps({{"exit": int(code), "heavy": heavy, "items": Record.items}}))
"""


@pytest.fixture(scope="module")
def collected() -> dict:
    """The suite as collected in a subprocess: a second or two, so part of the quick loop whose
    speed it guards."""
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS"}
    proc = subprocess.run([sys.executable, "-c", COLLECT], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    lines = [line for line in proc.stdout.splitlines() if line.startswith("LAYOUT ")]
    assert lines, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(lines[-1][len("LAYOUT ") :])
    assert result["exit"] == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return result


def test_the_markers_are_registered_and_strict(pytestconfig: pytest.Config) -> None:
    registered = {line.split(":")[0].strip() for line in pytestconfig.getini("markers")}
    assert registered >= MARKERS
    assert "--strict-markers" in pytestconfig.getini("addopts")  # a misspelt marker is an error


def test_collecting_the_suite_imports_none_of_torch_mlflow_optuna(collected: dict) -> None:
    assert collected["heavy"] == []


def test_each_marker_is_carried_and_every_e2e_test_is_slow(collected: dict) -> None:
    marks = {nodeid: set(names) for nodeid, names in collected["items"]}
    for marker in MARKERS:
        assert any(marker in names for names in marks.values()), marker
    assert [n for n, names in marks.items() if "e2e" in names and "slow" not in names] == []
    fast = [n for n, names in marks.items() if "slow" not in names]
    assert len(fast) > len(marks) / 2  # the quick loop is most of the suite, not a token
