"""The study lock on a real PostgreSQL server: an advisory lock that excludes across
processes (and so across hosts), one study at a time."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from .servers import Postgres

pytestmark = pytest.mark.cluster

#: Each process adds 1 to a counter file, read-sleep-write, 40 times under the lock: any
#: overlap loses an update.
INCREMENT = """
import sys, time
from pathlib import Path
from infoflow_track.study.locks import locked
from infoflow_track.study.storage import resolve_storage

ref = resolve_storage(sys.argv[1], Path("."))
counter = Path(sys.argv[2])
for _ in range(40):
    with locked(ref, "s"):
        value = int(counter.read_text())
        time.sleep(0.002)
        counter.write_text(str(value + 1))
"""


def test_the_advisory_lock_excludes_other_processes_and_spares_other_studies() -> None:
    root = Path(tempfile.mkdtemp(prefix="infoflow-lock-"))
    pg = Postgres(root, durable=False)
    try:
        pg.start(None, ("optuna",))
        counter = root / "counter"
        counter.write_text("0")
        procs = [subprocess.Popen([sys.executable, "-c", INCREMENT, pg.url("optuna"),
                                   str(counter)]) for _ in range(3)]  # fmt: skip
        assert [p.wait(timeout=120) for p in procs] == [0, 0, 0]
        assert int(counter.read_text()) == 120

        from infoflow_track.study.locks import lock_key, locked
        from infoflow_track.study.storage import resolve_storage

        ref = resolve_storage(pg.url("optuna"), root)
        key = lock_key("s")  # PostgreSQL shows a bigint key as classid (high), objid (low)
        held = (
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted AND "
            f"classid = {(key >> 32) & 0xFFFFFFFF} AND objid = {key & 0xFFFFFFFF}"
        )
        psql = ["psql", "-h", str(pg.socket), "-p", str(pg.port), "-U", "infoflow", "-d",
                "optuna", "-tAc", held]  # fmt: skip
        assert subprocess.run(psql, capture_output=True, text=True).stdout.strip() == "0"
        with locked(ref, "s"):
            assert subprocess.run(psql, capture_output=True, text=True).stdout.strip() == "1"
            other = subprocess.run([sys.executable, "-c", INCREMENT.replace('"s"', '"t"'),
                                    pg.url("optuna"), str(counter)], timeout=60)  # fmt: skip
        assert other.returncode == 0 and int(counter.read_text()) == 160  # "t" did not wait
        assert subprocess.run(psql, capture_output=True, text=True).stdout.strip() == "0"
    finally:
        pg.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used")
def test_a_session_gone_silent_inside_a_transaction_is_ended_and_frees_its_trial(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What a host cut off mid-transaction looks like to the server: a session idle inside
    its transaction, holding a trial's row. The server ends it after the bound on idle
    transactions (2 s here), and Optuna's own write of that trial from another session goes
    on; server-side keepalives are set on every session of ours."""
    import optuna
    import sqlalchemy
    from optuna.trial import TrialState

    from infoflow_track.study import storage

    monkeypatch.setattr(storage, "IDLE_IN_TRANSACTION_S", 2)
    root = Path(tempfile.mkdtemp(prefix="infoflow-idle-"))
    pg = Postgres(root, durable=False)
    try:
        pg.start(None, ("optuna",))
        url = pg.url("optuna")
        study = optuna.create_study(storage=storage.resolve_storage(url, root).open())
        trial = study.ask()
        engine = sqlalchemy.create_engine(url, **storage.engine_options(url))
        with engine.connect() as session:
            shown = [session.execute(sqlalchemy.text(f"SHOW {name}")).scalar() for name in
                     ("idle_in_transaction_session_timeout", "tcp_keepalives_idle",
                      "tcp_keepalives_interval", "tcp_keepalives_count")]  # fmt: skip
        assert shown == ["2s", "10", "5", "3"]
        silent = engine.connect()
        silent.begin()
        row = "SELECT trial_id FROM trials WHERE trial_id = :id FOR UPDATE"
        silent.execute(sqlalchemy.text(row), {"id": trial._trial_id})
        started = time.monotonic()
        study.tell(trial, 1.0)  # waits on the silent session's row lock until it is ended
        waited = time.monotonic() - started
        assert 1.5 < waited < 60, waited
        assert study.trials[0].state == TrialState.COMPLETE
        with pytest.raises(sqlalchemy.exc.DBAPIError, match="idle-in-transaction timeout"):
            silent.execute(sqlalchemy.text("SELECT 1"))  # the server ended that session
        engine.dispose()
    finally:
        pg.stop()
        shutil.rmtree(root, ignore_errors=True)
