"""What the MLflow UI shows of a study, read through the real UI server's REST API (the data
its pages are built from), and what optuna-dashboard reads from the study's storage."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import urllib.request
from pathlib import Path

import pytest
from helpers import INFOFLOW, run_in_process
from test_study import journal_study, write_spec

from infoflow_track.uiserver import rest, wait_until_serving


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_ui(cwd: Path, port: int, *args: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    return subprocess.Popen(
        [INFOFLOW, "ui", "--port", str(port), *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@pytest.mark.slow
@pytest.mark.e2e
def test_ui_serves_the_default_store_on_localhost_once_ready(tmp_path: Path) -> None:
    port = _free_port()
    server = start_ui(tmp_path, port)
    try:
        wait_until_serving(server, f"http://127.0.0.1:{port}")  # however long start-up takes
        assert (tmp_path / "mlruns" / "mlflow.db").exists()
    finally:
        server.terminate()
        server.wait(timeout=60)


def tags_of(entity: dict) -> dict[str, str]:
    return {t["key"]: t["value"] for t in entity.get("tags", [])}


@pytest.mark.slow
@pytest.mark.e2e
def test_the_ui_server_shows_a_study_as_model_training_with_named_linked_runs(
    tmp_path: Path, monkeypatch
) -> None:
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    monkeypatch.setenv("INFOFLOW_UI_URL", base)
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    run_in_process(write_spec(tmp_path, name="ui", n_trials=3), uri)

    server = start_ui(tmp_path, port, "--tracking-uri", uri)
    try:
        wait_until_serving(server, base)
        with urllib.request.urlopen(base, timeout=30) as page:  # the UI's own page
            assert page.status == 200 and b"<html" in page.read().lower()
        experiment = rest(base, "experiments/get-by-name?experiment_name=ui")["experiment"]
        tags = tags_of(experiment)
        assert tags["mlflow.experimentKind"] == "custom_model_development"  # runs, not GenAI
        assert "Optuna study **ui**" in tags["mlflow.note.content"]
        view = json.loads(tags["mlflow.sharedViewState.infoflow"])  # what printed links open
        assert view["orderByKey"] == "metrics.`acc/test`" and view["orderByAsc"] is False
        assert view["selectedColumns"] == [
            "metrics.`acc/test`",
            "params.`lr`",
            "params.`activation`",
            "tags.`infoflow.trial_state`",
        ]
        found = rest(base, "runs/search", {"experiment_ids": [experiment["experiment_id"]],
                                           "max_results": 100})["runs"]  # fmt: skip
        runs = {r["info"]["run_id"]: r for r in found}
        (parent,) = [r for r in found if "mlflow.parentRunId" not in tags_of(r["data"])]
        assert parent["info"]["run_name"] == "ui"
        study = journal_study(tmp_path / "store", "ui")
        assert study.metric_names == ["acc/test"]  # optuna-dashboard's label, not Objective 0
        assert len(study.trials) == 3 == len(runs) - 1
        for trial in study.trials:
            run_id = trial.user_attrs["mlflow_run_id"]
            exp_id = experiment["experiment_id"]
            link = f"{base}/#/experiments/{exp_id}/runs/{run_id}?workflowType=machine_learning"
            assert trial.user_attrs["mlflow_run_url"] == link  # model-training pages, not GenAI
            run = rest(base, f"runs/get?run_id={run_id}")["run"]  # the link's run is served
            run_tags = tags_of(run["data"])
            assert run_tags["mlflow.parentRunId"] == parent["info"]["run_id"]
            assert run_tags["infoflow.study"] == "ui"
            assert run_tags["infoflow.trial_number"] == str(trial.number)
            name = run["info"]["run_name"]
            assert name.startswith(f"trial {trial.number}: ")
            assert f"activation={trial.params['activation']}" in name
            params = {p["key"]: p["value"] for p in run["data"]["params"]}
            assert f"lr={float(params['lr']):.4g}" in name  # the run's own parameters
    finally:
        server.terminate()
        server.wait(timeout=60)
