"""`infoflow study` end to end: real Optuna journal storages, real SQLite MLflow stores, real
worker processes, real signals."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from helpers import INFOFLOW, plant_plugin, run_cli, run_in_process, runs_of, tiny_plugin

if TYPE_CHECKING:
    import optuna

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
lr = {{ type = "float", low = 1e-3, high = 3e-2, log = true }}
activation = {{ type = "categorical", choices = ["relu", "tanh"] }}

[objective]
metric = "acc/test"
direction = "maximize"

[sampler]
type = "random"
seed = 0
"""


def write_spec(tmp_path: Path, name: str = "s", n_trials: int = 6, epochs: int = 2,
               extra: str = "") -> Path:  # fmt: skip
    path = tmp_path / f"{name}.toml"
    path.write_text(SPEC.format(name=name, n_trials=n_trials, epochs=epochs) + extra)
    return path


def journal_study(store: Path, name: str) -> optuna.Study:
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    storage = JournalStorage(JournalFileBackend(str(store / "optuna.journal")))
    return optuna.load_study(study_name=name, storage=storage)


@pytest.mark.slow
@pytest.mark.e2e
def test_cli_study_records_trials_in_journal_and_parent_child_runs(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient
    from optuna.trial import TrialState

    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    spec = write_spec(tmp_path, name="six")
    proc = run_cli("study", str(spec), "--tracking-uri", uri, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "6/6 finished" in proc.stdout

    study = journal_study(tmp_path / "store", "six")
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 6
    parent, children = runs_of(uri, "six")
    assert parent.data.tags["infoflow.study"] == "six"
    assert parent.data.tags["infoflow.plugin"] == "mlp"
    assert parent.data.tags["infoflow.sampler"] == "random(seed=0)"
    assert parent.data.tags["infoflow.pruner"] == "none"
    assert parent.data.tags["infoflow.storage"].endswith("store/optuna.journal")
    assert parent.info.status == "FINISHED"
    assert len(children) == 6
    by_id = {r.info.run_id: r for r in children}
    client = MlflowClient(uri)
    for trial in trials:
        run = by_id[trial.user_attrs["mlflow_run_id"]]
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.data.tags["infoflow.trial_number"] == str(trial.number)
        assert run.data.tags["infoflow.trial_state"] == "COMPLETE"
        assert run.data.params["lr"] == str(trial.params["lr"])
        assert run.data.params["activation"] == trial.params["activation"]
        assert run.data.params["widths"] == "16"
        history = client.get_metric_history(run.info.run_id, "acc/test")
        assert [m.step for m in history] == [0, 1, 2]  # 0: the model at initialisation
        assert history[-1].value == trial.value
        assert len(client.get_metric_history(run.info.run_id, "mi_xt/hidden1")) == 3
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id, "report")}
    assert {"report/trials.csv", "report/optimization_history.png",
            "report/param_importances.png", "report/accuracy_best.png",
            "report/information_plane_best.png"} <= artifacts  # fmt: skip
    assert [a.path for a in client.list_artifacts(parent.info.run_id, "study")] == [
        "study/spec.json", "study/spec.toml"
    ]  # fmt: skip
    best = max(trials, key=lambda t: t.value)
    assert parent.data.tags["infoflow.best_trial"] == str(best.number)

    shown = run_cli("report", "six", "--tracking-uri", uri, cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    rows = [line for line in shown.stdout.splitlines() if "COMPLETE" in line]
    assert len(rows) == 6
    assert f"(trial {best.number})" in shown.stdout


@pytest.mark.slow
def test_median_pruner_prunes_bad_trials_early(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient
    from optuna.trial import TrialState

    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    spec = tmp_path / "prune.toml"
    spec.write_text(
        SPEC.format(name="prune", n_trials=8, epochs=4).replace(
            'lr = { type = "float", low = 1e-3, high = 3e-2, log = true }',
            'lr = { type = "categorical", choices = [0.02, 1e-6] }',
        )
        + '\n[pruner]\ntype = "median"\nn_startup_trials = 1\nn_warmup_steps = 0\n'
    )
    counts = run_in_process(spec, uri)
    study = journal_study(tmp_path / "store", "prune")
    pruned = [t for t in study.trials if t.state == TrialState.PRUNED]
    assert counts.pruned == len(pruned) >= 1 and counts.finished == 8
    assert all(t.params["lr"] == 1e-6 for t in pruned)  # only hopeless trials are pruned
    first_good = min(t.number for t in study.trials if t.params["lr"] == 0.02)
    late = [t for t in study.trials if t.number > first_good and t.state == TrialState.COMPLETE]
    assert all(t.params["lr"] == 0.02 for t in late)  # after a good trial, bad ones are pruned
    _, children = runs_of(uri, "prune")
    client = MlflowClient(uri)
    for trial in pruned:
        (run,) = [r for r in children if r.info.run_id == trial.user_attrs["mlflow_run_id"]]
        assert run.data.tags["infoflow.trial_state"] == "PRUNED"
        assert run.info.status == "FINISHED"
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "acc/test")]
        assert steps == [0, *sorted(trial.intermediate_values)] and max(steps) < 4
        # told apart from a complete trial at a glance in the UI's runs table and the report
        assert run.info.run_name.startswith(f"trial {trial.number}: lr=1e-06")
        assert run.info.run_name.endswith(f"[pruned at epoch {max(steps)}]")
    from infoflow_track.study.report import table_data

    header, rows = table_data(study)
    shown = {int(row[0]): row[header.index("acc/test")] for row in rows}
    for trial in pruned:  # its last report, marked as such, not in the form of a final value
        last = max(trial.intermediate_values)
        assert shown[trial.number] == f"({trial.value:.4f} @ epoch {last})"
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert all(shown[t.number] == f"{t.value:.4f}" for t in complete)


@pytest.mark.slow
@pytest.mark.e2e
def test_two_workers_finish_exactly_the_budget(tmp_path: Path) -> None:
    from optuna.trial import TrialState

    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    spec = write_spec(tmp_path, name="par", n_trials=5)
    proc = run_cli("study", str(spec), "--workers", "2", "--tracking-uri", uri, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    trials = journal_study(tmp_path / "store", "par").get_trials()
    assert [t.number for t in trials] == [0, 1, 2, 3, 4]
    assert all(t.state == TrialState.COMPLETE for t in trials)
    owners = {t.user_attrs["infoflow.owner"].split(":")[1] for t in trials}
    assert len(owners) == 2  # both spawned workers took trials
    _, children = runs_of(uri, "par")
    assert sorted(r.info.run_id for r in children) == sorted(
        t.user_attrs["mlflow_run_id"] for t in trials
    )


@pytest.mark.slow
def test_rerun_continues_the_study_and_its_parent_run(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    spec = write_spec(tmp_path, name="again", n_trials=3)
    assert run_in_process(spec, uri).finished == 3
    first = {t.number: t.user_attrs["mlflow_run_id"]
             for t in journal_study(tmp_path / "store", "again").trials}  # fmt: skip
    assert run_in_process(spec, uri).finished == 3  # budget met: nothing new
    assert run_in_process(spec, uri, n_trials=5).finished == 5
    trials = journal_study(tmp_path / "store", "again").trials
    assert [t.number for t in trials] == [0, 1, 2, 3, 4]
    assert {t.number: t.user_attrs["mlflow_run_id"] for t in trials[:3]} == first
    parent, children = runs_of(uri, "again")
    assert len(children) == 5 and parent.data.tags["infoflow.n_trials"] == "5"
    assert parent.info.status == "FINISHED"


@pytest.mark.slow
@pytest.mark.e2e
def test_rerun_with_a_changed_spec_is_refused(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    spec = write_spec(tmp_path, name="same", n_trials=1)
    run_in_process(spec, uri)
    proc = run_cli("study", str(spec), "--set", "epochs=3", "--tracking-uri", uri, cwd=tmp_path)
    assert proc.returncode == 2
    assert "different settings" in proc.stderr and "--name" in proc.stderr
    assert len(journal_study(tmp_path / "store", "same").trials) == 1


FLAKY = (
    tiny_plugin("tiny")
    + """
import torch.nn.functional as F

@dataclass(frozen=True)
class FlakyConfig(Config):
    mode: str = hparam("ok", choices=("ok", "raise", "nan"))

class Flaky(Tiny):
    name = "flaky"
    summary = "fails on demand"
    Config = FlakyConfig
    search_space = {"mode": {"type": "categorical", "choices": ["ok", "raise", "nan"]}}

    def training_step(self, model, x, y, config):
        if config.mode == "raise":
            raise RuntimeError("planted failure")
        loss = F.cross_entropy(model(x), y)
        return loss * float("nan") if config.mode == "nan" else loss
"""
)


@pytest.mark.slow
def test_raising_and_nan_trials_fail_alone(tmp_path: Path, monkeypatch) -> None:
    from mlflow.tracking import MlflowClient
    from optuna.trial import TrialState

    site = tmp_path / "site"
    plant_plugin(site, "flaky-plugin", {"flaky": "flaky_mod:Flaky"}, {"flaky_mod": FLAKY})
    monkeypatch.syspath_prepend(str(site))
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    spec = tmp_path / "flaky.toml"
    spec.write_text('plugin = "flaky"\n[settings]\nepochs = 2\nprobe_size = 128\n'
                    '[sampler]\ntype = "grid"\n')  # fmt: skip
    counts = run_in_process(spec, uri)
    assert (counts.complete, counts.failed, counts.finished) == (1, 2, 3)  # grid: 3 points
    trials = {t.params["mode"]: t for t in journal_study(tmp_path / "store", "flaky").trials}
    assert trials["ok"].state == TrialState.COMPLETE
    assert trials["raise"].state == trials["nan"].state == TrialState.FAIL
    assert "planted failure" in trials["raise"].user_attrs["infoflow.error"]
    assert "DivergedError" in trials["nan"].user_attrs["infoflow.error"]
    client = MlflowClient(uri)
    for mode, needle in (("raise", "RuntimeError: planted failure"), ("nan", "loss is nan")):
        run = client.get_run(trials[mode].user_attrs["mlflow_run_id"])
        assert run.info.status == "FAILED"
        assert needle in run.data.tags["infoflow.error"]
        assert run.data.tags["infoflow.trial_state"] == "FAIL"
    ok = client.get_run(trials["ok"].user_attrs["mlflow_run_id"])
    assert ok.info.status == "FINISHED" and ok.data.tags["infoflow.trial_state"] == "COMPLETE"


def _wait_for_running_trials(
    store: Path, name: str, proc: subprocess.Popen, count: int = 1, timeout: float = 120
) -> list:
    """``count`` RUNNING trials that have an MLflow run and at least one epoch reported."""
    from optuna.trial import TrialState

    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, proc.communicate()
        if (store / "optuna.journal").exists():
            try:
                trials = journal_study(store, name).get_trials(states=(TrialState.RUNNING,))
            except KeyError:  # not created yet
                trials = []
            running = [t for t in trials if "mlflow_run_id" in t.user_attrs
                       and t.intermediate_values]  # fmt: skip
            if len(running) >= count:
                return running
        time.sleep(0.1)
    raise AssertionError(f"{count} trial(s) did not start")


def _start_study(spec: Path, uri: str, cwd: Path, *args: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    return subprocess.Popen(
        [INFOFLOW, "study", str(spec), "--tracking-uri", uri, *args], cwd=cwd, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


@pytest.mark.slow
@pytest.mark.e2e
def test_a_sigkilled_workers_trial_is_retried_by_the_other_worker_within_the_budget(
    tmp_path: Path,
) -> None:
    from mlflow.tracking import MlflowClient
    from optuna.trial import TrialState

    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    store = tmp_path / "store"
    spec = write_spec(tmp_path, name="kill", n_trials=4, epochs=20)
    proc = _start_study(spec, uri, tmp_path, "--workers", "2")

    def pid(trial: Any) -> int:
        return int(trial.user_attrs["infoflow.owner"].split(":")[1])

    # the last-started worker: unreaped, it looked alive and its trial stayed held
    victim = max(_wait_for_running_trials(store, "kill", proc, count=2), key=pid)
    os.kill(pid(victim), signal.SIGKILL)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert "ended with status -9" in out

    trials = journal_study(store, "kill").trials  # the surviving worker ran the retry
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    killed = trials[victim.number]
    assert killed.state == TrialState.FAIL
    assert "ended without finishing" in killed.user_attrs["infoflow.abandoned"]
    (retry,) = [t for t in trials if t.system_attrs.get("failed_trial") == victim.number]
    assert retry.params == victim.params and retry.state == TrialState.COMPLETE
    counted = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(counted) == 4 and len(trials) == 5
    run = MlflowClient(uri).get_run(victim.user_attrs["mlflow_run_id"])
    assert run.info.status == "FAILED" and run.data.tags["infoflow.trial_state"] == "FAIL"
    assert "abandoned" in run.data.tags["infoflow.error"]


@pytest.mark.slow
@pytest.mark.e2e
def test_ctrl_c_fails_the_running_trial_and_a_rerun_resumes(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient
    from optuna.trial import TrialState

    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    store = tmp_path / "store"
    spec = write_spec(tmp_path, name="stop", n_trials=2, epochs=20)
    proc = _start_study(spec, uri, tmp_path)
    (victim, *_) = _wait_for_running_trials(store, "stop", proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "rerun to continue" in err
    assert "stopping after this epoch" in err  # the run ends at an epoch end, not mid-write
    client = MlflowClient(uri)
    parent, _ = runs_of(uri, "stop")
    assert parent.info.status == "KILLED"
    assert client.get_run(victim.user_attrs["mlflow_run_id"]).info.status == "KILLED"
    interrupted = journal_study(store, "stop").trials[victim.number]
    assert interrupted.state == TrialState.FAIL
    assert "interrupted" in interrupted.user_attrs["infoflow.abandoned"]

    counts = run_in_process(spec, uri)
    assert counts.finished == 2 and counts.complete == 2 and counts.abandoned == 1
    assert runs_of(uri, "stop")[0].info.status == "FINISHED"


BAD_SPECS = {
    "unknown top-level key": ("n_trails = 3\n", "'n_trails'"),
    "unknown hyperparameter in search": (
        '[search]\ndepth = { type = "int", low = 1, high = 3 }\n',
        "'depth'",
    ),
    "reversed range": ('[search]\nlr = { type = "float", low = 0.1, high = 0.01 }\n', "'lr'"),
    "out of the plugin's range": (
        '[search]\nlr = { type = "float", low = 0.1, high = 5.0 }\n',
        "'lr'",
    ),
    "float range for a list": (
        '[search]\nwidths = { type = "int", low = 1, high = 3 }\n',
        "'widths'",
    ),
    "unknown sampler": ('[sampler]\ntype = "bayes"\n', "'bayes'"),
    "unknown sampler option": ('[sampler]\ntype = "tpe"\nn_startup = 3\n', "'n_startup'"),
    "pruner with two objectives": (
        '[[objective]]\nmetric = "acc/test"\n[[objective]]\nmetric = "mi_xt/hidden1"\n'
        'direction = "minimize"\n[pruner]\ntype = "median"\n',
        "single objective",
    ),
    "objective not logged": ('[objective]\nmetric = "mi_xt/hidden9"\n', "'mi_xt/hidden9'"),
    "bad direction": ('[objective]\nmetric = "acc/test"\ndirection = "up"\n', "'up'"),
    "unknown setting": ("[settings]\nepochz = 3\n", "'epochz'"),
    "bad fixed value": ('[fixed]\nactivation = "gelu"\n', "'activation'"),
    "grid over a float range": (
        '[sampler]\ntype = "grid"\n[search]\nlr = { type = "float", low = 0.001, high = 0.01 }\n',
        "'lr'",
    ),
    "seed that is no integer": ('[sampler]\ntype = "tpe"\nseed = "abc"\n', "seed = 'abc'"),
    "bad pruner option value": (
        '[pruner]\ntype = "median"\nn_startup_trials = -1\n',
        "n_startup_trials = -1 of [pruner] median",
    ),
    "malformed toml": ("[search\n", "malformed study spec"),
    "zero trials": ("n_trials = 0\n", "n_trials 0"),
}


@pytest.mark.parametrize("case", sorted(BAD_SPECS))
def test_malformed_spec_exits_2_naming_the_key_and_writes_nothing(
    case: str, tmp_path: Path, monkeypatch
) -> None:
    from typer.testing import CliRunner

    from infoflow_track.cli import app

    body, named = BAD_SPECS[case]
    spec = tmp_path / "bad.toml"
    spec.write_text('plugin = "mlp"\n' + body)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["study", str(spec), "--n-trials", "2"]
                                if case != "zero trials" else ["study", str(spec)])  # fmt: skip
    assert result.exit_code == 2, result.output
    message = result.stderr.strip()
    assert message.startswith("error: ") and "\n" not in message
    assert named in message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.toml"]  # no store, no journal


@pytest.mark.slow
@pytest.mark.e2e
def test_unknown_study_name_lists_the_studies(tmp_path: Path) -> None:
    (tmp_path / "studies").mkdir()
    write_spec(tmp_path / "studies", name="alpha")
    proc = run_cli("study", "beta", cwd=tmp_path)
    assert proc.returncode == 2 and "unknown study 'beta'" in proc.stderr
    assert "alpha" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "mlruns").exists()


@pytest.mark.skipif(sys.platform != "linux", reason="pid start times come from /proc")
def test_owner_of_a_reused_pid_is_not_alive() -> None:
    from infoflow_track.owners import owner_alive, owner_id

    me = owner_id()
    host, pid, start = me.rsplit(":", 2)
    assert owner_alive(me) is True
    assert owner_alive(f"{host}:{pid}:{int(start) + 1}") is False  # same pid, other process
    assert owner_alive(f"{host}-elsewhere:{pid}:{start}") is None  # cannot tell from here


@pytest.mark.skipif(sys.platform != "linux", reason="process states come from /proc")
def test_an_ended_child_not_yet_reaped_is_not_alive() -> None:
    """A SIGKILLed worker stays a zombie until its parent joins it; its trial is abandoned."""
    import socket

    from infoflow_track.owners import _stat, owner_alive

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        start = _stat(child.pid)[1]
        deadline = time.time() + 30
        while _stat(child.pid)[0] != "Z":
            assert time.time() < deadline, "the child did not end"
            time.sleep(0.02)
        assert owner_alive(f"{socket.gethostname()}:{child.pid}:{start}") is False
    finally:
        child.wait()
