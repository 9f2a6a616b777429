"""MLflow tracking on a real SQLite store: layout, URI resolution, batched logging, parents."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from infoflow_track import UserError
from infoflow_track.tracking import Tracker, git_state, resolve_tracking_uri

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient


class CountingClient:
    """The real MlflowClient, with a count of ``log_batch`` calls."""

    def __init__(self, client: MlflowClient) -> None:
        self._client = client
        self.log_batch_calls = 0

    def log_batch(self, *args, **kwargs):
        self.log_batch_calls += 1
        return self._client.log_batch(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._client, name)


def test_default_store_is_sqlite_under_mlruns_with_artifacts_beside(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    tracker = Tracker()
    assert tracker.uri == f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    run = tracker.start_run("exp")
    run.log_dict({"a": 1}, "config.json")
    run.end()
    assert (tmp_path / "mlruns" / "mlflow.db").is_file()
    stored = list((tmp_path / "mlruns" / "artifacts").rglob("config.json"))
    assert len(stored) == 1
    assert Tracker().experiment_id("exp") == tracker.experiment_id("exp")  # created once


def test_explicit_uri_beats_environment_beats_default(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    assert resolve_tracking_uri() == f"sqlite:///{tmp_path}/mlruns/mlflow.db"
    monkeypatch.setenv(
        "MLFLOW_TRACKING_URI", "sqlite:///from-env.db"
    )  # relative, as in MLflow docs
    assert resolve_tracking_uri() == f"sqlite:///{tmp_path}/from-env.db"
    assert resolve_tracking_uri("sqlite:////abs/x.db") == "sqlite:////abs/x.db"
    assert resolve_tracking_uri("http://127.0.0.1:5000") == "http://127.0.0.1:5000"


@pytest.mark.parametrize("uri", ["/tmp/plain/path", "file:///tmp/runs", "bogus://x"])
def test_uris_mlflow_3_cannot_store_in_are_user_errors(uri: str) -> None:
    with pytest.raises(UserError, match=r"invalid tracking URI .*sqlite:///PATH"):
        resolve_tracking_uri(uri)


def test_a_sqlite_uri_naming_no_file_is_a_user_error(tmp_path: Path) -> None:
    for uri in ("sqlite:///", f"sqlite:///{tmp_path}", f"sqlite:///{tmp_path}/"):
        with pytest.raises(UserError, match="name a database file"):
            resolve_tracking_uri(uri)


def test_an_unreachable_server_is_a_quick_user_error() -> None:
    with socket.socket() as s:  # a port on which nothing listens
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    started = time.monotonic()
    with pytest.raises(UserError, match="cannot reach tracking server"):
        Tracker(f"http://127.0.0.1:{port}")
    assert time.monotonic() - started < 30


def test_git_state_only_for_files_a_repository_tracks(tmp_path: Path) -> None:
    def git(*args: str) -> None:
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / ".gitignore").write_text("ignored.py\n")
    for name in ("plugin.py", "ignored.py"):
        (tmp_path / name).write_text("x = 1\n")
    git("add", ".gitignore", "plugin.py")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    head = subprocess.run(
        ["git", "-C", str(tmp_path), "rev-parse", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    assert git_state(tmp_path / "plugin.py") == (head, False)
    assert git_state(tmp_path / "ignored.py") is None
    (tmp_path / "plugin.py").write_text("x = 2\n")
    assert git_state(tmp_path / "plugin.py") == (head, True)


def test_a_store_that_cannot_be_created_is_a_user_error(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("")
    with pytest.raises(UserError, match="is not a folder"):
        Tracker(f"sqlite:///{tmp_path / 'afile' / 'mlflow.db'}")


@pytest.mark.parametrize("name", ["", "   ", "x" * 501, "Default"])
def test_the_tracker_refuses_experiment_names_mlflow_cannot_hold(sqlite_uri, name) -> None:
    tracker = Tracker(sqlite_uri)
    with pytest.raises(UserError, match="invalid experiment name"):
        tracker.experiment_id(name)
    assert [e.name for e in tracker.client.search_experiments()] == ["Default"]  # no new one


def test_a_deleted_experiment_is_a_user_error(sqlite_uri: str) -> None:
    tracker = Tracker(sqlite_uri)
    tracker.client.delete_experiment(tracker.experiment_id("gone"))
    with pytest.raises(UserError, match="experiment 'gone' is deleted"):
        Tracker(sqlite_uri).experiment_id("gone")


def test_metrics_of_a_step_go_in_one_call_and_params_in_batches(sqlite_uri: str) -> None:
    from mlflow.tracking import MlflowClient

    tracker = Tracker(sqlite_uri)
    run = tracker.start_run("exp", run_name="r", tags={"infoflow.plugin": "mlp"})
    counting = CountingClient(run.client)
    run.client = counting
    for step in (1, 2, 3):
        run.log_metrics({f"mi_xt/layer{i}": i * step for i in range(40)}, step=step)
    assert counting.log_batch_calls == 3
    run.log_metrics({f"m{i}": float(i) for i in range(1500)}, step=1)  # past MLflow's limit
    assert counting.log_batch_calls == 5
    run.log_params({f"p{i}": i for i in range(250)})
    run.end()

    stored = MlflowClient(sqlite_uri).get_run(run.run_id)
    assert len(stored.data.params) == 250 and stored.data.params["p249"] == "249"
    assert len(stored.data.metrics) == 40 + 1500
    history = MlflowClient(sqlite_uri).get_metric_history(run.run_id, "mi_xt/layer7")
    assert sorted((m.step, m.value) for m in history) == [(1, 7), (2, 14), (3, 21)]
    assert stored.info.status == "FINISHED" and stored.data.tags["infoflow.plugin"] == "mlp"


def test_child_runs_carry_an_explicit_parent(sqlite_uri: str) -> None:
    from mlflow.tracking import MlflowClient

    tracker = Tracker(sqlite_uri)
    parent = tracker.start_run("study")
    child = tracker.start_run("study", parent_run_id=parent.run_id)
    tags = MlflowClient(sqlite_uri).get_run(child.run_id).data.tags
    assert tags["mlflow.parentRunId"] == parent.run_id
