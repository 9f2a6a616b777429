"""Optuna storages, the study lock, trial ownership and the recovery of abandoned trials.

Default storage: the journal file ``optuna.journal`` beside the MLflow SQLite database
(``mlruns/optuna.journal``), safe for several processes on one machine. ``--storage`` also
takes ``journal:PATH`` or an RDB URL (``sqlite:///x.db``, ``postgresql://...``).

Optuna's journal storage has no heartbeat, so a worker that dies mid-trial (SIGKILL, OOM,
power) would leave its trial RUNNING forever. Each trial therefore records its owner
(host, pid and process start time) and a heartbeat every :data:`HEARTBEAT_S` seconds. Under
the study lock, before any new trial starts, :func:`release_abandoned` fails every RUNNING
trial whose owner is gone (same host: the process no longer exists; other host: no
heartbeat for :data:`STALE_AFTER_S`), closes its MLflow run as FAILED and queues its
parameters again. Abandoned trials do not count towards the budget.
"""

from __future__ import annotations

import fcntl
import hashlib
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from infoflow_track.errors import UserError
from infoflow_track.names import ERROR_TAG, TRIAL_NUMBER_TAG, TRIAL_STATE_TAG
from infoflow_track.owners import owner_alive, owner_id
from infoflow_track.tracking import check_creatable, error_line, sqlite_path
from infoflow_track.uris import mask_credentials

DEFAULT_JOURNAL = "optuna.journal"
RDB_SCHEMES = ("sqlite", "postgresql", "mysql")
HEARTBEAT_S = 30.0
STALE_AFTER_S = 300.0
#: Trial user attributes written by infoflow.
RUN_ID_ATTR = "mlflow_run_id"
RUN_URL_ATTR = "mlflow_run_url"  # where the MLflow UI's address is known
OWNER_ATTR = "infoflow.owner"
HEARTBEAT_ATTR = "infoflow.heartbeat"
ABANDONED_ATTR = "infoflow.abandoned"
ERROR_ATTR = "infoflow.error"
SATURATED_ATTR = "infoflow.saturated"  # layers at their ceiling, as the run tag
#: Study user attributes written by infoflow.
PARENT_ATTR = "infoflow.mlflow_parent_run_id"
#: Set before the parent run is created, and tagged on it: finds a parent whose creator was
#: killed before it could record the run's id.
PARENT_KEY_ATTR = "infoflow.parent_key"
IDENTITY_ATTR = "infoflow.spec"


@dataclass(frozen=True)
class StorageRef:
    """Where a study lives: a journal file or an RDB URL. Opening it is :meth:`open`."""

    url: str  # journal:/abs/path or the RDB URL
    journal: Path | None = None

    @property
    def shown(self) -> str:
        """The URL with any password masked, for tags and messages."""
        return mask_credentials(self.url)

    def exists(self) -> bool:
        """Whether a local storage's file exists (a server database is assumed to)."""
        if self.journal is not None:
            return self.journal.is_file()
        db = sqlite_path(self.url)
        return db is None or db.is_file()

    def check(self) -> None:
        """Refuse, writing nothing, a storage that cannot be opened: a server database must
        accept a connection (its driver installed); local files were checked by
        :func:`resolve_storage`."""
        if self.journal is not None or sqlite_path(self.url) is not None:
            return
        import sqlalchemy

        try:
            engine = sqlalchemy.create_engine(self.url)
            with engine.connect():
                pass
            engine.dispose()
        except ModuleNotFoundError as exc:
            raise UserError(
                f"cannot open Optuna storage {self.shown!r}: its database driver "
                f"{exc.name!r} is not installed"
            ) from None
        except Exception as exc:  # SQLAlchemy's errors: refused, unknown host, bad password
            raise UserError(
                f"cannot open Optuna storage {self.shown!r}: {error_line(exc)}"
            ) from None

    def open(self) -> Any:
        """The Optuna storage (a journal file is created if absent); UserError if it fails."""
        import optuna

        try:
            if self.journal is not None:
                self.journal.parent.mkdir(parents=True, exist_ok=True)
                from optuna.storages.journal import JournalFileBackend

                return optuna.storages.JournalStorage(JournalFileBackend(str(self.journal)))
            return optuna.storages.RDBStorage(self.url)
        except Exception as exc:  # OSError, SQLAlchemy errors, missing database drivers
            raise UserError(
                f"cannot open Optuna storage {self.shown!r}: {error_line(exc)}"
            ) from None

    @property
    def lock_path(self) -> Path:
        """A file beside a local storage (else in the user's cache) locked by :func:`locked`."""
        if self.journal is not None:
            return self.journal.with_name(self.journal.name + ".infoflow-lock")
        db = sqlite_path(self.url)
        if db is not None:
            return db.with_name(db.name + ".infoflow-lock")
        digest = hashlib.sha256(self.url.encode()).hexdigest()[:16]
        return Path.home() / ".cache" / "infoflow" / "locks" / f"{digest}.lock"


def objectives_of(study: Any) -> list[tuple[str, str]]:
    """(metric, direction) of each objective, as the study recorded them."""
    recorded = (study.user_attrs.get(IDENTITY_ATTR) or {}).get("objectives")
    if recorded:
        return [(metric, direction) for metric, direction in recorded]
    return [(f"objective {i}", d.name.lower()) for i, d in enumerate(study.directions)]


def resolve_storage(url: str | None, default_dir: Path) -> StorageRef:
    """``url`` (``journal:PATH``, a ``.journal`` path or an RDB URL), or the default journal
    in ``default_dir``; anything else is a UserError."""
    if url is None:
        return _journal(default_dir / DEFAULT_JOURNAL)
    if url.startswith("journal:"):
        return _journal(Path(url[len("journal:") :]))
    scheme = urlparse(url).scheme.split("+")[0]
    if scheme in RDB_SCHEMES:
        if scheme == "sqlite" and not url.startswith("sqlite:///"):
            raise UserError(f"invalid --storage {url!r}: write sqlite:///PATH")
        db = sqlite_path(url)
        if db is not None:
            check_creatable(db, f"--storage {url!r}")
        return StorageRef(url)
    if not scheme and url.endswith(".journal"):
        return _journal(Path(url))
    raise UserError(
        f"invalid --storage {url!r}: valid are journal:PATH, PATH.journal, sqlite:///PATH, "
        "postgresql://..., mysql://..."
    )


def _journal(path: Path) -> StorageRef:
    path = path.expanduser().resolve()
    if path.is_dir():
        raise UserError(f"invalid journal storage {str(path)!r}: it is a directory")
    check_creatable(path, "journal storage")
    return StorageRef(f"journal:{path}", path)


@contextmanager
def locked(ref: StorageRef) -> Iterator[None]:
    """Hold the study lock of ``ref``: one process at a time (on this machine) decides which
    trial runs next, so the budget is never exceeded and no trial is recovered twice."""
    path = ref.lock_path
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextmanager
def heartbeat(storage: Any, trial_id: int, interval: float = HEARTBEAT_S) -> Iterator[None]:
    """Record ``time.time()`` on the trial every ``interval`` seconds while the block runs."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(interval):
            with suppress(Exception):  # a storage hiccup must not kill the trial
                storage.set_trial_user_attr(trial_id, HEARTBEAT_ATTR, time.time())

    thread = threading.Thread(target=beat, name="infoflow-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def claim(storage: Any, trial_id: int) -> None:
    """Mark the trial as owned by this process, with a first heartbeat."""
    storage.set_trial_user_attr(trial_id, OWNER_ATTR, owner_id())
    storage.set_trial_user_attr(trial_id, HEARTBEAT_ATTR, time.time())


def abandoned_reason(trial: Any, now: float) -> str | None:
    """Why a RUNNING trial is abandoned by its owner, or None if it may still be running."""
    owner = trial.user_attrs.get(OWNER_ATTR)
    alive = owner_alive(owner) if owner else None
    if alive is False:
        return f"its worker process ({owner}) ended without finishing it"
    if alive is None:
        last = trial.user_attrs.get(HEARTBEAT_ATTR)
        if last is None and trial.datetime_start is not None:
            last = trial.datetime_start.timestamp()
        if last is not None and now - float(last) > STALE_AFTER_S:
            return f"no heartbeat from its worker ({owner or 'unknown'}) for {now - last:.0f} s"
    return None


def release(study: Any, storage: Any, trial: Any, reason: str, tracker: Any | None) -> bool:
    """Fail an abandoned trial, close its MLflow run and queue its parameters again.

    Returns False if the trial had finished meanwhile (nothing is changed then).
    """
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    run_id = trial.user_attrs.get(RUN_ID_ATTR)
    try:  # FrozenTrial._trial_id: Optuna's own retry callbacks address trials so too
        if tracker is not None and not run_id:  # killed before it recorded its run: find it
            run_id = trial_run_id(study, tracker, trial.number)
            if run_id:
                storage.set_trial_user_attr(trial._trial_id, RUN_ID_ATTR, run_id)
        storage.set_trial_user_attr(trial._trial_id, ABANDONED_ATTR, reason)
        storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
    except UpdateFinishedTrialError:
        return False
    study.enqueue_trial(dict(trial.params), user_attrs={"infoflow.retry_of": trial.number})
    if tracker is not None and run_id:
        run = tracker.run(run_id)
        run.set_tags({TRIAL_STATE_TAG: "FAIL", ERROR_TAG: f"abandoned: {reason}"})
        if run.status == "RUNNING":
            run.end("FAILED")
    return True


def trial_run_id(study: Any, tracker: Any, number: int) -> str | None:
    """The MLflow run of trial ``number``, found by its tags (parent run and trial number)."""
    parent = study.user_attrs.get(PARENT_ATTR)
    experiment = tracker.experiment_of(parent)
    if experiment is None:
        return None
    found = tracker.find_runs(
        experiment, {"mlflow.parentRunId": parent, TRIAL_NUMBER_TAG: str(number)}
    )
    return found[-1] if found else None


def release_abandoned(study: Any, storage: Any, tracker: Any | None) -> list[int]:
    """Release every abandoned RUNNING trial (call under :func:`locked`); their numbers."""
    from optuna.trial import TrialState

    now = time.time()
    released = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        reason = abandoned_reason(trial, now)
        if reason is not None and release(study, storage, trial, reason, tracker):
            released.append(trial.number)
    return released
