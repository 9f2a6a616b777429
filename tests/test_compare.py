"""`infoflow compare`: many runs' information planes in one figure, from their logged records,
logged where the MLflow UI shows it; real runs in a real SQLite store."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from infoflow_track.cli import app

LAYERS = ("hidden1", "hidden2")


@pytest.fixture(scope="module")
def three_runs(tmp_path_factory) -> tuple[str, list[str]]:
    """(store URI, ids of three finished mlp runs on digits that differ in learning rate)."""
    from infoflow_track.experiment import execute_run, plan_run
    from infoflow_track.settings import RunSettings
    from infoflow_track.tracking import Tracker

    root = tmp_path_factory.mktemp("compare")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    tracker = Tracker(uri)
    settings = RunSettings(dataset="digits", epochs=2, probe_size=256, device="cpu")
    ids = []
    for lr in (1e-3, 3e-3, 1e-2):
        plan = plan_run("mlp", {"widths": (16, 8), "lr": lr}, settings, {})
        ids.append(execute_run(plan, tracker, experiment="cmp", figures=False).run_id)
    return uri, ids


def compare_runs(uri: str) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("cmp").experiment_id])
    return [r for r in runs if "infoflow.compared_runs" in r.data.tags]


def test_compare_logs_one_figure_of_the_runs_on_a_run_that_lists_them(three_runs, tmp_path):
    from mlflow.tracking import MlflowClient

    uri, ids = three_runs
    before = len(compare_runs(uri))
    out = tmp_path / "figs" / "planes.png"
    result = CliRunner().invoke(app, ["compare", *ids, "--tracking-uri", uri, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    made = compare_runs(uri)
    assert len(made) == before + 1
    (run,) = [r for r in made if r.data.tags["infoflow.compared_runs"] == ",".join(ids)]
    client = MlflowClient(uri)
    assert run.info.run_name == "compare: 3 runs" and run.info.status == "FINISHED"
    shown = {a.path for a in client.list_artifacts(run.info.run_id, "compare")}
    assert shown == {"compare/information_planes.png", "compare/runs.tsv"}


def test_the_figure_draws_each_runs_logged_metrics_in_a_panel_per_layer(three_runs) -> None:
    from mlflow.tracking import MlflowClient

    from infoflow_track.compare import draw, load_planes
    from infoflow_track.tracking import Tracker

    uri, ids = three_runs
    runs, notes = load_planes(Tracker(uri), ids, None)
    assert notes == [] and [r.run_id for r in runs] == ids
    figure = draw(runs, "three")
    panels = [ax for ax in figure.axes if ax.get_title() in LAYERS]
    assert [ax.get_title() for ax in panels] == list(LAYERS)
    client = MlflowClient(uri)
    for ax, layer in zip(panels, LAYERS, strict=True):
        lines = [line for line in ax.get_lines() if line.get_linestyle() == "-"]  # no ceiling
        lines = [line for line in lines if len(line.get_xdata())]  # nor legend handle
        assert len(lines) == len(ids)  # one trajectory per run
        for line, run_id in zip(lines, ids, strict=True):  # from the metric store, not the record
            xt = [m.value for m in sorted(client.get_metric_history(run_id, f"mi_xt/{layer}"),
                                          key=lambda m: m.step)]  # fmt: skip
            ty = [m.value for m in sorted(client.get_metric_history(run_id, f"mi_ty/{layer}"),
                                          key=lambda m: m.step)]  # fmt: skip
            assert list(line.get_xdata()) == pytest.approx(xt)
            assert list(line.get_ydata()) == pytest.approx(ty)


def test_compare_by_experiment_leaves_out_comparisons_and_by_estimator_name(three_runs) -> None:
    from infoflow_track.compare import experiment_runs, load_planes
    from infoflow_track.tracking import Tracker

    uri, ids = three_runs
    tracker = Tracker(uri)
    assert sorted(experiment_runs(tracker, "cmp")) == sorted(ids)
    (primary,), _ = load_planes(tracker, ids[:1], None)
    name = primary.estimator.split(" (")[0]  # digits runs' default: renyi
    assert name != "kde"
    runs, notes = load_planes(tracker, ids[:1], "kde")  # not measured by kde
    assert runs == [] and f"measured by {primary.estimator}" in notes[0]
    assert [r.plane for r in load_planes(tracker, ids[:1], name)[0]] == [primary.plane]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "give run ids, --experiment NAME or --study NAME"),
        (["0" * 32], "no run '" + "0" * 32 + "'"),
        (["--experiment", "nope"], "unknown experiment 'nope'"),
        (["x", "--experiment", "cmp"], "(one of them)"),
        (["--experiment", "cmp", "--out", "fig.svg"], "ending in .png"),
    ],
)
def test_bad_compare_input_exits_2_and_writes_nothing(three_runs, args, message) -> None:
    uri, _ = three_runs
    before = len(compare_runs(uri))
    result = CliRunner().invoke(app, ["compare", *args, "--tracking-uri", uri])
    assert result.exit_code == 2 and message in result.stderr, result.output
    assert len(compare_runs(uri)) == before
