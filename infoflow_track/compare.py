"""Information planes of many runs in one figure: ``infoflow compare``.

Runs are chosen by id, by experiment (its finished runs, study parents left out) or by study
(its complete trials, best first). Each run's series come from the record its probe logged,
``probe/planes.json``; the figure (:func:`~infoflow_track.plots.compared_planes`: a panel per
layer, a colour per run) is logged where the MLflow UI shows it: on a study's parent run, else
on a run of its own in the runs' experiment, named ``compare: N runs`` and listing them.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infoflow_track.errors import UserError
from infoflow_track.figures import PLANES_ARTIFACT, _floats
from infoflow_track.tracking import Tracker

COMPARE_FIGURE = "compare/information_planes.png"
#: Tag on a run made to hold a comparison: the compared run ids, comma-separated.
COMPARED_TAG = "infoflow.compared_runs"
#: Runs drawn at most (distinct colours stay readable).
MOST_RUNS = 10


@dataclass(frozen=True)
class ComparedRun:
    run_id: str
    label: str  # the run's name
    estimator: str  # whose series these are
    plane: dict[str, dict[str, list[float]]]  # see plots.Plane


def load_planes(tracker: Tracker, run_ids: list[str], estimator: str | None) -> tuple[
        list[ComparedRun], list[str]]:  # fmt: skip
    """The primary (or ``estimator``'s) series of each run that logged them, and one note per
    run left out (no record: it failed before its end, or ran no such estimator)."""
    runs, notes = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for run_id in run_ids:
            info = tracker.client.get_run(run_id).info
            names = {a.path for a in tracker.client.list_artifacts(run_id, "probe")}
            if PLANES_ARTIFACT not in names:
                notes.append(f"{info.run_name} ({run_id}): no {PLANES_ARTIFACT} (not finished)")
                continue
            path = tracker.client.download_artifacts(run_id, PLANES_ARTIFACT, f"{tmp}/{run_id}")
            record = json.loads(Path(path).read_text())
            described = record["estimators"]
            index = 0 if estimator is None else _index_of(estimator, described)
            if index is None:
                notes.append(f"{info.run_name} ({run_id}): measured by {', '.join(described)}")
                continue
            plane = _floats(record["planes"][index])
            runs.append(ComparedRun(run_id, info.run_name, described[index], plane))
    return runs, notes


def _index_of(estimator: str, described: list[str]) -> int | None:
    """Position of ``estimator`` among a record's estimators, described as ``name (...)``."""
    for i, text in enumerate(described):
        if text == estimator or text.startswith(f"{estimator} ("):
            return i
    return None


def experiment_runs(tracker: Tracker, name: str) -> list[str]:
    """Ids of the experiment's finished runs, newest first, study parent runs left out."""
    found = tracker.client.get_experiment_by_name(name)
    if found is None:
        raise UserError(f"unknown experiment {name!r} in {tracker.shown}")
    runs = tracker.client.search_runs([found.experiment_id],
                                      filter_string="attributes.status = 'FINISHED'",
                                      order_by=["attributes.start_time DESC"])  # fmt: skip
    skipped = ("infoflow.n_trials", COMPARED_TAG)  # a study's parent run, a comparison
    return [r.info.run_id for r in runs if not any(t in r.data.tags for t in skipped)]


def check_runs(tracker: Tracker, run_ids: list[str]) -> None:
    """UserError naming the first id that is no run of this store."""
    for run_id in run_ids:
        if tracker.experiment_of(run_id) is None:
            raise UserError(f"no run {run_id!r} in {tracker.shown}")


def draw(runs: list[ComparedRun], title: str) -> Any:
    from infoflow_track.plots import compared_planes

    return compared_planes({_label(r): r.plane for r in runs}, title=title)


def _label(run: ComparedRun) -> str:
    return run.label if len(run.label) <= 60 else run.label[:57] + "..."


def log_comparison(tracker: Tracker, runs: list[ComparedRun], figure: Any,
                   parent_run_id: str | None) -> str:  # fmt: skip
    """Log ``figure`` on the study's parent run, or on a new run in the first run's
    experiment that lists the compared runs; the id of the run it is on."""
    if parent_run_id is not None:
        tracker.run(parent_run_id).log_figure(figure, COMPARE_FIGURE)
        return parent_run_id
    experiment = tracker.client.get_run(runs[0].run_id).info.experiment_id
    name = tracker.client.get_experiment(experiment).name
    run = tracker.start_run(name, run_name=f"compare: {len(runs)} runs",
                            tags={COMPARED_TAG: ",".join(r.run_id for r in runs)})  # fmt: skip
    try:
        run.log_text("\n".join(f"{r.run_id}\t{r.label}" for r in runs), "compare/runs.tsv")
        run.log_figure(figure, COMPARE_FIGURE)
    except BaseException:
        run.end("FAILED")
        raise
    run.end("FINISHED")
    return run.run_id
