"""Every registered plugin passes the public conformance kit (infoflow_track.testing), as a
third-party plugin's own suite runs it."""

from __future__ import annotations

from pathlib import Path

import pytest

from infoflow_track.registry import discover
from infoflow_track.testing import CHECKS, Subject


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """One test per registered plugin, scanned when this module's tests are generated (after
    import, so importing the module scans nothing): every check of each."""
    if "name" in metafunc.fixturenames:
        metafunc.parametrize("name", sorted(discover()))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One folder, and so one real SQLite store, for the module: creating one costs seconds."""
    return tmp_path_factory.mktemp("conformance")


def test_every_builtin_is_registered() -> None:
    builtins = {n for n, e in discover().items() if e.package == "infoflow-plugins"}
    expected = {"mlp", "bottleneck-mlp", "simple-cnn", "local-mi", "weight-feedback",
                "two-timescale"}  # fmt: skip
    assert builtins == expected


#: Every check of the kit; one_epoch_logged trains and logs a real run: seconds a plugin.
KIT = [pytest.param(c, marks=pytest.mark.slow) if c == "one_epoch_logged" else c for c in CHECKS]


@pytest.mark.parametrize("check", KIT)
def test_plugin_passes_the_conformance_kit(name: str, check: str, workdir: Path) -> None:
    CHECKS[check](Subject(discover()[name].load(), workdir))
