"""What a researcher sees: experiment kind and description, run names and links, the
measures table of `infoflow run`, a study's progress inside a trial, the UI's worker count.
In-process on real SQLite MLflow stores."""

from __future__ import annotations

from pathlib import Path


def test_experiments_are_marked_model_training_and_described_once(sqlite_uri: str) -> None:
    from mlflow.tracking import MlflowClient

    from infoflow_track.tracking import DEFAULT_DESCRIPTION, Tracker

    tracker = Tracker(sqlite_uri)
    client = MlflowClient(sqlite_uri)
    made = client.get_experiment(tracker.experiment_id("new", "**my** study"))
    assert made.tags["mlflow.experimentKind"] == "custom_model_development"
    assert made.tags["mlflow.note.content"] == "**my** study"
    older = client.create_experiment("older", tags={"mlflow.note.content": "kept"})
    bare = client.create_experiment("bare")
    fresh = Tracker(sqlite_uri)  # another command, on experiments made before this version
    for name, experiment_id in (("older", older), ("bare", bare)):
        assert fresh.experiment_id(name) == experiment_id
    assert client.get_experiment(older).tags["mlflow.note.content"] == "kept"
    assert client.get_experiment(bare).tags["mlflow.note.content"] == DEFAULT_DESCRIPTION
    assert all(client.get_experiment(e).tags["mlflow.experimentKind"] == "custom_model_development"
               for e in (older, bare))  # fmt: skip


def test_run_urls_need_a_known_ui_address(sqlite_uri: str, monkeypatch) -> None:
    from infoflow_track.tracking import Tracker

    tracker = Tracker(sqlite_uri)
    run = tracker.start_run("links")
    experiment = tracker.experiment_id("links")
    monkeypatch.delenv("INFOFLOW_UI_URL", raising=False)
    assert tracker.run_url(run.run_id) is None
    assert tracker.where(run.run_id) == f"run {run.run_id}"
    monkeypatch.setenv("INFOFLOW_UI_URL", "http://127.0.0.1:5000/")
    expected = (f"http://127.0.0.1:5000/#/experiments/{experiment}/runs/{run.run_id}"
                "?workflowType=machine_learning")  # fmt: skip
    assert tracker.run_url(run.run_id) == expected == tracker.where(run.run_id)
    assert tracker.runs_table_url(experiment) == (
        f"http://127.0.0.1:5000/#/experiments/{experiment}/runs?workflowType=machine_learning"
    )
    tracker.save_runs_view(experiment, metrics=["acc/test"], params=["lr"], tags=[],
                           order_by="acc/test", ascending=False, expanded=[run.run_id])  # fmt: skip
    assert tracker.runs_table_url(experiment).endswith("&viewStateShareKey=infoflow")
    run.end()


def test_a_run_is_named_by_its_plugin_changed_params_data_and_seeds() -> None:
    from infoflow_track.experiment import plan_run
    from infoflow_track.settings import RunSettings

    settings = RunSettings(dataset="ib12", epochs=1, probe_size=256, device="cpu")
    changed = plan_run("mlp", {"widths": (10, 7, 5), "activation": "tanh"}, settings, {})
    assert changed.label() == "mlp: widths=10,7,5, activation=tanh · ib12, seed 0"
    default = plan_run("mlp", {}, RunSettings(dataset="ib12", epochs=1, probe_size=256,
                                              device="cpu", seed=4, replicates=3), {})  # fmt: skip
    assert default.label() == "mlp · ib12, seed 4..6"


def test_trial_names_carry_the_sampled_parameters() -> None:
    from infoflow_track.study.trial import trial_run_name

    named = trial_run_name(3, {"lr": 0.0031622776, "widths": (64, 32), "tanh": True})
    assert named == "trial 3: lr=0.003162, widths=64,32, tanh=true"
    assert trial_run_name(0, {}) == "trial 0"
    assert len(trial_run_name(1, {"p": "x" * 400})) == 250


def test_the_measures_table_has_a_row_per_layer_and_the_ceilings_in_its_caption() -> None:
    from rich.console import Console

    from infoflow_track.cli import measures_table

    metrics = {"acc/test": 0.9, "mi_xt/h1": 7.25, "ci95/mi_xt/h1": 0.5, "mi_ty/h1": 0.75,
               "ceiling_xt/h1": 12.0, "ceiling_xt/h2": 12.0, "mi_xt/h2": 3.0,
               "mi_xt.kde/h2": 1.5, "cka_label/h1": 0.25}  # fmt: skip
    console = Console(record=True, width=200)
    console.print(measures_table(metrics, "last epoch"))
    lines = console.export_text().splitlines()
    header = next(line for line in lines if "layer" in line)
    assert header.split() == ["┃", "layer", "┃", "mi_xt", "┃", "mi_ty", "┃", "cka_label", "┃",
                              "mi_xt.kde", "┃"]  # fmt: skip
    rows = {cells[0]: cells[1:] for line in lines
            if len(cells := [c.strip() for c in line.split("│")[1:-1]]) == 5}  # fmt: skip
    assert rows == {"h1": ["7.25±0.50", "0.75", "0.25", ""], "h2": ["3.00", "", "", "1.50"]}
    assert any("ceilings ceiling_xt 12.00" in line for line in lines)


def test_trial_progress_says_epoch_and_time_left_at_most_every_interval() -> None:
    from infoflow_track.study.runner import TrialProgress

    times = iter([0.0, 4.0, 11.0, 15.0, 22.0, 30.0])
    lines: list[str] = []
    progress = TrialProgress(lines.append, 7, epochs=5, every_s=10.0, clock=lambda: next(times))
    for step in (1, 2, 3, 4, 5):  # at 4 s, 11 s, 15 s, 22 s, 30 s
        progress(step, {})
    assert lines == ["  trial 7: epoch 2/5, 11 s, about 16 s left",  # 11 / 2 * 3
                     "  trial 7: epoch 4/5, 22 s, about 6 s left"]  # fmt: skip


def test_the_ui_serves_with_one_worker_unless_asked(tmp_path: Path) -> None:
    from infoflow_track.tracking import ui_command

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    for asked, expected in ((None, "1"), (3, "3")):
        cmd = ui_command(uri, 0, *([] if asked is None else [asked]))
        assert cmd[cmd.index("--workers") + 1] == expected
        assert cmd[cmd.index("--host") + 1] == "127.0.0.1"
