"""Everything MLflow: store layout, experiments, runs, batched logging, artifacts and tags.

The embedded default store is ``mlruns/mlflow.db`` (SQLite) under the current directory, with
artifacts in ``mlruns/artifacts``. ``--tracking-uri`` or ``MLFLOW_TRACKING_URI`` choose another
store (another SQLite file, or an MLflow tracking server). Metrics are written as one
``log_batch`` call per epoch: a single-point call costs ~4 ms on SQLite.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

DEFAULT_STORE_DIR = "mlruns"
DEFAULT_DB_NAME = "mlflow.db"
ARTIFACTS_DIR = "artifacts"

# MLflow's per-call limits of log_batch.
_MAX_METRICS_PER_CALL = 1000
_MAX_PARAMS_PER_CALL = 100


def resolve_tracking_uri(uri: str | None = None) -> str:
    """``uri``, else ``$MLFLOW_TRACKING_URI``, else the default ``sqlite:///<cwd>/mlruns/mlflow.db``."""
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    return "sqlite:///" + str(Path.cwd() / DEFAULT_STORE_DIR / DEFAULT_DB_NAME)


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI, or None for any other store."""
    parsed = urlparse(uri)
    if parsed.scheme != "sqlite":
        return None
    return Path(unquote(uri[len("sqlite:///") :]))


def artifact_root(uri: str) -> Path | None:
    """Where artifacts of a SQLite store live: ``artifacts/`` beside the database file."""
    db = sqlite_path(uri)
    return None if db is None else db.parent / ARTIFACTS_DIR


def _quiet_mlflow_logs() -> None:
    for name in ("mlflow", "alembic", "alembic.runtime.migration"):
        logging.getLogger(name).setLevel(logging.WARNING)


class Tracker:
    """One tracking store. Creates a SQLite store (directory and schema) once, on first use."""

    def __init__(self, uri: str | None = None) -> None:
        from mlflow.tracking import MlflowClient

        _quiet_mlflow_logs()  # after the import: mlflow sets its own levels when imported

        self.uri = resolve_tracking_uri(uri)
        db = sqlite_path(self.uri)
        if db is not None:
            db.parent.mkdir(parents=True, exist_ok=True)
        self.client = MlflowClient(tracking_uri=self.uri)

    def experiment_id(self, name: str) -> str:
        """Id of experiment ``name``, created (artifacts under the store's root) if absent."""
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        root = artifact_root(self.uri)
        location = None
        if root is not None:
            slug = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "experiment"
            location = (root / f"{slug}-{int(time.time() * 1000)}").as_uri()
        try:
            return self.client.create_experiment(name, artifact_location=location)
        except Exception:  # created meanwhile by another process
            found = self.client.get_experiment_by_name(name)
            if found is None:
                raise
            return found.experiment_id

    def start_run(
        self,
        experiment: str,
        *,
        run_name: str | None = None,
        tags: Mapping[str, str] | None = None,
        parent_run_id: str | None = None,
    ) -> RunLogger:
        """Create a run (a child of ``parent_run_id`` if given) and return its logger."""
        all_tags = dict(tags or {})
        if parent_run_id is not None:
            all_tags["mlflow.parentRunId"] = parent_run_id
        run = self.client.create_run(
            self.experiment_id(experiment), tags=all_tags, run_name=run_name
        )
        return RunLogger(self.client, run.info.run_id)


class RunLogger:
    """Writes one run: params and tags in batches, metrics as one batch per step."""

    def __init__(self, client: Any, run_id: str) -> None:
        self.client = client
        self.run_id = run_id

    def log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)) for k, v in params.items()]
        for i in range(0, len(items), _MAX_PARAMS_PER_CALL):
            self.client.log_batch(self.run_id, params=items[i : i + _MAX_PARAMS_PER_CALL])

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        from mlflow.entities import RunTag

        items = [RunTag(k, str(v)) for k, v in tags.items()]
        for i in range(0, len(items), _MAX_PARAMS_PER_CALL):
            self.client.log_batch(self.run_id, tags=items[i : i + _MAX_PARAMS_PER_CALL])

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """All of ``metrics`` at ``step`` in one call (split only past MLflow's 1000 limit)."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step) for k, v in metrics.items()]
        for i in range(0, len(items), _MAX_METRICS_PER_CALL):
            self.client.log_batch(self.run_id, metrics=items[i : i + _MAX_METRICS_PER_CALL])

    def log_dict(self, data: dict[str, Any], artifact_file: str) -> None:
        self.client.log_dict(self.run_id, data, artifact_file)

    def end(self, status: str = "FINISHED") -> None:
        """Close the run as FINISHED, FAILED or KILLED."""
        self.client.set_terminated(self.run_id, status=status)


def git_commit(path: Path) -> str | None:
    """HEAD commit of the git work tree holding ``path`` (suffix ``-dirty`` if modified)."""
    try:
        head = subprocess.run(
            ["git", "-C", str(path), "rev-parse", "HEAD"],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()  # fmt: skip
        dirty = subprocess.run(
            ["git", "-C", str(path), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("-dirty" if dirty else "") if head else None
