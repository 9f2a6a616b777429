"""Everything MLflow: store layout, experiments, runs, batched logging, artifacts and tags.

The embedded default store is ``mlruns/mlflow.db`` (SQLite) under the current directory, with
artifacts in ``mlruns/artifacts``. ``--tracking-uri`` or ``MLFLOW_TRACKING_URI`` choose another
store (another SQLite file, or an MLflow tracking server). Metrics are written as one
``log_batch`` call per epoch: a single-point call costs ~4 ms on SQLite.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from infoflow_track import store_template
from infoflow_track.errors import UserError
from infoflow_track.names import (
    ERROR_TAG,
    EXPERIMENT_KIND_TAG,
    MODEL_TRAINING_KIND,
    NOTE_TAG,
    OWNER_TAG,
    RUNS_VIEW_TAG,
)
from infoflow_track.owners import owner_alive, owner_id
from infoflow_track.uris import mask_credentials, split_credentials

DEFAULT_STORE_DIR = "mlruns"
DEFAULT_DB_NAME = "mlflow.db"
ARTIFACTS_DIR = "artifacts"
STORE_SCHEMES = ("sqlite", "http", "https", "postgresql", "mysql", "mssql", "databricks")

# MLflow's per-call limits of log_batch.
_MAX_METRICS_PER_CALL = 1000
#: The MLflow UI's address, for links, where the tracking URI is no server's (e.g. SQLite
#: served by `infoflow ui`): http://127.0.0.1:5000.
UI_URL_ENV = "INFOFLOW_UI_URL"
#: The query that opens the MLflow UI's model-training pages (else its GenAI ones).
_TRAINING_VIEW = "workflowType=machine_learning"
#: An experiment's description where its maker gives none (Markdown, shown by the UI).
DEFAULT_DESCRIPTION = (
    "Runs of infoflow, one per configuration, each with "
    "per-epoch accuracy and loss, I(X;T) and I(T;Y) of every probed layer (`mi_xt/<layer>`, "
    "`mi_ty/<layer>`) and CKA (`cka_label/<layer>`, `cka_init/<layer>`); the information "
    "planes and CKA matrices are under each run's artifacts."
)
_MAX_PARAMS_PER_CALL = 100


def resolve_tracking_uri(uri: str | None = None) -> str:
    """``uri``, else ``$MLFLOW_TRACKING_URI``, else ``sqlite:///<cwd>/mlruns/mlflow.db``.

    A relative SQLite path is made absolute against the current directory. Anything but a
    database or server URI (MLflow 3 has no file store) is a :class:`UserError`.
    """
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        return "sqlite:///" + str(Path.cwd() / DEFAULT_STORE_DIR / DEFAULT_DB_NAME)
    scheme = urlparse(uri).scheme.split("+")[0]
    if scheme not in STORE_SCHEMES:
        raise UserError(
            f"invalid tracking URI {mask_credentials(uri)!r}: MLflow 3 has no file store; valid "
            "are "
            "sqlite:///PATH/mlflow.db, http(s)://SERVER, postgresql://..., mysql://..."
        )
    db = sqlite_path(uri)
    if db is None:
        return uri
    if not db.name or db.is_dir() or uri.endswith("/"):
        raise UserError(f"invalid tracking URI {uri!r}: name a database file, e.g. sqlite:///x.db")
    check_creatable(db, f"tracking URI {uri!r}")
    return "sqlite:///" + str(db.resolve())


def check_creatable(path: Path, what: str) -> None:
    """UserError naming ``what`` unless ``path`` is a file or could be made: no folder on its
    way may be a file, and the first existing one must be writable. Nothing is created."""
    path = path.expanduser().absolute()
    if path.exists():
        if not path.is_file():
            raise UserError(f"invalid {what}: {str(path)!r} is not a regular file")
        return
    for folder in path.parents:
        if folder.is_dir():
            if not os.access(folder, os.W_OK | os.X_OK):
                raise UserError(f"invalid {what}: the folder {str(folder)!r} is not writable")
            return
        if folder.exists() or folder.is_symlink():
            raise UserError(f"invalid {what}: {str(folder)!r} is not a folder")


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI, or None for any other store."""
    if urlparse(uri).scheme != "sqlite":
        return None
    if not uri.startswith("sqlite:///"):
        raise UserError(f"invalid SQLite URI {uri!r}: write sqlite:///PATH (three slashes)")
    return Path(unquote(uri[len("sqlite:///") :]))


def default_store_dir(uri: str) -> Path:
    """The directory of a SQLite store (``mlruns/``), else ``./mlruns``: where a study's
    default Optuna journal lives."""
    db = sqlite_path(uri)
    return db.parent if db is not None else Path.cwd() / DEFAULT_STORE_DIR


def artifact_root(uri: str) -> Path | None:
    """Where artifacts of a SQLite store live: ``artifacts/`` beside the database file."""
    db = sqlite_path(uri)
    return None if db is None else db.parent / ARTIFACTS_DIR


def _quiet_mlflow_logs() -> None:
    for name in ("mlflow", "alembic", "alembic.runtime.migration"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # It logs each database error with its traceback before raising it: the error reaches
    # the command, which reports it in one line.
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)
    # nor a progress bar per downloaded record (reports, comparisons, figures drawn later)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


@contextmanager
def _creation_lock(db: Path | None) -> Iterator[None]:
    """Serialise first creation of a SQLite store across processes (concurrent creation of
    MLflow's schema corrupts it); a no-op for server stores."""
    if db is None:
        yield
        return
    from filelock import FileLock

    with FileLock(db.parent / f".{db.name}.lock"):
        yield


def check_experiment_name(name: str) -> str:
    """``name`` stripped, if MLflow can hold it here: 1 to 500 characters, and not
    ``Default`` (which MLflow creates with artifacts outside the store). Else UserError."""
    stripped = name.strip()
    if not stripped or len(stripped) > 500:
        raise UserError(f"invalid experiment name {name[:40]!r}: give 1 to 500 characters")
    if stripped == "Default":
        raise UserError(
            "invalid experiment name 'Default': MLflow keeps its artifacts outside the "
            "store; choose another name"
        )
    return stripped


def check_port_free(port: int) -> None:
    """UserError if ``port`` on 127.0.0.1 is taken."""
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as exc:
            raise UserError(f"--port {port} is not free on 127.0.0.1: {exc.strerror}") from None


def ui_command(uri: str, port: int, workers: int = 1) -> list[str]:
    """The argv serving the MLflow UI for store ``uri`` on 127.0.0.1:``port`` with
    ``workers`` processes (MLflow's default of 4 takes minutes to start on 2 cores); a port
    that is taken is a UserError."""
    check_port_free(port)
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri,
           "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)]  # fmt: skip
    root = artifact_root(uri)
    if root is not None:
        cmd += ["--default-artifact-root", root.as_uri()]
    return cmd


def _create_sqlite_store(db: Path) -> None:
    """Create MLflow's schema in a file beside ``db`` and rename it into place (call under
    :func:`_creation_lock`): a process killed mid-migration leaves no half-made store. The
    schema is a copy of :mod:`~infoflow_track.store_template`'s where there is one; a copy
    that MLflow does not open is discarded with its template, and the store migrated."""
    draft = store_template.new_draft(db)
    copied = store_template.copy_to(draft)
    try:
        store_template.mlflow_open(draft)
    except Exception as exc:
        if not copied or is_disk_full(exc):
            raise
        store_template.discard()
        draft = store_template.new_draft(db)  # removes the copy
        store_template.mlflow_open(draft)
    os.replace(draft, db)


def half_made_reason(db: Path) -> str | None:
    """Why the SQLite file ``db`` is an MLflow store whose creation was cut off (a table of an
    unfinished migration, or no schema version), or None if it is not one."""
    import sqlite3

    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as con:
        tables = {
            row[0] for row in con.execute("SELECT name FROM sqlite_master WHERE type='table'")
        }
        if not tables:
            return None
        leftovers = sorted(t for t in tables if t.startswith("_alembic_tmp_"))
        if leftovers:
            return f"an unfinished schema migration left table {leftovers[0]}"
        if (
            "alembic_version" not in tables
            or not con.execute("SELECT count(*) FROM alembic_version").fetchone()[0]
        ):
            return "it has no schema version"
    return None


def _holds_runs(db: Path) -> bool:
    import sqlite3

    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as con:
        try:
            return bool(con.execute("SELECT count(*) FROM runs").fetchone()[0])
        except sqlite3.Error:
            return False


def _open_sqlite_store(db: Path) -> None:
    """Create the store ``db`` if absent, or rebuild it if its creation was cut off before
    any run was recorded; a half-made store holding runs is a UserError with the fix."""
    if not db.exists() or db.stat().st_size == 0:
        _create_sqlite_store(db)
        return
    reason = half_made_reason(db)
    if reason is None:
        return
    if _holds_runs(db):
        raise UserError(
            f"tracking store {str(db)!r} is half-migrated ({reason}): back it up, drop the "
            f"_alembic_tmp_ tables and run `mlflow db upgrade sqlite:///{db}`"
        )
    db.unlink()  # a creation cut off before any run: nothing to keep
    _create_sqlite_store(db)


class Tracker:
    """One tracking store, opened (and for SQLite created, once, under a lock) on construction.

    A store that cannot be opened is a :class:`UserError` naming the URI. ``create=False``
    refuses a SQLite store that does not exist instead of creating it. An http(s) URI's
    ``user:password@`` moves to ``MLFLOW_TRACKING_USERNAME``/``_PASSWORD``, where MLflow reads
    basic-auth credentials (spawned workers inherit them).
    """

    def __init__(self, uri: str | None = None, *, create: bool = True) -> None:
        from mlflow.tracking import MlflowClient

        _quiet_mlflow_logs()  # after the import: mlflow sets its own levels when imported
        self.uri = _use_credentials(resolve_tracking_uri(uri))
        self.shown = mask_credentials(self.uri)
        self._experiments: dict[str, str] = {}
        db = sqlite_path(self.uri)
        if db is not None and not create and not db.is_file():
            raise UserError(f"no tracking store at {str(db)!r}: give the --tracking-uri of the "
                            "store the study was run with")  # fmt: skip
        _check_server_reachable(self.uri)
        try:
            if db is not None:
                db.parent.mkdir(parents=True, exist_ok=True)
                with _creation_lock(db):
                    _open_sqlite_store(db)
            self.client = MlflowClient(tracking_uri=self.uri)
            self.client.get_experiment_by_name("Default")  # opens the store
        except UserError:
            raise
        except Exception as exc:  # OSError, MlflowException, database errors
            if is_disk_full(exc):
                raise  # not bad input: the command says so and exits 1
            raise UserError(
                f"cannot open tracking store {self.shown!r}: {error_line(exc)}"
            ) from None

    def experiment_id(self, name: str, description: str | None = None) -> str:
        """Id of experiment ``name``, created (artifacts under the store's root) if absent;
        marked as model-training work (the MLflow UI opens on its runs table) and described
        by ``description`` (or a default) where it has no description yet."""
        name = check_experiment_name(name)
        if name in self._experiments:
            return self._experiments[name]
        found = self.client.get_experiment_by_name(name)
        if found is None:
            found_id = self._create_experiment(name)
            self._mark_experiment(found_id, {}, description)
        elif found.lifecycle_stage == "deleted":
            raise UserError(
                f"experiment {name!r} is deleted in {self.shown}: restore it "
                "(`mlflow experiments restore`) or choose another --experiment"
            )
        else:
            found_id = found.experiment_id
            self._mark_experiment(found_id, found.tags, description)
            self.close_abandoned(found_id)
        self._experiments[name] = found_id
        return found_id

    @property
    def ui_address(self) -> str | None:
        """The MLflow UI's address for this store: ``$INFOFLOW_UI_URL`` if set, else the
        tracking server's own address (an http(s) store, credentials left out), else None."""
        configured = os.environ.get(UI_URL_ENV, "").strip()
        if configured:
            return configured.rstrip("/")
        if self.uri.startswith(("http://", "https://")):
            return split_credentials(self.uri)[0].rstrip("/")
        return None

    def run_url(self, run_id: str, experiment_id: str | None = None) -> str | None:
        """The run's page in the MLflow UI (model-training view), or None where no UI
        address is known."""
        base = self.ui_address
        if base is None:
            return None
        experiment_id = experiment_id or self.experiment_of(run_id)
        return f"{base}/#/experiments/{experiment_id}/runs/{run_id}?{_TRAINING_VIEW}"

    def runs_table_url(self, experiment_id: str) -> str | None:
        """The experiment's runs table in the MLflow UI, in the saved infoflow view where
        the experiment has one (:meth:`save_runs_view`); None without a UI address."""
        base = self.ui_address
        if base is None:
            return None
        tags = self.client.get_experiment(experiment_id).tags
        view = "&viewStateShareKey=infoflow" if RUNS_VIEW_TAG in tags else ""
        return f"{base}/#/experiments/{experiment_id}/runs?{_TRAINING_VIEW}{view}"

    def save_runs_view(self, experiment_id: str, *, metrics: Sequence[str],
                       params: Sequence[str], tags: Sequence[str], order_by: str,
                       ascending: bool, expanded: Sequence[str]) -> None:  # fmt: skip
        """Save the experiment's runs-table view the UI opens with ``viewStateShareKey``:
        those metric, param and tag columns, sorted by metric ``order_by``, the runs
        ``expanded`` showing their children."""
        columns = ([f"metrics.`{m}`" for m in metrics] + [f"params.`{p}`" for p in params]
                   + [f"tags.`{t}`" for t in tags])  # fmt: skip
        view = {
            "orderByKey": f"metrics.`{order_by}`",
            "orderByAsc": ascending,
            "selectedColumns": columns,
            "runsExpanded": dict.fromkeys(expanded, True),
        }
        self.client.set_experiment_tag(experiment_id, RUNS_VIEW_TAG, json.dumps(view))

    def where(self, run_id: str, experiment_id: str | None = None) -> str:
        """Where to look at a run: its UI URL if a UI address is known, else its id."""
        return self.run_url(run_id, experiment_id) or f"run {run_id}"

    def _mark_experiment(self, experiment_id: str, tags: Mapping[str, str],
                         description: str | None) -> None:  # fmt: skip
        """Set the experiment's kind and description tags where they are missing."""
        wanted = {EXPERIMENT_KIND_TAG: MODEL_TRAINING_KIND,
                  NOTE_TAG: description or DEFAULT_DESCRIPTION}  # fmt: skip
        for key, value in wanted.items():
            if not tags.get(key):
                self.client.set_experiment_tag(experiment_id, key, value)

    def close_abandoned(self, experiment_id: str) -> list[str]:
        """End as FAILED, with the reason in ``infoflow.error``, every RUNNING run of the
        experiment whose owning process on this host is gone (killed, out of memory, a full
        disk); the ids of the runs closed. Runs owned on other hosts are left alone."""
        closed = []
        runs = self.client.search_runs(
            [experiment_id], filter_string="attributes.status = 'RUNNING'", max_results=5000
        )
        for run in runs:
            owner = run.data.tags.get(OWNER_TAG)
            if not owner or owner_alive(owner) is not False:
                continue
            reason = f"abandoned: its process ({owner}) ended without closing the run"
            logger = RunLogger(self.client, run.info.run_id)
            logger.set_tags({ERROR_TAG: run.data.tags.get(ERROR_TAG) or reason})
            logger.end("FAILED")
            closed.append(run.info.run_id)
        return closed

    def _create_experiment(self, name: str) -> str:
        root = artifact_root(self.uri)
        location = None
        if root is not None:
            slug = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-")[:100] or "experiment"
            location = (root / f"{slug}-{int(time.time() * 1000)}").as_uri()
        from mlflow.exceptions import MlflowException

        try:
            return self.client.create_experiment(name, artifact_location=location)
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":  # else: another process made it
                raise
            return self.client.get_experiment_by_name(name).experiment_id

    def start_run(
        self,
        experiment: str,
        *,
        run_name: str | None = None,
        tags: Mapping[str, str] | None = None,
        parent_run_id: str | None = None,
    ) -> RunLogger:
        """Create a run (a child of ``parent_run_id`` if given) and return its logger."""
        all_tags = {OWNER_TAG: owner_id(), **(tags or {})}
        if parent_run_id is not None:
            all_tags["mlflow.parentRunId"] = parent_run_id
        run = self.client.create_run(
            self.experiment_id(experiment), tags=all_tags, run_name=run_name
        )
        return RunLogger(self.client, run.info.run_id)

    def run(self, run_id: str) -> RunLogger:
        """The logger of an existing run."""
        return RunLogger(self.client, run_id)

    def experiment_of(self, run_id: str | None) -> str | None:
        """The experiment id of run ``run_id``, or None if this store has no such run (any
        other failure to read the store propagates)."""
        from mlflow.exceptions import MlflowException

        if not run_id:
            return None
        try:
            return self.client.get_run(run_id).info.experiment_id
        except MlflowException as exc:
            if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND"):
                return None
            raise

    def find_runs(self, experiment_id: str, tags: Mapping[str, str]) -> list[str]:
        """Ids of the experiment's runs carrying every tag of ``tags``, oldest first."""
        clauses = [f"tags.`{k}` = '{v}'" for k, v in tags.items()]
        runs = self.client.search_runs(
            [experiment_id], filter_string=" and ".join(clauses),
            order_by=["attributes.start_time ASC"], max_results=1000,
        )  # fmt: skip
        return [run.info.run_id for run in runs]

    def histories(self, run_id: str, keep: Any) -> dict[str, tuple[list[int], list[float]]]:
        """``{key: (steps, values)}`` of the run's metrics whose key ``keep(key)`` accepts."""
        out = {}
        for key in filter(keep, self.client.get_run(run_id).data.metrics):
            points = sorted(self.client.get_metric_history(run_id, key), key=lambda m: m.step)
            out[key] = ([m.step for m in points], [m.value for m in points])
        return out


def _use_credentials(uri: str) -> str:
    """An http(s) URI without its ``user:password@``, which go to MLflow's variables."""
    if urlparse(uri).scheme not in ("http", "https"):
        return uri
    bare, user, password = split_credentials(uri)
    if user is not None:
        os.environ["MLFLOW_TRACKING_USERNAME"] = user
    if password is not None:
        os.environ["MLFLOW_TRACKING_PASSWORD"] = password
    return bare


def check_database(url: str, what: str) -> None:
    """One connection to a server database (``what`` names it in the UserError if none can be
    made, or its driver is missing): MLflow retries a refused database for about 100 s."""
    import sqlalchemy

    shown = mask_credentials(url)
    try:
        engine = sqlalchemy.create_engine(url)
        with engine.connect():
            pass
        engine.dispose()
    except ModuleNotFoundError as exc:
        raise UserError(
            f"cannot open {what} {shown!r}: its database driver {exc.name!r} is not installed "
            "(PostgreSQL: pip install 'infoflow-track[postgres]')"
        ) from None
    except Exception as exc:  # SQLAlchemy's errors: refused, unknown host, bad password
        raise UserError(f"cannot open {what} {shown!r}: {error_line(exc)}") from None


def _check_server_reachable(uri: str, timeout_s: float = 5.0) -> None:
    """For an http(s) store, one quick /health request, for a database store one connection:
    MLflow's own client retries an unreachable server for minutes before it gives up."""
    scheme = urlparse(uri).scheme.split("+")[0]
    if scheme in ("postgresql", "mysql", "mssql"):
        check_database(uri, "tracking store")
        return
    if scheme not in ("http", "https"):
        return
    import base64
    import urllib.request

    request = urllib.request.Request(uri.rstrip("/") + "/health")
    user = os.environ.get("MLFLOW_TRACKING_USERNAME")
    if user is not None:
        pair = f"{user}:{os.environ.get('MLFLOW_TRACKING_PASSWORD', '')}".encode()
        request.add_header("Authorization", "Basic " + base64.b64encode(pair).decode())
    try:
        with urllib.request.urlopen(request, timeout=timeout_s):
            pass
    except OSError as exc:
        shown = mask_credentials(uri)
        raise UserError(f"cannot reach tracking server {shown!r}: {error_line(exc)}") from None


def error_line(exc: BaseException) -> str:
    """``Type: first line of the message``, credentials masked."""
    text = str(exc).strip().splitlines()
    return mask_credentials(f"{type(exc).__name__}: {text[0] if text else ''}")


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` (or an exception it was raised from) says the disk is full."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
            return True
        text = str(exc).lower()
        if "database or disk is full" in text or "no space left on device" in text:
            return True
        exc = exc.__cause__ or exc.__context__
    return False


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
        """``data`` as a JSON artifact at ``artifact_file`` (a path inside the run)."""
        self.client.log_dict(self.run_id, data, artifact_file)

    def log_text(self, text: str, artifact_file: str) -> None:
        """``text`` as an artifact at ``artifact_file`` (a path inside the run)."""
        self.client.log_text(self.run_id, text, artifact_file)

    def log_figure(self, figure: Any, artifact_file: str) -> None:
        """A matplotlib figure as an image artifact (format from the file's extension)."""
        self.client.log_figure(self.run_id, figure, artifact_file)

    def end(self, status: str = "FINISHED") -> None:
        """Close the run as FINISHED, FAILED or KILLED."""
        self.client.set_terminated(self.run_id, status=status)

    def reopen(self) -> None:
        """Mark a closed run RUNNING again, owned by this process (a continued study's parent
        run)."""
        self.client.update_run(self.run_id, status="RUNNING")
        self.set_tags({OWNER_TAG: owner_id()})

    @property
    def status(self) -> str:
        return self.client.get_run(self.run_id).info.status


def git_state(path: Path) -> tuple[str, bool] | None:
    """(HEAD commit, modified?) of the git repository that tracks file ``path``, or None if
    none does (an installed or ignored copy). Untracked files do not count as modifications.
    """
    try:
        subprocess.run(
            ["git", "-C", str(path.parent), "ls-files", "--error-unmatch", path.name],
            capture_output=True, timeout=5, check=True,
        )  # fmt: skip
        head = subprocess.run(
            ["git", "-C", str(path.parent), "rev-parse", "HEAD"],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()  # fmt: skip
        dirty = subprocess.run(
            ["git", "-C", str(path.parent), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return (head, bool(dirty)) if head else None
