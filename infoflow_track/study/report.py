"""A study's report: a table of its trials, and figures on its MLflow parent run.

On the parent run: ``report/trials.csv``, ``report/optimization_history.png``,
``report/param_importances.png`` (fANOVA, once two trials are complete),
``report/accuracy_best.png`` (test accuracy per epoch of the best trials) and
``report/information_plane_best.png`` (their layers in one information plane, under the
primary estimator, ceilings dashed); tags ``infoflow.best_trial`` / ``infoflow.best_value``
for a single objective. Trials with layers whose I(X;T) never left its ceiling are named in
the table's ``saturated`` column and listed by :func:`saturation_notes`.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infoflow_track.errors import UserError, choices_text
from infoflow_track.hparams import params_text
from infoflow_track.names import MI_QUANTITIES
from infoflow_track.study.recovery import retried_numbers
from infoflow_track.study.spec import read_spec, resolve_spec_path
from infoflow_track.study.storage import (
    ABANDONED_ATTR,
    ERROR_ATTR,
    PARENT_ATTR,
    RUN_ID_ATTR,
    SATURATED_ATTR,
    StorageRef,
    objectives_of,
)
from infoflow_track.tracking import Tracker

BEST_SHOWN = 5  # trials drawn in the overlay figures


@dataclass(frozen=True)
class TrialRow:
    number: int
    state: str  # COMPLETE, PRUNED, FAIL, FAIL (abandoned), RUNNING, WAITING
    values: list[float] | None
    params: dict[str, Any]
    seconds: float | None
    run_id: str | None
    note: str  # error of a failed trial, why an abandoned one was released
    saturated: str = ""  # layers whose I(X;T) sat at its ceiling, e.g. "h1, h2 (binning)"
    last_epoch: int | None = None  # of a pruned trial: the epoch its value is from

    @property
    def final(self) -> bool:
        """Whether ``values`` are the trial's final objective values (a complete trial), not
        a pruned trial's last report."""
        return self.state == "COMPLETE"


def trial_rows(study: Any) -> list[TrialRow]:
    """Every trial of ``study`` in number order."""
    rows = []
    trials = study.get_trials(deepcopy=False)
    retried = retried_numbers(trials)
    for t in trials:
        abandoned = t.number in retried
        state = t.state.name + (" (abandoned)" if abandoned else "")
        seconds = t.duration.total_seconds() if t.duration is not None else None
        note = (t.user_attrs.get(ABANDONED_ATTR) or "no heartbeat from its worker: retried"
                if abandoned else t.user_attrs.get(ERROR_ATTR, ""))  # fmt: skip
        saturated = t.user_attrs.get(SATURATED_ATTR, "")
        last = max(t.intermediate_values) if t.intermediate_values else None
        rows.append(TrialRow(t.number, state, t.values, dict(t.params), seconds,
                             t.user_attrs.get(RUN_ID_ATTR), note,
                             "" if saturated == "none" else saturated,
                             last if t.state.name == "PRUNED" else None))  # fmt: skip
    return rows


def best_numbers(study: Any) -> list[int]:
    """The best complete trials: the top :data:`BEST_SHOWN` by value, or the Pareto front."""
    from optuna.trial import TrialState

    if len(study.directions) > 1:
        return sorted(t.number for t in study.best_trials)[:BEST_SHOWN]
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    reverse = study.direction.name == "MAXIMIZE"
    ranked = sorted(complete, key=lambda t: t.value, reverse=reverse)
    return [t.number for t in ranked[:BEST_SHOWN]]


def rows_csv(rows: list[TrialRow], objectives: list[tuple[str, str]]) -> str:
    params = sorted({k for row in rows for k in row.params})
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["trial", "state", *(m for m, _ in objectives), "pruned_at_epoch", *params,
                     "seconds", "saturated", "mlflow_run_id", "note"])  # fmt: skip
    for row in rows:
        values = row.values or [None] * len(objectives)
        writer.writerow([row.number, row.state, *values, row.last_epoch,
                         *(row.params.get(p) for p in params), row.seconds, row.saturated,
                         row.run_id, row.note])  # fmt: skip
    return out.getvalue()


def publish_report(name: str, study: Any, tracker: Tracker, parent_run_id: str) -> list[str]:
    """Log the table and figures on the parent run; returns notes on what was left out."""
    from optuna.trial import TrialState

    from infoflow_track import plots

    objectives = objectives_of(study)
    rows = trial_rows(study)
    run = tracker.run(parent_run_id)
    run.log_text(rows_csv(rows, objectives), "report/trials.csv")
    notes = []
    complete = [r for r in rows if r.state == TrialState.COMPLETE.name]
    history = plots.optimization_history(
        [r.number for r in complete], [r.values for r in complete], objectives,
        title=f"{name}: optimisation history",
    )  # fmt: skip
    run.log_figure(history, "report/optimization_history.png")
    importances = _importances(study, objectives)
    if importances:
        run.log_figure(plots.param_importances(importances), "report/param_importances.png")
    else:
        notes.append("parameter importances need two complete trials that differ")
    best = best_numbers(study)
    by_number = {r.number: r for r in rows}
    histories = {n: _histories(tracker, by_number[n].run_id) for n in best}
    labels = {
        n: f"trial {n}: {params_text(by_number[n].params)}".removesuffix(": ") for n in best
    }  # the trials' run names
    accuracy = {labels[n]: h["acc/test"] for n, h in histories.items() if "acc/test" in h}
    run.log_figure(
        plots.curves(accuracy, ylabel="test accuracy", title=f"{name}: best trials"),
        "report/accuracy_best.png",
    )
    planes = {labels[n]: _plane(h) for n, h in histories.items()}
    run.log_figure(
        plots.information_planes({k: v for k, v in planes.items() if v["mi_xt"]},
                                 title=f"{name}: information plane of the best trials"),
        "report/information_plane_best.png",
    )  # fmt: skip
    notes += saturation_notes(rows)
    if len(objectives) == 1 and best:
        run.set_tags({"infoflow.best_trial": best[0],
                      "infoflow.best_value": by_number[best[0]].values[0]})  # fmt: skip
    return notes


def saturation_notes(rows: list[TrialRow]) -> list[str]:
    """One line per trial with layers whose I(X;T) stayed at its ceiling at every epoch."""
    return [f"trial {r.number}: I(X;T) at its ceiling at every epoch for {r.saturated}"
            for r in rows if r.saturated]  # fmt: skip


def _importances(study: Any, objectives: list[tuple[str, str]]) -> dict[str, dict[str, float]]:
    """fANOVA importances per objective, empty if Optuna cannot compute them yet."""
    import optuna

    out = {}
    for k, (metric, _) in enumerate(objectives):
        try:
            out[metric] = optuna.importance.get_param_importances(
                study,
                evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0),
                target=lambda t, k=k: t.values[k],
            )
        except (RuntimeError, ValueError, ZeroDivisionError):
            return {}
    return out if all(out.values()) else {}


def _histories(tracker: Tracker, run_id: str | None) -> dict[str, tuple[list[int], list[float]]]:
    """(epochs, values) of accuracy and the primary estimator's metrics of one run."""
    if run_id is None:
        return {}
    prefixes = tuple(f"{q}/" for q in MI_QUANTITIES)
    return tracker.histories(run_id, lambda k: k == "acc/test" or k.startswith(prefixes))


def _plane(histories: dict[str, tuple[list[int], list[float]]]) -> dict[str, dict]:
    """The primary estimator's :data:`~infoflow_track.plots.Plane` of one run's histories."""
    plane: dict[str, dict] = {q: {} for q in MI_QUANTITIES}
    for key, (_, values) in histories.items():
        quantity, _, layer = key.partition("/")
        if quantity in plane:
            plane[quantity][layer] = values
    complete = [layer for layer in plane["mi_xt"] if layer in plane["mi_ty"]]
    return {q: {layer: v for layer, v in series.items() if layer in complete}
            for q, series in plane.items()}  # fmt: skip


def study_name_of(target: str) -> str:
    """A study name, or the ``name`` in a spec file (default: the file's stem)."""
    if not target.endswith(".toml"):
        return target
    path = resolve_spec_path(target, Path("studies"))
    raw, _ = read_spec(path)
    return str(raw.get("name", path.stem))


def load_for_report(name: str, ref: StorageRef, tracker_uri: str) -> tuple[Any, Tracker, str]:
    """(study, tracker, parent run id) of an existing study; UserError if any is missing."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if not ref.exists():
        raise UserError(f"no study storage at {ref.shown}: run `infoflow study` first")
    ref.check()
    storage = ref.open()
    try:
        study = optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        known = optuna.get_all_study_names(storage)
        raise UserError(
            f"unknown study {name!r} in {ref.shown}: studies there are {choices_text(known)}"
        ) from None
    parent = study.user_attrs.get(PARENT_ATTR)
    tracker = Tracker(tracker_uri, create=False)
    if tracker.experiment_of(parent) is None:
        raise UserError(
            f"the parent run of study {name!r} is not in {tracker.shown}: pass the --tracking-uri "
            "the study used"
        )
    return study, tracker, parent


def table_data(study: Any, tracker: Tracker | None = None) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the terminal table: trial, state, objectives (a pruned trial's
    last report as ``(value @ epoch N)``, not as a final value), params, seconds and the
    trial's run (its UI URL where ``tracker`` knows the UI's address, else its id)."""
    objectives = objectives_of(study)
    rows = trial_rows(study)
    params = sorted({k for row in rows for k in row.params})
    saturated = any(row.saturated for row in rows)
    header = ["trial", "state", *(m for m, _ in objectives), *params, "seconds",
              *["saturated"] * saturated, "run"]  # fmt: skip
    first = next((row.run_id for row in rows if row.run_id), None)
    experiment = tracker.experiment_of(first) if tracker and first else None  # all trials'
    body = []
    for row in rows:
        values = [_value_text(v, row) for v in row.values] if row.values else [""] * len(
            objectives)  # fmt: skip
        shown = [_short(row.params.get(p)) for p in params]
        seconds = "" if row.seconds is None else f"{row.seconds:.1f}"
        run = "" if row.run_id is None else row.run_id
        if tracker is not None and row.run_id is not None:
            run = tracker.run_url(row.run_id, experiment) or run
        body.append([str(row.number), row.state, *values, *shown, seconds,
                     *[row.saturated] * saturated, run])  # fmt: skip
    return header, body


def _value_text(value: float, row: TrialRow) -> str:
    if row.final or value is None:
        return "" if value is None else f"{value:.4f}"
    return f"({value:.4f} @ epoch {row.last_epoch})" if row.last_epoch is not None else ""


def _short(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return json.dumps(value) if not isinstance(value, str) else value
