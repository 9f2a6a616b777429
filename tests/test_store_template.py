"""New SQLite stores copied from the cached template are the stores MLflow itself creates."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

import pytest

from infoflow_track.store_template import CACHE_ENV, template_path
from infoflow_track.tracking import Tracker

#: Columns that hold the time a row was written: equal only by chance between two stores.
TIMES = {"creation_time", "last_update_time"}


def clauses(sql: str | None) -> list[str]:
    """A CREATE statement's top-level clauses (columns, constraints), sorted: MLflow's own
    migrations write a table's constraints in an order that varies from one store to the
    next."""
    if sql is None or "(" not in sql:
        return [sql or ""]
    head, body = sql.split("(", 1)
    parts, depth, start = [], 0, 0
    for i, char in enumerate(body):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if (char == "," and depth == 0) or depth < 0:
            parts.append(body[start:i].strip())
            start = i + 1
        if depth < 0:
            break
    return [head.strip(), *sorted(parts)]


def contents(db: Path) -> tuple[list[tuple], dict[str, list[dict]]]:
    """(the schema's objects with their clauses, every table's rows with their time columns
    left out)."""
    with contextlib.closing(sqlite3.connect(db)) as con:
        found = con.execute("SELECT type, name, sql FROM sqlite_master")
        schema = sorted((kind, name, clauses(sql)) for kind, name, sql in found)
        rows = {}
        for table in [entry[1] for entry in schema if entry[0] == "table"]:
            cursor = con.execute(f'SELECT * FROM "{table}"')
            columns = [c[0] for c in cursor.description]
            kept = [{k: v for k, v in zip(columns, row, strict=True) if k not in TIMES}
                    for row in cursor]  # fmt: skip
            rows[table] = sorted(kept, key=repr)
    return schema, rows


def mlflow_store(db: Path) -> Path:
    """A store as MLflow creates it, without infoflow: every migration, then Default."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    client.search_experiments()
    client._tracking_client.store.engine.dispose()
    return db


@pytest.fixture
def fresh_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)  # the Default experiment's artifact root is the cwd's mlruns
    return tmp_path / "cache"


def test_a_store_copied_from_the_template_is_the_one_mlflow_creates(
    tmp_path: Path, fresh_cache: Path
) -> None:
    Tracker(f"sqlite:///{tmp_path / 'first' / 'mlflow.db'}")  # makes the template
    assert template_path().parent == fresh_cache and template_path().is_file()
    assert contents(template_path())[1]["experiments"] == []  # Default is the opener's
    Tracker(f"sqlite:///{tmp_path / 'copied' / 'mlflow.db'}")
    expected = contents(mlflow_store(tmp_path / "reference.db"))
    for db in (tmp_path / "first" / "mlflow.db", tmp_path / "copied" / "mlflow.db"):
        assert contents(db) == expected
    (default,) = expected[1]["experiments"]
    assert default["name"] == "Default" and default["artifact_location"] == str(
        tmp_path / "mlruns" / "0"
    )


def test_a_template_mlflow_does_not_open_is_made_again(tmp_path: Path, fresh_cache: Path) -> None:
    Tracker(f"sqlite:///{tmp_path / 'first' / 'mlflow.db'}")
    with contextlib.closing(sqlite3.connect(template_path())) as con:
        con.execute("UPDATE alembic_version SET version_num = 'not-a-revision'")
        con.commit()
    tracker = Tracker(f"sqlite:///{tmp_path / 'second' / 'mlflow.db'}")
    tracker.start_run("e").end()
    expected = contents(mlflow_store(tmp_path / "reference.db"))
    assert contents(tmp_path / "second" / "mlflow.db")[0] == expected[0]
    assert not template_path().exists()  # discarded; made again by the next new store
    Tracker(f"sqlite:///{tmp_path / 'third' / 'mlflow.db'}")
    assert contents(template_path())[1]["alembic_version"] == expected[1]["alembic_version"]
    assert contents(tmp_path / "third" / "mlflow.db") == expected


def test_a_cache_that_cannot_be_written_leaves_stores_migrated_as_before(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    monkeypatch.setenv(CACHE_ENV, str(blocked / "cache"))  # no folder can be made under a file
    monkeypatch.chdir(tmp_path)
    tracker = Tracker(f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}")
    tracker.start_run("e").end()
    expected = contents(mlflow_store(tmp_path / "reference.db"))
    assert contents(tmp_path / "store" / "mlflow.db")[0] == expected[0]
    assert blocked.read_text() == ""
