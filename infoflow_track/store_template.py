"""New SQLite tracking stores copied from an empty one MLflow migrated earlier.

MLflow creates a SQLite store by running its whole schema history (1.5 to 3 s); a copy of a
store it migrated takes milliseconds. One template per MLflow version is kept in
``$INFOFLOW_CACHE_DIR`` (default ``$XDG_CACHE_HOME/infoflow``, else ``~/.cache/infoflow``),
made by MLflow itself the first time, with the ``Default`` experiment its creation adds taken
out: MLflow adds it again, with the opener's own artifact root, whenever it opens a store that
lacks it. Where no template can be kept (a read-only home), stores are migrated as before.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import uuid
from pathlib import Path

CACHE_ENV = "INFOFLOW_CACHE_DIR"


def cache_dir() -> Path:
    """Where infoflow keeps what it can rebuild: ``$INFOFLOW_CACHE_DIR``, else
    ``$XDG_CACHE_HOME/infoflow``, else ``~/.cache/infoflow``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "infoflow"


def template_path() -> Path:
    """The template of the installed MLflow version (its schema is fixed per version)."""
    import mlflow

    return cache_dir() / f"mlflow-{mlflow.__version__}-empty.db"


def mlflow_open(db: Path) -> None:
    """Open the SQLite store ``db`` with MLflow, which migrates it through every schema
    version where it has no tables, checks its schema version, and adds the ``Default``
    experiment where it lacks one; the engine released (MLflow keeps no other handle on it)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    client.get_experiment_by_name("Default")
    client._tracking_client.store.engine.dispose()


def template() -> Path | None:
    """The template, made under a lock if it is missing; None where the cache cannot hold it."""
    from filelock import FileLock

    path = template_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(path.with_name(f".{path.name}.lock")):
            if not path.is_file():
                _make(path)
    except Exception:  # only an optimisation: whatever fails here, stores migrate as before
        return None
    return path


def discard() -> None:
    """Remove the template (one that no longer opens is made again when next needed)."""
    template_path().unlink(missing_ok=True)


def new_draft(path: Path) -> Path:
    """A new name beside ``path`` to build it under (call holding the lock on ``path``), the
    drafts of killed builders removed. Never a name used before: MLflow keeps the store it
    opened at a URI for the life of the process, even after the file is gone."""
    for stale in path.parent.glob(f".{path.name}.creating-*"):
        stale.unlink(missing_ok=True)
    return path.with_name(f".{path.name}.creating-{os.getpid()}-{uuid.uuid4().hex[:12]}")


def _make(path: Path) -> None:
    """Migrate a draft beside ``path``, take out its Default experiment, rename it into place
    (a process killed meanwhile leaves a draft, removed by the next maker, not a template)."""
    draft = new_draft(path)
    mlflow_open(draft)
    with contextlib.closing(sqlite3.connect(draft)) as con:
        con.execute("DELETE FROM experiment_tags WHERE experiment_id = 0")
        con.execute("DELETE FROM experiments WHERE experiment_id = 0")
        con.commit()
    os.replace(draft, path)


def copy_to(draft: Path) -> bool:
    """Write an empty migrated store at ``draft`` from the template: False, and nothing
    written, where there is no template; errors writing ``draft`` itself are raised."""
    source = template()
    if source is None:
        return False
    shutil.copyfile(source, draft)
    return True
