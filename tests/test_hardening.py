"""Issue 14: stores that survive SIGKILL at the worst moments and a full disk; option values,
names, paths and credentials checked; pruning warm-up in epochs.

The kills are real: the command runs in a subprocess whose named function SIGKILLs its own
process right after it returns (a wrapper script patches it in), so the store is cut exactly
where the issue found it cut. The full disk is a real tmpfs of a few MiB (root only; skipped
with the reason elsewhere).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest
from helpers import INFOFLOW, runs_of

pytestmark = pytest.mark.slow

SPEC = """
name = "{name}"
plugin = "mlp"
n_trials = {n_trials}
[settings]
dataset = "digits"
epochs = {epochs}
probe_size = 256
[fixed]
widths = [16]
[search]
lr = {{ type = "float", low = 1e-3, high = 1e-2, log = true }}
[sampler]
type = "random"
seed = 0
"""

#: Runs ``infoflow ARGS`` in this process after the patch above it; the patch makes one
#: function SIGKILL the process right after it returns.
WRAPPER = """
import os, signal, sys
{patch}
from infoflow_track.cli import main
sys.argv = ["infoflow", *sys.argv[1:]]
main()
"""

KILL_IN_MIGRATION = """
import alembic.operations.batch as batch
original = batch.ApplyBatchImpl._create
def killing(self, *args, **kwargs):  # the copy table of a migration step exists now
    original(self, *args, **kwargs)
    os.kill(os.getpid(), signal.SIGKILL)
batch.ApplyBatchImpl._create = killing
"""

KILL_AFTER_RUN_ROW = """
from infoflow_track import tracking
original = tracking.Tracker.start_run
def killing(self, experiment, **kwargs):
    run = original(self, experiment, **kwargs)
    if (kwargs.get("parent_run_id") is None) == {parent}:
        os.kill(os.getpid(), signal.SIGKILL)
    return run
tracking.Tracker.start_run = killing
"""


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}


def run_killed(tmp_path: Path, patch: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``infoflow ARGS`` in a subprocess carrying ``patch``; it must die of the SIGKILL."""
    script = tmp_path / "killer.py"
    script.write_text(WRAPPER.format(patch=textwrap.dedent(patch)))
    proc = subprocess.run([sys.executable, str(script), *args], cwd=tmp_path, env=_env(),
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    return proc


def write_spec(tmp_path: Path, name: str, n_trials: int = 1, epochs: int = 1) -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(SPEC.format(name=name, n_trials=n_trials, epochs=epochs))
    return path


def all_runs(uri: str, experiment: str) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    return client.search_runs([client.get_experiment_by_name(experiment).experiment_id])


# -- 1. a first creation of the store is all or nothing -------------------------------------


def test_sigkill_while_the_store_is_created_leaves_a_store_the_next_command_opens(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from infoflow_track.store_template import CACHE_ENV, template_path
    from infoflow_track.tracking import Tracker, half_made_reason

    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))  # no template yet: it migrates
    db = tmp_path / "mlruns" / "mlflow.db"
    run_killed(tmp_path, KILL_IN_MIGRATION, "run", "mlp", "--epochs", "1")
    assert not template_path().exists() and not db.exists()
    tracker = Tracker(f"sqlite:///{db}")  # the next command: no half-made store refuses it
    tracker.start_run("after").end()
    assert [r.info.status for r in all_runs(tracker.uri, "after")] == ["FINISHED"]
    for folder in (db.parent, template_path().parent):  # the killed drafts are gone
        assert not list(folder.glob(".*.creating-*"))
    assert half_made_reason(template_path()) is None


def _half_made_store(tmp_path: Path) -> Path:
    """A store as an older infoflow (MLflow's own creation) left it when killed mid-migration."""
    db = tmp_path / "old" / "mlflow.db"
    db.parent.mkdir()
    script = tmp_path / "old_creator.py"
    creator = "import os, signal\n" + textwrap.dedent(KILL_IN_MIGRATION)
    creator += f"from mlflow.tracking import MlflowClient\nMlflowClient('sqlite:///{db}')"
    script.write_text(creator + ".search_experiments()\n")
    proc = subprocess.run([sys.executable, str(script)], env=_env(), capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    with contextlib.closing(sqlite3.connect(db)) as con:
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert any(t.startswith("_alembic_tmp_") for t in tables)  # the state the issue found
    return db


def test_a_half_made_store_without_runs_is_rebuilt(tmp_path: Path) -> None:
    from infoflow_track.tracking import Tracker

    db = _half_made_store(tmp_path)
    tracker = Tracker(f"sqlite:///{db}")
    tracker.start_run("e").end()
    assert len(all_runs(tracker.uri, "e")) == 1


def test_a_half_made_store_holding_runs_is_refused_with_the_fix(tmp_path: Path) -> None:
    from infoflow_track.errors import UserError
    from infoflow_track.tracking import Tracker

    db = tmp_path / "mlflow.db"
    Tracker(f"sqlite:///{db}").start_run("e").end()
    with contextlib.closing(sqlite3.connect(db)) as con:
        con.execute("CREATE TABLE _alembic_tmp_latest_metrics (x INTEGER)")
        con.commit()
    with pytest.raises(UserError, match=r"half-migrated .* `mlflow db upgrade"):
        Tracker(f"sqlite:///{db}")
    assert db.exists()  # runs are never thrown away


# -- 2. no run RUNNING forever, no second parent ------------------------------------------


def test_sigkill_after_the_parent_run_row_the_rerun_adopts_that_parent(tmp_path: Path) -> None:
    from helpers import run_in_process

    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    spec = write_spec(tmp_path, "orphan")
    run_killed(tmp_path, KILL_AFTER_RUN_ROW.format(parent=True), "study", str(spec))
    (orphan,) = all_runs(uri, "orphan")
    assert orphan.info.status == "RUNNING"

    counts = run_in_process(spec, uri)
    assert counts.complete == 1
    parent, children = runs_of(uri, "orphan")  # exactly one parent
    assert parent.info.run_id == orphan.info.run_id and parent.info.status == "FINISHED"
    assert [c.info.status for c in children] == ["FINISHED"]


def test_sigkill_after_a_child_run_row_the_child_is_closed_and_linked(tmp_path: Path) -> None:
    from helpers import run_in_process
    from optuna.trial import TrialState

    from infoflow_track.study.storage import RUN_ID_ATTR
    from infoflow_track.tracking import Tracker

    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    spec = write_spec(tmp_path, "child")
    run_killed(tmp_path, KILL_AFTER_RUN_ROW.format(parent=False), "study", str(spec))
    (lost,) = [r for r in all_runs(uri, "child") if "mlflow.parentRunId" in r.data.tags]
    assert lost.info.status == "RUNNING"

    run_in_process(spec, uri)
    closed = Tracker(uri).client.get_run(lost.info.run_id)
    assert closed.info.status == "FAILED" and "abandoned" in closed.data.tags["infoflow.error"]
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    journal = JournalStorage(JournalFileBackend(str(tmp_path / "mlruns" / "optuna.journal")))
    trials = optuna.load_study(study_name="child", storage=journal).trials
    assert trials[0].state == TrialState.FAIL
    assert trials[0].user_attrs[RUN_ID_ATTR] == lost.info.run_id  # linked to its trial now
    assert trials[1].state == TrialState.COMPLETE and trials[1].params == trials[0].params
    assert not [r for r in all_runs(uri, "child") if r.info.status == "RUNNING"]


def test_a_dead_process_run_is_closed_by_the_next_command_opening_its_experiment(
    tmp_path: Path,
) -> None:
    from infoflow_track.tracking import Tracker

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = os.uname().nodename
    tracker = Tracker(uri)
    stale = tracker.start_run("e", tags={"infoflow.owner": f"{host}:{dead.pid}:0"})
    elsewhere = tracker.start_run("e", tags={"infoflow.owner": "another-host:1:1"})
    mine = tracker.start_run("e")
    Tracker(uri).experiment_id("e")  # the next command
    status = {r.info.run_id: r.info.status for r in all_runs(uri, "e")}
    assert status[stale.run_id] == "FAILED"
    assert status[elsewhere.run_id] == "RUNNING"  # cannot tell from here: left alone
    assert status[mine.run_id] == "RUNNING"  # this process still runs it
    reason = tracker.client.get_run(stale.run_id).data.tags["infoflow.error"]
    assert "abandoned" in reason and str(dead.pid) in reason


# -- 3. a full disk: one line, exit 1, runs closed later, no second parent ------------------


@pytest.fixture
def small_disk(tmp_path: Path):
    """A real 6 MiB filesystem (tmpfs); skipped where this process may not mount one."""
    mount = tmp_path / "disk"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(mount)],
                          capture_output=True, text=True)  # fmt: skip
    if made.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {made.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def fill(disk: Path) -> Path:
    """Write zeros into ``disk`` until it is full; the filler file."""
    filler = disk / "filler"
    with contextlib.suppress(OSError), open(filler, "wb") as out:
        while True:
            out.write(b"\0" * 65536)
            out.flush()
    with contextlib.suppress(OSError), open(disk / "filler-tail", "wb") as out:
        while True:
            out.write(b"\0" * 512)
            out.flush()
    return filler


def _metrics_logged(db: Path) -> bool:
    if not db.exists():
        return False
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)) as con:
        try:
            return con.execute("SELECT count(*) FROM metrics WHERE step >= 1").fetchone()[0] > 0
        except sqlite3.Error:
            return False


def test_a_full_disk_mid_run_is_one_line_exit_1_and_the_run_is_closed_later(
    tmp_path: Path, small_disk: Path
) -> None:
    from infoflow_track.tracking import Tracker

    db = small_disk / "mlflow.db"
    uri = f"sqlite:///{db}"
    proc = subprocess.Popen(
        [INFOFLOW, "run", "mlp", "--epochs", "400", "--probe-size", "256",
         "--set", "widths=16", "--tracking-uri", uri], cwd=tmp_path, env=_env(),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.time() + 120
    while not _metrics_logged(db):
        assert proc.poll() is None and time.time() < deadline, proc.communicate()
        time.sleep(0.2)
    fill(small_disk)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 1, err[-3000:]
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err[-3000:]
    assert "disk full" in lines[0] and str(db) in lines[0]

    for leftover in small_disk.glob("filler*"):
        leftover.unlink()
    tracker = Tracker(uri)
    tracker.experiment_id("mlp")  # the next command that opens the experiment
    (run,) = all_runs(uri, "mlp")
    assert run.info.status == "FAILED" and run.data.tags["infoflow.error"]


def test_a_study_on_a_full_disk_makes_no_second_parent(tmp_path: Path, small_disk: Path) -> None:
    from helpers import run_cli

    uri = f"sqlite:///{small_disk / 'mlflow.db'}"
    spec = write_spec(tmp_path, "full")
    first = run_cli("study", str(spec), "--tracking-uri", uri, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    fill(small_disk)
    again = run_cli("study", str(spec), "--tracking-uri", uri, "--n-trials", "2", cwd=tmp_path)
    assert again.returncode == 1, again.stderr[-3000:]
    lines = again.stderr.strip().splitlines()
    assert len(lines) == 1 and "disk full" in lines[0], again.stderr[-3000:]

    for leftover in small_disk.glob("filler*"):
        leftover.unlink()
    rerun = run_cli("study", str(spec), "--tracking-uri", uri, "--n-trials", "2", cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    parent, children = runs_of(uri, "full")  # one parent, through all of it
    assert parent.info.status == "FINISHED"
    assert sorted(c.info.status for c in children).count("FINISHED") == 2
    assert not [c for c in children if c.info.status == "RUNNING"]


# -- 6. long names -------------------------------------------------------------------------


def test_a_300_character_experiment_name_is_recorded(tmp_path: Path) -> None:
    from infoflow_track.tracking import Tracker

    name = "x" * 300
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run = tracker.start_run(name)
    run.log_text("ok", "a.txt")  # the artifact folder is made from the name
    run.end()
    assert len(all_runs(tracker.uri, name)) == 1


# -- 10. credentials -----------------------------------------------------------------------


def test_credentials_are_masked_in_every_uri_form() -> None:
    from infoflow_track.uris import mask_credentials

    for uri in ("postgresql://u:s3cretpw@db:5432/x", "mysql+pymysql://u:s3cretpw@h/x",
                "http://u:s3cretpw@host:5000", "postgresql://u@h/x?password=s3cretpw&sslmode=a",
                "error: could not connect to 'postgresql://u:s3cretpw@h/x' (refused)"):  # fmt: skip
        shown = mask_credentials(uri)
        assert "s3cretpw" not in shown and "***" in shown
        assert shown.replace("***", "s3cretpw") == uri  # nothing else changed
    assert mask_credentials("sqlite:////tmp/a:b@c.db") == "sqlite:////tmp/a:b@c.db"


class _BasicAuthServer(BaseHTTPRequestHandler):
    """Answers /health and MLflow's experiment lookup ('none such'), recording the
    Authorization header of every request."""

    seen: ClassVar[list[str | None]] = []

    def do_GET(self) -> None:
        self.seen.append(self.headers.get("Authorization"))
        if self.path.startswith("/health"):
            body, status = b"OK", 200
        elif "experiments/get-by-name" in self.path:
            body, status = b'{"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "no"}', 404
        else:
            body, status = b"{}", 500
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_an_http_uri_with_credentials_authenticates_through_mlflow(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import base64

    from infoflow_track.tracking import Tracker

    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _BasicAuthServer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_address[1]
        tracker = Tracker(f"http://alice:s3cr%40t@127.0.0.1:{port}")
    finally:
        server.shutdown()
    assert tracker.uri == f"http://127.0.0.1:{port}" and "s3cr" not in tracker.shown
    expected = "Basic " + base64.b64encode(b"alice:s3cr@t").decode()
    assert len(_BasicAuthServer.seen) >= 2  # our /health and MLflow's own request
    assert set(_BasicAuthServer.seen) == {expected}


# -- 14. pruning counts warm-up in epochs; Hyperband's budget is the epochs reported -------


def test_median_pruner_warm_up_is_that_many_epochs() -> None:
    import optuna

    from infoflow_track.study.algorithms import make_pruner, parse_algorithm

    options = {"type": "median", "n_warmup_steps": 2, "n_startup_trials": 1}
    pruner = make_pruner(parse_algorithm(options, "pruner", "none"), 10)
    study = optuna.create_study(direction="maximize", pruner=pruner)
    good = study.ask()
    for epoch in range(1, 6):
        good.report(1.0, epoch)
    study.tell(good, 1.0)
    bad = study.ask()
    pruned_at = []
    for epoch in range(1, 6):  # epochs are reported as steps 1, 2, ...
        bad.report(0.0, epoch)
        pruned_at.append(bad.should_prune())
    assert pruned_at == [False, False, True, True, True]  # two epochs of warm-up, then pruned


def test_hyperband_budget_is_the_epochs_a_multi_phase_plugin_reports(tmp_path: Path) -> None:
    from infoflow_track.experiment import plan_run
    from infoflow_track.study.runner import epoch_steps, first_point
    from infoflow_track.study.spec import load_spec

    path = tmp_path / "phases.toml"
    path.write_text(
        textwrap.dedent("""
        plugin = "local-mi"
        n_trials = 2
        [settings]
        dataset = "digits"
        epochs = 2
        [pruner]
        type = "hyperband"
    """)
    )
    spec = load_spec(str(path))
    plan = plan_run(spec.plugin, {**spec.fixed, **first_point(spec)}, spec.settings)
    assert epoch_steps(spec) == plan.total_epochs > spec.settings.epochs
