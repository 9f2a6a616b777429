"""Shared fixtures: a real SQLite MLflow store in a temp dir; no ambient tracking URI or
plugin selection."""

from __future__ import annotations

from pathlib import Path

import pytest

from infoflow_track.estimators import ESTIMATORS
from infoflow_track.registry import AUTOLOAD_OFF_ENV, DISABLED_ENV, EXPLICIT_ENV


@pytest.fixture
def sqlite_uri(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"


@pytest.fixture(autouse=True)
def _no_ambient_tracking_uri(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    estimators = (ESTIMATORS.autoload_env, ESTIMATORS.explicit_env, ESTIMATORS.disabled_env)
    for variable in (AUTOLOAD_OFF_ENV, EXPLICIT_ENV, DISABLED_ENV, *estimators):
        monkeypatch.setenv(variable, "")  # empty is the default; restored after the test
