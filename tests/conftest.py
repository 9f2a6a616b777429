"""Shared fixtures: a real SQLite MLflow store in a temp dir; no ambient tracking URI or
plugin selection; the suite's own cache of store templates, not the user's."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from infoflow_track.estimators import ESTIMATORS
from infoflow_track.registry import AUTOLOAD_OFF_ENV, DISABLED_ENV, EXPLICIT_ENV
from infoflow_track.store_template import CACHE_ENV


@pytest.fixture
def sqlite_uri(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"


@pytest.fixture(scope="session", autouse=True)
def _own_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """INFOFLOW_CACHE_DIR of this test process (subprocesses inherit it): the template of new
    stores is made once per xdist worker, and nothing is written to the user's cache."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(CACHE_ENV, str(tmp_path_factory.mktemp("cache")))
        yield


@pytest.fixture(autouse=True)
def _no_ambient_tracking_uri(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    estimators = (ESTIMATORS.autoload_env, ESTIMATORS.explicit_env, ESTIMATORS.disabled_env)
    for variable in (AUTOLOAD_OFF_ENV, EXPLICIT_ENV, DISABLED_ENV, *estimators):
        monkeypatch.setenv(variable, "")  # empty is the default; restored after the test
