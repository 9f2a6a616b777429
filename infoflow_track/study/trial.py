"""One trial: sample, plan, train through the engine as a child run, report, tell Optuna.

The objective is reported every epoch (single objective) so that the study's pruner can stop
the trial; a pruned trial's run ends FINISHED at the epoch it reached. A trial that raises or
diverges is told FAIL with its error on the trial and in its MLflow run; the caller goes on.
The MLflow run carries the trial number and, at the end, its state (COMPLETE, PRUNED, FAIL);
the trial carries the run id as the user attribute ``mlflow_run_id`` and, where the MLflow UI's
address is known, the run's page as ``mlflow_run_url``. The run is named by the trial's number
and parameters, with ``[pruned at epoch N]`` added if the pruner stopped it.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from infoflow_track.engine import EpochListener, StopEarly
from infoflow_track.experiment import execute_run, plan_run, saturated_text
from infoflow_track.hparams import format_value, params_text
from infoflow_track.names import (
    ERROR_TAG,
    RUN_NAME_TAG,
    STUDY_TAG,
    TRIAL_NUMBER_TAG,
    TRIAL_STATE_TAG,
)
from infoflow_track.replicates import bound
from infoflow_track.settings import RunSettings
from infoflow_track.study.recovery import heartbeat
from infoflow_track.study.spec import Objective, StudySpec
from infoflow_track.study.storage import (
    ERROR_ATTR,
    HEARTBEAT_S,
    RUN_ID_ATTR,
    RUN_URL_ATTR,
    SATURATED_ATTR,
)
from infoflow_track.tracking import RunLogger, Tracker, is_disk_full


@dataclass(frozen=True)
class TrialOutcome:
    number: int
    state: str  # COMPLETE | PRUNED | FAIL
    values: list[float] | None
    seconds: float
    detail: str = ""  # the error of a failed trial, why a pruned one stopped
    warnings: tuple[str, ...] = ()  # of its run: saturated layers, unsuited estimator options


class ObjectiveReporter:
    """Epoch listener: reports the objective (its statistic over the replicates) to the
    trial and stops a trial the pruner prunes (single objective only; Optuna prunes on one
    value)."""

    def __init__(self, trial: Any, objective: Objective | None) -> None:
        self.trial = trial
        self.objective = objective

    def __call__(self, step: int, metrics: Mapping[str, float]) -> None:
        o = self.objective
        value = bound(metrics, o.metric, o.statistic) if o else None
        if value is None or not math.isfinite(value):
            return
        self.trial.report(value, step)
        if self.trial.should_prune():
            raise StopEarly(f"pruned at epoch {step}: {o.label} = {value:.4g}")


def run_trial(
    study: Any,
    trial: Any,
    spec: StudySpec,
    *,
    storage: Any,
    tracker: Tracker,
    parent_run_id: str,
    settings: RunSettings | None = None,
    listeners: Sequence[EpochListener] = (),
    heartbeat_s: float = HEARTBEAT_S,
) -> TrialOutcome:
    """Run ``trial`` of ``study`` to its end and tell Optuna; KeyboardInterrupt propagates.

    ``listeners`` hear every epoch after the objective is reported; the trial's heartbeat
    is recorded every ``heartbeat_s`` seconds.
    """
    from optuna.trial import TrialState

    started = time.perf_counter()
    params = {name: dim.suggest(trial) for name, dim in spec.search.items()}
    overrides = {**spec.fixed, **params}
    tags = {STUDY_TAG: spec.name, TRIAL_NUMBER_TAG: str(trial.number),
            TRIAL_STATE_TAG: "RUNNING"}  # fmt: skip
    run_name = trial_run_name(trial.number, params)
    runs: list[RunLogger] = []

    def on_start(run: RunLogger) -> None:
        runs.append(run)
        trial.set_user_attr(RUN_ID_ATTR, run.run_id)
        url = tracker.run_url(run.run_id, tracker.experiment_id(spec.name))
        if url is not None:  # optuna-dashboard shows it beside the trial
            trial.set_user_attr(RUN_URL_ATTR, url)

    single = spec.objectives[0] if len(spec.objectives) == 1 else None
    try:
        with heartbeat(storage, trial._trial_id, heartbeat_s):  # _trial_id: as Optuna does
            plan = plan_run(spec.plugin, overrides, settings or spec.settings,
                            spec.estimator_options)  # fmt: skip
            result = execute_run(
                plan, tracker, experiment=spec.name, run_name=run_name,
                parent_run_id=parent_run_id, tags=tags, on_start=on_start,
                listeners=[ObjectiveReporter(trial, single), *listeners],
                figures=spec.figures == "all",  # else the best, once all trials are done
            )  # fmt: skip
    except Exception as exc:
        if is_disk_full(exc):  # not the trial's fault: the study stops, the trial is retried
            raise
        error = f"{type(exc).__name__}: {exc}"[:5000]
        if not runs:  # failed before its run existed (e.g. planning): record one anyway
            runs.append(_failed_run(tracker, spec, run_name, parent_run_id, tags, overrides, error))
        return _finish(study, trial, runs[0], TrialState.FAIL, None, error, started)
    trial.set_user_attr(SATURATED_ATTR, saturated_text(result.saturated))
    finish = functools.partial(_finish, study, trial, runs[0], started=started,
                               warnings=result.warnings)  # fmt: skip
    if result.stopped:
        where = result.stopped.split(":", 1)[0]  # "pruned at epoch N"
        runs[0].set_tags({RUN_NAME_TAG: f"{run_name[:220]} [{where[:26]}]"})
        return finish(TrialState.PRUNED, None, result.stopped)
    values = [bound(result.metrics, o.metric, o.statistic) for o in spec.objectives]
    for objective, value in zip(spec.objectives, values, strict=True):
        if value is None:
            logged = ", ".join(sorted(result.metrics))
            error = f"objective {objective.label} was not logged (logged: {logged})"
            return finish(TrialState.FAIL, None, error)
        if not math.isfinite(value):
            return finish(TrialState.FAIL, None, f"objective {objective.label} is {value}")
    return finish(TrialState.COMPLETE, values, "")


def trial_run_name(number: int, params: Mapping[str, Any]) -> str:
    """``trial 3: lr=0.003162, widths=10,7,5``: the trial's number and sampled parameters,
    floats to 4 significant digits (the params hold them in full), at most 250 characters
    (MLflow's limit for a run name)."""
    return f"trial {number}: {params_text(params)}".removesuffix(": ")[:250]


def _finish(study, trial, run, state, values, detail, started, warnings=()) -> TrialOutcome:
    """Tag the run with the trial's final state, then tell Optuna."""
    from optuna.trial import TrialState

    tags = {TRIAL_STATE_TAG: state.name}
    if state == TrialState.FAIL:
        tags[ERROR_TAG] = detail
        trial.set_user_attr(ERROR_ATTR, detail)
    run.set_tags(tags)
    study.tell(trial, values=values, state=state)
    seconds = time.perf_counter() - started
    return TrialOutcome(trial.number, state.name, values, seconds, detail, tuple(warnings))


def _failed_run(tracker, spec, run_name, parent_run_id, tags, overrides, error) -> RunLogger:
    """An MLflow run for a trial that failed before training: its params and error."""
    run = tracker.start_run(spec.name, run_name=run_name, tags=tags, parent_run_id=parent_run_id)
    run.log_params({k: format_value(v) for k, v in overrides.items()})
    run.set_tags({ERROR_TAG: error})
    run.end("FAILED")
    return run
