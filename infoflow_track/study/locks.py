"""The study lock: one worker at a time, on any host, counts the trials and starts the next.

Held around count-and-ask, it keeps a study's budget exact and recovers each abandoned trial
once. Where the storage is a server database the database holds it, so it spans hosts:
PostgreSQL's transaction-level advisory lock (released when the transaction ends or the
server drops the session: a holder whose link is cut is dropped after
:data:`~infoflow_track.study.storage.IDLE_IN_TRANSACTION_S`), MySQL's ``GET_LOCK``. A
journal file or a SQLite storage, which only one machine can share, is locked by a file
beside it (``filelock``).
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from infoflow_track.study.storage import StorageRef, engine_options
from infoflow_track.tracking import sqlite_path


@contextmanager
def locked(ref: StorageRef, study_name: str) -> Iterator[None]:
    """Hold the lock of study ``study_name`` in ``ref`` while the block runs."""
    if ref.scheme == "postgresql":
        with _postgres_lock(ref.url, lock_key(study_name)):
            yield
    elif ref.scheme == "mysql":
        with _mysql_lock(ref.url, f"infoflow:{lock_key(study_name):x}"):
            yield
    else:
        from filelock import FileLock

        path = lock_path(ref)
        path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(path):
            yield


def lock_key(study_name: str) -> int:
    """A signed 64-bit key for the study, as PostgreSQL's advisory locks take."""
    digest = hashlib.sha256(f"infoflow-study:{study_name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def lock_path(ref: StorageRef) -> Path:
    """The lock file beside a journal or SQLite storage."""
    local = ref.journal or sqlite_path(ref.url)
    assert local is not None, "server databases hold their own lock"
    return local.with_name(local.name + ".infoflow-lock")


@functools.cache
def _engine(url: str) -> Any:
    """One engine per database URL and process, for the lock's connections."""
    import sqlalchemy

    return sqlalchemy.create_engine(url, **engine_options(url))


@contextmanager
def _postgres_lock(url: str, key: int) -> Iterator[None]:
    import sqlalchemy

    with _engine(url).connect() as connection, connection.begin():
        connection.execute(sqlalchemy.text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})
        yield


@contextmanager
def _mysql_lock(url: str, name: str) -> Iterator[None]:
    import sqlalchemy

    with _engine(url).connect() as connection:
        connection.execute(sqlalchemy.text("SELECT GET_LOCK(:name, -1)"), {"name": name})
        try:
            yield
        finally:
            connection.execute(sqlalchemy.text("SELECT RELEASE_LOCK(:name)"), {"name": name})
