"""Study parts on real Optuna storages: search spaces, every sampler and pruner, multi-objective
studies, --set overrides, and the recovery of trials whose worker is gone."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from helpers import run_in_process, runs_of
from test_study import SPEC, journal_study, write_spec

from infoflow_track import UserError
from infoflow_track.hparams import specs
from infoflow_track.study.algorithms import PRUNERS, SAMPLERS
from infoflow_track.study.recovery import claim, open_with_recovery, release_abandoned
from infoflow_track.study.space import Dimension, check_space, grid
from infoflow_track.study.spec import load_spec
from infoflow_track.study.storage import (
    ABANDONED_ATTR,
    HEARTBEAT_ATTR,
    OWNER_ATTR,
    STALE_AFTER_S,
    resolve_storage,
)


def test_space_accepts_every_kind_and_keeps_list_choices_as_text() -> None:
    import optuna
    from infoflow_plugins.mlp import MLPConfig

    dims = check_space(
        {
            "lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
            "weight_decay": {"type": "float", "low": 0.0, "high": 0.1, "step": 0.05},
            "widths": {"type": "categorical", "choices": [[64], [128, 64]]},
        },
        specs(MLPConfig),
        "[search]",
    )
    assert dims["widths"].choices == ("64", "128,64")
    assert dims["weight_decay"].grid_values() == pytest.approx([0.0, 0.05, 0.1])
    assert dims["lr"].grid_values() is None
    assert Dimension("n", "int", 2, 8, 3).grid_values() == [2, 5, 8]
    study = optuna.create_study()
    trial = study.ask()
    values = {name: dim.suggest(trial) for name, dim in dims.items()}
    assert 1e-4 <= values["lr"] <= 1e-1 and values["widths"] in ("64", "128,64")
    assert min(abs(values["weight_decay"] - v) for v in (0.0, 0.05, 0.1)) < 1e-12


@pytest.mark.parametrize(
    ("dist", "needle"),
    [
        ({"type": "float", "low": 0.0, "high": 0.1, "log": True}, "invalid value '0.0'"),
        ({"type": "float", "low": 1e-3, "high": 0.1, "log": True, "step": 0.01}, "no step"),
        ({"type": "float", "low": 1e-3, "high": 0.1, "step": -1}, "step -1"),
        ({"type": "float", "low": 1e-3, "high": 0.1, "bins": 3}, "unknown key 'bins'"),
        ({"type": "categorical", "choices": []}, "non-empty list"),
        ({"type": "categorical", "choices": [0.1, 0.1]}, "repeats choice"),
        ({"type": "categorical", "choices": [2.0]}, "invalid value"),
        ({"type": "int", "low": 1, "high": 3}, "int range cannot set"),
    ],
)
def test_space_rejects_bad_entries_naming_them(dist: dict, needle: str) -> None:
    from infoflow_plugins.mlp import MLPConfig

    with pytest.raises(UserError, match="entry 'lr'") as info:
        check_space({"lr": dist}, specs(MLPConfig), "[search]")
    assert needle in str(info.value)


def test_grid_points_and_its_refusals() -> None:
    from infoflow_plugins.mlp import MLPConfig

    dims = check_space({"activation": {"type": "categorical", "choices": ["relu", "tanh"]}},
                       specs(MLPConfig), "[search]")  # fmt: skip
    assert grid(dims, "[search]") == {"activation": ["relu", "tanh"]}
    with pytest.raises(UserError, match="empty"):
        grid({}, "[search]")


def test_set_overrides_settings_and_fixes_a_searched_hyperparameter(tmp_path: Path) -> None:
    path = write_spec(tmp_path)
    spec = load_spec(str(path), overrides={"epochs": "5", "activation": "tanh"})
    assert spec.settings.epochs == 5
    assert spec.fixed["activation"] == "tanh" and "activation" not in spec.search
    assert spec.fixed["widths"] == (16,)
    with pytest.raises(UserError, match="unknown --set key 'depth'"):
        load_spec(str(path), overrides={"depth": "3"})
    with pytest.raises(UserError, match="'epochs'"):
        load_spec(str(path), overrides={"epochs": "many"})


def test_name_resolves_in_the_studies_directory(tmp_path: Path) -> None:
    write_spec(tmp_path, name="found")
    assert load_spec("found", studies_dir=tmp_path).name == "found"
    repo_studies = Path(__file__).resolve().parents[1] / "studies"
    quick = load_spec("quickstart", studies_dir=repo_studies)  # the shipped spec is valid
    assert quick.plugin == "mlp" and quick.pruner.kind == "median" and quick.n_trials >= 6


@pytest.mark.slow
@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_every_sampler_runs_a_study(sampler: str, tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    spec = tmp_path / f"{sampler}.toml"
    text = SPEC.format(name=sampler, n_trials=2, epochs=1).replace('"random"', f'"{sampler}"')
    if sampler == "grid":  # a grid needs discrete dimensions
        text = text.replace('{ type = "float", low = 1e-3, high = 3e-2, log = true }',
                            '{ type = "categorical", choices = [0.001, 0.01] }')  # fmt: skip
    spec.write_text(text)
    counts = run_in_process(spec, uri)
    assert counts.complete == 2
    trials = journal_study(tmp_path / "store", sampler).trials
    if sampler == "grid":  # one trial per grid point, none repeated
        assert len({(t.params["lr"], t.params["activation"]) for t in trials}) == 2


@pytest.mark.slow
@pytest.mark.parametrize("pruner", sorted(PRUNERS))
def test_every_pruner_runs_a_study(pruner: str, tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    spec = write_spec(tmp_path, name=pruner, n_trials=3, extra=f'\n[pruner]\ntype = "{pruner}"\n')
    counts = run_in_process(spec, uri)
    assert counts.finished == 3
    trials = journal_study(tmp_path / "store", pruner).trials
    assert all(sorted(t.intermediate_values) == [1, 2][: len(t.intermediate_values)]
               for t in trials)  # fmt: skip


@pytest.mark.slow
def test_multi_objective_study_reports_both_values(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    spec = tmp_path / "multi.toml"
    spec.write_text(
        SPEC.format(name="multi", n_trials=3, epochs=2)
        .replace('[objective]\nmetric = "acc/test"\ndirection = "maximize"\n', "")
        .replace('"random"', '"nsga2"')
        + '[[objective]]\nmetric = "acc/test"\ndirection = "maximize"\n'
        '[[objective]]\nmetric = "mi_xt/hidden1"\ndirection = "minimize"\n'
    )
    assert run_in_process(spec, uri).complete == 3
    study = journal_study(tmp_path / "store", "multi")
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    client = MlflowClient(uri)
    for trial in study.trials:
        metrics = client.get_run(trial.user_attrs["mlflow_run_id"]).data.metrics
        assert trial.values == [metrics["acc/test"], metrics["mi_xt/hidden1"]]
    assert study.trials[0].intermediate_values == {}  # no pruning: nothing reported
    parent, _ = runs_of(uri, "multi")
    assert "infoflow.best_trial" not in parent.data.tags  # no single best on a Pareto front


@pytest.mark.slow
def test_a_plugin_metric_of_an_earlier_phase_is_an_objective(tmp_path: Path) -> None:
    """local-mi logs local/mi in its layer phases only: the objective is its latest value."""
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    spec = tmp_path / "phases.toml"
    spec.write_text('name = "phases"\nplugin = "local-mi"\nn_trials = 2\n[settings]\n'
                    'epochs = 1\nprobe_size = 128\n[search]\nlr = { type = "float", low = '
                    '1e-4, high = 1e-2, log = true }\n[objective]\nmetric = "local/mi"\n'
                    'direction = "maximize"\n[sampler]\ntype = "random"\nseed = 0\n')  # fmt: skip
    assert run_in_process(spec, uri).complete == 2
    client = MlflowClient(uri)
    for trial in journal_study(tmp_path / "store", "phases").trials:
        run_id = trial.user_attrs["mlflow_run_id"]
        history = client.get_metric_history(run_id, "local/mi")
        steps = [m.step for m in history]
        assert steps == [1, 2] and client.get_run(run_id).data.metrics["phase"] == 3
        assert trial.value == max(history, key=lambda m: m.step).value


def _running_trial(tmp_path: Path, owner: str, heartbeat: float) -> tuple:
    """A study on a real journal with one RUNNING trial claimed by ``owner``."""
    import optuna

    ref = resolve_storage(None, tmp_path)
    storage = ref.open()
    study = optuna.create_study(study_name="s", storage=storage)
    trial = study.ask()
    trial.suggest_float("lr", 1e-3, 1e-1, log=True)
    trial.set_user_attr(OWNER_ATTR, owner)
    trial.set_user_attr(HEARTBEAT_ATTR, heartbeat)
    return study, storage, trial


def test_trial_of_a_dead_local_worker_is_failed_and_requeued(tmp_path: Path) -> None:
    import socket

    from optuna.trial import TrialState

    study, storage, trial = _running_trial(tmp_path, f"{socket.gethostname()}:999999:1", 0.0)
    assert release_abandoned(study, storage, None) == [trial.number]
    frozen = study.trials[trial.number]
    assert frozen.state == TrialState.FAIL and "ended without" in frozen.user_attrs[ABANDONED_ATTR]
    (retry,) = study.get_trials(states=(TrialState.WAITING,))
    assert retry.system_attrs["failed_trial"] == trial.number  # Optuna's retry record
    again = study.ask()  # the retry is taken first, with the same parameters
    assert again.suggest_float("lr", 1e-3, 1e-1, log=True) == frozen.params["lr"]
    claim(storage, again._trial_id)
    assert release_abandoned(study, storage, None) == []  # claimed by this live process


def test_a_trial_started_but_never_claimed_is_released_by_the_locks_next_holder(
    tmp_path: Path,
) -> None:
    """A worker asks and claims under the study lock: a RUNNING trial without an owner seen
    by the lock's next holder was left by a worker that ended in between. It is released at
    once, not after the grace period of a silent heartbeat."""
    import optuna
    from optuna.trial import TrialState

    ref = resolve_storage(None, tmp_path)
    study = optuna.create_study(study_name="s", storage=ref.open())
    orphan = study.ask()  # its worker killed before claim
    orphan.suggest_float("lr", 1e-3, 1e-1, log=True)
    assert release_abandoned(study, study._storage, None) == [orphan.number]
    frozen = study.trials[orphan.number]
    assert frozen.state == TrialState.FAIL and "never claimed" in frozen.user_attrs[ABANDONED_ATTR]
    (retry,) = study.get_trials(states=(TrialState.WAITING,))
    assert retry.params == frozen.params


def test_remote_trial_is_released_only_after_its_heartbeat_stops(tmp_path: Path) -> None:
    study, storage, trial = _running_trial(tmp_path, "elsewhere:42:7", time.time())
    assert release_abandoned(study, storage, None) == []  # fresh heartbeat: still running
    storage.set_trial_user_attr(trial._trial_id, HEARTBEAT_ATTR, time.time() - STALE_AFTER_S - 5)
    assert release_abandoned(study, storage, None) == [trial.number]
    assert "no heartbeat" in journal_study(tmp_path, "s").trials[0].user_attrs[ABANDONED_ATTR]


def test_rdb_trials_are_recovered_by_optunas_heartbeat_and_retried(tmp_path: Path) -> None:
    """On an RDB storage the heartbeat is Optuna's (the database's clock): a trial whose
    heartbeat is older than the grace period is failed by fail_stale_trials, its MLflow run
    closed FAILED, and its parameters retried; a fresh one is left running."""
    import sqlite3

    import optuna
    from mlflow.tracking import MlflowClient
    from optuna.trial import TrialState

    from infoflow_track.study.runner import tally
    from infoflow_track.study.storage import PARENT_ATTR, RUN_ID_ATTR
    from infoflow_track.tracking import Tracker

    db = tmp_path / "optuna.db"
    ref = resolve_storage(f"sqlite:///{db}", tmp_path, heartbeat_s=2)
    assert ref.grace_s == 10
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}")
    storage = open_with_recovery(ref, tracker)
    study = optuna.create_study(study_name="s", storage=storage)
    parent = tracker.start_run("s", run_name="s")
    study.set_user_attr(PARENT_ATTR, parent.run_id)
    stale, live = study.ask(), study.ask()
    for trial in (stale, live):
        trial.suggest_float("lr", 1e-3, 1e-1, log=True)
        claim(storage, trial._trial_id)
    run = tracker.start_run("s", run_name="t0", parent_run_id=parent.run_id)
    stale.set_user_attr(RUN_ID_ATTR, run.run_id)
    assert release_abandoned(study, storage, tracker) == []  # both beat just now
    with sqlite3.connect(db) as connection:  # 11 s of silence from the first trial's worker
        connection.execute(
            "UPDATE trial_heartbeats SET heartbeat = datetime(heartbeat, '-11 seconds') "
            "WHERE trial_id = ?", (stale._trial_id,))  # fmt: skip
    assert release_abandoned(study, storage, tracker) == [stale.number]
    assert release_abandoned(study, storage, tracker) == []  # released once
    trials = study.get_trials()
    assert trials[stale.number].state == TrialState.FAIL
    assert trials[live.number].state == TrialState.RUNNING
    (retry,) = study.get_trials(states=(TrialState.WAITING,))
    assert retry.system_attrs["failed_trial"] == stale.number
    assert retry.params == trials[stale.number].params
    counts = tally(study)
    assert (counts.abandoned, counts.failed, counts.running, counts.waiting) == (1, 0, 1, 1)
    closed = MlflowClient(tracker.uri).get_run(run.run_id)
    assert closed.info.status == "FAILED" and "no heartbeat" in closed.data.tags["infoflow.error"]


def test_a_retry_that_fails_on_its_own_counts_as_failed(tmp_path: Path) -> None:
    """A retry starts without the abandoned attempt's owner, heartbeat, reason and run; it
    and the trial it retries are linked by Optuna's retry records only."""
    import socket

    from infoflow_track.study.report import trial_rows
    from infoflow_track.study.runner import tally

    study, storage, _ = _running_trial(tmp_path, f"{socket.gethostname()}:999999:1", 0.0)
    release_abandoned(study, storage, None)
    retry = study.ask()
    assert not {OWNER_ATTR, HEARTBEAT_ATTR, ABANDONED_ATTR} & set(retry.user_attrs)
    study.tell(retry, state=optuna_state("FAIL"))
    counts = tally(study)
    assert (counts.abandoned, counts.failed, counts.finished) == (1, 1, 1)
    rows = trial_rows(study)
    assert [r.state for r in rows] == ["FAIL (abandoned)", "FAIL"]


def optuna_state(name: str):
    from optuna.trial import TrialState

    return TrialState[name]


@pytest.mark.parametrize(
    ("url", "needle"),
    [("redis://x", "journal:PATH"), ("sqlite://x.db", "sqlite:///PATH"), ("runs", "journal:")],
)
def test_bad_storage_urls_are_user_errors(url: str, needle: str, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="--storage") as info:
        resolve_storage(url, tmp_path)
    assert needle in str(info.value)


@pytest.mark.slow
def test_rdb_storage_runs_a_study(tmp_path: Path) -> None:
    import optuna

    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    spec = write_spec(tmp_path, name="rdb", n_trials=2, epochs=1)
    from infoflow_track.study.runner import check_runnable, open_study, run_study
    from infoflow_track.tracking import Tracker

    loaded = load_spec(str(spec))
    check_runnable(loaded)
    tracker = Tracker(uri)
    ref = resolve_storage(f"sqlite:///{tmp_path / 'optuna.db'}", tmp_path)
    counts = run_study(loaded, ref, tracker, open_study(loaded, ref, tracker), echo=print)
    assert counts.complete == 2
    study = optuna.load_study(study_name="rdb", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    assert len(study.trials) == 2 and not (tmp_path / "store" / "optuna.journal").exists()


def test_the_readme_spec_is_valid(tmp_path: Path) -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = readme.split("```toml\n", 1)[1].split("```", 1)[0]
    (tmp_path / "readme.toml").write_text(block)
    spec = load_spec(str(tmp_path / "readme.toml"))
    assert spec.name == "my-study" and set(spec.search) == {"lr", "activation"}
    assert spec.fixed == {"widths": (64, 32)} and spec.timeout == 900.0


def test_workers_take_visible_gpus_round_robin() -> None:
    import torch

    from infoflow_track.devices import worker_device

    count = torch.cuda.device_count()
    expected = [f"cuda:{k % count}" for k in range(5)] if count else [None] * 5
    assert [worker_device("auto", k) for k in range(5)] == expected
    assert worker_device("cpu", 1) is None  # an explicit device is kept


@pytest.mark.slow
def test_only_the_best_trial_draws_figures_unless_the_spec_asks_for_all(tmp_path: Path) -> None:
    import json

    from mlflow.tracking import MlflowClient

    from infoflow_track.figures import draw_logged_figures
    from infoflow_track.tracking import Tracker

    for figures in ("best", "all"):
        root = tmp_path / figures
        root.mkdir()
        uri = f"sqlite:///{root / 'store' / 'mlflow.db'}"
        spec = write_spec(root, name=f"figures-{figures}", n_trials=3, epochs=1)
        spec.write_text(
            spec.read_text().replace("n_trials = 3\n", f'n_trials = 3\nfigures = "{figures}"\n')
        )
        assert run_in_process(spec, uri).complete == 3
        study, client = journal_study(root / "store", f"figures-{figures}"), MlflowClient(uri)
        for trial in study.trials:
            run_id = trial.user_attrs["mlflow_run_id"]
            plots = {a.path for a in client.list_artifacts(run_id, "plots")}
            drawn = figures == "all" or trial.number == study.best_trial.number
            assert plots == ({"plots/cka_heatmap.png", "plots/information_plane.png"} if drawn
                             else set()), (figures, trial.number)  # fmt: skip
            # every trial keeps what its figures are drawn from, equal to its logged metrics
            planes = json.loads(Path(client.download_artifacts(run_id, "probe/planes.json",
                                                               str(root))).read_text())  # fmt: skip
            logged = [m.value for m in sorted(client.get_metric_history(run_id, "mi_xt/hidden1"),
                                              key=lambda m: m.step)]  # fmt: skip
            assert planes["planes"][0]["mi_xt"]["hidden1"] == pytest.approx(logged)
            assert planes["steps"] == [0, 1] and planes["replicates"] == 1
        loser = next(t for t in study.trials if t.number != study.best_trial.number)
        if figures == "best":  # a figure drawn later, from the records, on a finished run
            assert draw_logged_figures(Tracker(uri), loser.user_attrs["mlflow_run_id"])
            png = Path(
                client.download_artifacts(
                    loser.user_attrs["mlflow_run_id"], "plots/information_plane.png", str(root)
                )
            )
            assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
        assert not draw_logged_figures(Tracker(uri), loser.user_attrs["mlflow_run_id"])  # once


def test_a_study_can_be_joined_by_name_with_the_spec_recorded_in_its_storage(
    tmp_path: Path,
) -> None:
    """The storage keeps the spec text, its --set overrides and the budget: a host without
    the file rebuilds the same spec (identity and budget), and a name the storage does not
    hold is not found."""
    from infoflow_track.study.runner import open_study, recorded_spec
    from infoflow_track.tracking import Tracker

    path = write_spec(tmp_path, name="joinable", n_trials=6, epochs=1)
    spec = load_spec(str(path), overrides={"epochs": "2", "widths": "8"}, n_trials=3)
    ref = resolve_storage(None, tmp_path / "store")
    open_study(spec, ref, Tracker(f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"))
    path.unlink()  # this "host" has no spec file
    joined = recorded_spec(ref, "joinable", n_trials=None, timeout=None)
    assert joined is not None and joined.identity() == spec.identity()
    assert joined.n_trials == 3 and joined.settings.epochs == 2 and joined.fixed["widths"] == (8,)
    assert recorded_spec(ref, "joinable", n_trials=5, timeout=None).n_trials == 5
    assert recorded_spec(ref, "other", n_trials=None, timeout=None) is None


def test_postgres_sessions_bound_idle_transactions_and_keep_alive_on_both_ends() -> None:
    from infoflow_track.study.storage import engine_options

    given = engine_options("postgresql://u:pw@db.lab:5432/optuna?options=-c%20search_path%3Dlab")
    args = given["connect_args"]
    assert given["pool_pre_ping"] and (args["keepalives"], args["keepalives_idle"]) == (1, 10)
    server = args["options"].split(" -c ")
    assert server[0] == "-c search_path=lab"  # the URL's own options come first, kept
    assert set(server[1:]) == {"idle_in_transaction_session_timeout=60000",
                               "tcp_keepalives_idle=10", "tcp_keepalives_interval=5",
                               "tcp_keepalives_count=3"}  # fmt: skip
    assert engine_options("postgresql://u@h/db")["connect_args"]["options"].startswith("-c idle")
    assert engine_options(f"sqlite:///{Path('/tmp/x.db')}") == {}
