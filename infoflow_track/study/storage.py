"""Where a study lives: an Optuna journal file or an RDB database, opened with its heartbeat.

Default storage: the journal file ``optuna.journal`` beside the MLflow SQLite database
(``mlruns/optuna.journal``), safe for several processes on one machine. ``--storage`` also
takes ``journal:PATH`` or an RDB URL (``sqlite:///x.db``, ``postgresql://...``); a PostgreSQL
(or MySQL) storage is shared by workers on several hosts.

An RDB storage is opened with Optuna's own heartbeat: every ``heartbeat_s`` seconds a
running trial's worker records the database server's time, and a RUNNING trial whose record
is older than :attr:`StorageRef.grace_s` is stale (see :mod:`infoflow_track.study.recovery`).
The journal file has no heartbeat of Optuna's, so infoflow keeps one in trial attributes.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from infoflow_track.errors import UserError
from infoflow_track.tracking import check_creatable, check_database, error_line, sqlite_path
from infoflow_track.uris import mask_credentials

DEFAULT_JOURNAL = "optuna.journal"
RDB_SCHEMES = ("sqlite", "postgresql", "mysql")
HEARTBEAT_S = 30
#: A running trial with no heartbeat for this many heartbeat intervals is abandoned.
GRACE_INTERVALS = 5
STALE_AFTER_S = GRACE_INTERVALS * HEARTBEAT_S
#: Trial user attributes written by infoflow.
RUN_ID_ATTR = "mlflow_run_id"
RUN_URL_ATTR = "mlflow_run_url"  # where the MLflow UI's address is known
OWNER_ATTR = "infoflow.owner"
HEARTBEAT_ATTR = "infoflow.heartbeat"  # journal storages only: RDB ones use Optuna's
ABANDONED_ATTR = "infoflow.abandoned"
ERROR_ATTR = "infoflow.error"
SATURATED_ATTR = "infoflow.saturated"  # layers at their ceiling, as the run tag
#: Study user attributes written by infoflow.
PARENT_ATTR = "infoflow.mlflow_parent_run_id"
#: Set before the parent run is created, and tagged on it: finds a parent whose creator was
#: killed before it could record the run's id.
PARENT_KEY_ATTR = "infoflow.parent_key"
IDENTITY_ATTR = "infoflow.spec"
JOIN_ATTR = "infoflow.join"  # spec text, --set and budget: a host without the file joins

StaleCallback = Callable[[Any, Any], None]  # (study, frozen trial), after Optuna failed it


@dataclass(frozen=True)
class StorageRef:
    """Where a study lives: a journal file or an RDB URL. Opening it is :meth:`open`."""

    url: str  # journal:/abs/path or the RDB URL
    journal: Path | None = None
    heartbeat_s: int = HEARTBEAT_S

    @property
    def shown(self) -> str:
        """The URL with any password masked, for tags and messages."""
        return mask_credentials(self.url)

    @property
    def scheme(self) -> str:
        """``journal``, ``sqlite``, ``postgresql`` or ``mysql``."""
        return "journal" if self.journal is not None else urlparse(self.url).scheme.split("+")[0]

    @property
    def grace_s(self) -> int:
        """Seconds without a heartbeat after which a running trial is abandoned."""
        return GRACE_INTERVALS * self.heartbeat_s

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
        if self.journal is None and sqlite_path(self.url) is None:
            check_database(self.url, "Optuna storage")

    def open(self, on_stale: StaleCallback | None = None) -> Any:
        """The Optuna storage (a journal file is created if absent); UserError if it fails.

        An RDB storage gets Optuna's heartbeat and calls ``on_stale`` for each trial that
        :func:`optuna.storages.fail_stale_trials` fails."""
        import optuna

        try:
            if self.journal is not None:
                self.journal.parent.mkdir(parents=True, exist_ok=True)
                from optuna.storages.journal import JournalFileBackend

                return optuna.storages.JournalStorage(JournalFileBackend(str(self.journal)))
            with warnings.catch_warnings():  # heartbeat_interval: experimental since 2.9
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(
                    self.url, engine_kwargs=engine_options(self.url),
                    heartbeat_interval=self.heartbeat_s, grace_period=self.grace_s,
                    heartbeat_stale_trial_callback=on_stale,
                )  # fmt: skip
        except Exception as exc:  # OSError, SQLAlchemy errors, missing database drivers
            raise UserError(
                f"cannot open Optuna storage {self.shown!r}: {error_line(exc)}"
            ) from None


#: Seconds a PostgreSQL session of ours may sit idle inside a transaction before the server
#: ends it, rolling it back and freeing its locks (a worker cut off mid-transaction holds the
#: rows of a trial, or the study lock, until then): far above any of Optuna's transactions or
#: a count-and-ask.
IDLE_IN_TRANSACTION_S = 60
#: TCP keepalives (idle, interval s; probes) on both ends of a PostgreSQL connection, so that
#: a dead link is noticed in seconds, not the two hours of the operating system's default.
KEEPALIVE = (10, 5, 3)


def engine_options(url: str) -> dict[str, Any]:
    """SQLAlchemy engine options for a server database: connections checked before use;
    for PostgreSQL, keepalives on the client's and the server's side and a bound on idle
    transactions (the server's side is set per session, appended to any ``options`` of the
    URL), so that a host cut off mid-transaction cannot hold rows or locks that other hosts
    wait on."""
    if sqlite_path(url) is not None:
        return {}
    options: dict[str, Any] = {"pool_pre_ping": True}
    if url.startswith("postgresql"):
        from sqlalchemy.engine import make_url

        idle, interval, count = KEEPALIVE
        server = (f"-c idle_in_transaction_session_timeout={IDLE_IN_TRANSACTION_S * 1000} "
                  f"-c tcp_keepalives_idle={idle} -c tcp_keepalives_interval={interval} "
                  f"-c tcp_keepalives_count={count}")  # fmt: skip
        given = make_url(url).query.get("options")
        options["connect_args"] = {
            "keepalives": 1, "keepalives_idle": idle, "keepalives_interval": interval,
            "keepalives_count": count, "options": f"{given} {server}" if given else server,
        }  # fmt: skip
    return options


def objectives_of(study: Any) -> list[tuple[str, str]]:
    """(metric, direction) of each objective, as the study recorded them."""
    recorded = (study.user_attrs.get(IDENTITY_ATTR) or {}).get("objectives")
    if recorded:
        return [(metric, direction) for metric, direction in recorded]
    return [(f"objective {i}", d.name.lower()) for i, d in enumerate(study.directions)]


def resolve_storage(
    url: str | None, default_dir: Path, heartbeat_s: int = HEARTBEAT_S
) -> StorageRef:
    """``url`` (``journal:PATH``, a ``.journal`` path or an RDB URL), or the default journal
    in ``default_dir``; anything else is a UserError. ``heartbeat_s``: seconds between a
    running trial's heartbeats."""
    if url is None:
        return _journal(default_dir / DEFAULT_JOURNAL, heartbeat_s)
    if url.startswith("journal:"):
        return _journal(Path(url[len("journal:") :]), heartbeat_s)
    scheme = urlparse(url).scheme.split("+")[0]
    if scheme in RDB_SCHEMES:
        if scheme == "sqlite" and not url.startswith("sqlite:///"):
            raise UserError(f"invalid --storage {url!r}: write sqlite:///PATH")
        db = sqlite_path(url)
        if db is not None:
            check_creatable(db, f"--storage {url!r}")
        return StorageRef(url, heartbeat_s=heartbeat_s)
    if not scheme and url.endswith(".journal"):
        return _journal(Path(url), heartbeat_s)
    raise UserError(
        f"invalid --storage {url!r}: valid are journal:PATH, PATH.journal, sqlite:///PATH, "
        "postgresql://..., mysql://..."
    )


def _journal(path: Path, heartbeat_s: int) -> StorageRef:
    path = path.expanduser().resolve()
    if path.is_dir():
        raise UserError(f"invalid journal storage {str(path)!r}: it is a directory")
    check_creatable(path, "journal storage")
    return StorageRef(f"journal:{path}", path, heartbeat_s)
