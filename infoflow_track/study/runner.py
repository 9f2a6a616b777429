"""Running a study: check it, open it once (storage, study, parent run), then N workers.

:func:`check_runnable` plans one run of the spec (data, device, model, objective metrics)
before anything is written. :func:`open_study` creates or continues the Optuna study under
the study lock, checks that a continued study has the same spec, and creates (or reopens) its
MLflow parent run. :func:`run_study` then runs workers, in this process or in N spawned ones,
each taking trials until the study holds ``n_trials`` finished trials: the count and the
``ask`` happen under the lock, so the budget is met exactly, across restarts too.
"""

from __future__ import annotations

import functools
import json
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import threading
import time
import uuid
import warnings
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, replace
from typing import Any

from infoflow_track.errors import UserError, choices_text
from infoflow_track.estimators import option_params
from infoflow_track.figures import draw_logged_figures
from infoflow_track.hparams import parse_config
from infoflow_track.interrupt import StopRequest
from infoflow_track.names import TRIAL_STATE_TAG
from infoflow_track.registry import get_entry
from infoflow_track.study.algorithms import make_pruner, make_sampler
from infoflow_track.study.locks import locked
from infoflow_track.study.recovery import (
    claim,
    open_with_recovery,
    release,
    release_abandoned,
    retried_numbers,
)
from infoflow_track.study.report import BEST_SHOWN
from infoflow_track.study.spec import StudySpec, joinable, joined_spec
from infoflow_track.study.storage import (
    IDENTITY_ATTR,
    JOIN_ATTR,
    PARENT_ATTR,
    PARENT_KEY_ATTR,
    RUN_ID_ATTR,
    StorageRef,
    objectives_of,
)
from infoflow_track.study.trial import TrialOutcome, run_trial
from infoflow_track.tracking import Tracker, error_line, is_disk_full

MAX_WORKERS = 64

Echo = Callable[[str], None]


@dataclass(frozen=True)
class Tally:
    """Trials of a study by state; abandoned trials (re-queued) are not counted as failed."""

    complete: int = 0
    pruned: int = 0
    failed: int = 0
    running: int = 0
    waiting: int = 0
    abandoned: int = 0

    @property
    def finished(self) -> int:
        """The trials that count towards the budget."""
        return self.complete + self.pruned + self.failed


def tally(study: Any) -> Tally:
    from optuna.trial import TrialState

    counts = dict.fromkeys(("complete", "pruned", "failed", "running", "waiting", "abandoned"), 0)
    names = {TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned",
             TrialState.RUNNING: "running", TrialState.WAITING: "waiting"}  # fmt: skip
    trials = study.get_trials(deepcopy=False)
    retried = retried_numbers(trials)
    for trial in trials:
        if trial.state == TrialState.FAIL:
            counts["abandoned" if trial.number in retried else "failed"] += 1
        else:
            counts[names[trial.state]] += 1
    return Tally(**counts)


@dataclass(frozen=True)
class StudyJob:
    """What every worker needs (picklable, for spawned processes)."""

    spec: StudySpec
    storage: StorageRef
    tracking_uri: str
    parent_run_id: str
    deadline: float | None  # time.time() after which no trial starts
    seed_offset: int  # shifts a seeded sampler per invocation; the worker index is added


def check_runnable(spec: StudySpec) -> None:
    """Build the sampler and pruner and plan one run of the spec (fixed values, each searched
    one at its first value): options, data, device and model must work and every objective
    metric must be one the run logs."""
    from infoflow_track.experiment import plan_run

    make_sampler(spec.sampler, spec.grid(), 0)  # option values, before anything is written
    plan = plan_run(spec.plugin, {**spec.fixed, **first_point(spec)}, spec.settings,
                    spec.estimator_options)  # fmt: skip
    make_pruner(spec.pruner, plan.total_epochs)
    logged = plan.metric_names()
    for objective in spec.objectives:
        if objective.metric not in logged:
            raise UserError(
                f"objective {objective.metric!r} in {spec.path.name} is not logged by "
                f"{spec.plugin}: valid are {choices_text(logged)}"
            )


def recorded_spec(ref: StorageRef, name: str, *, n_trials: int | None,
                  timeout: float | None) -> StudySpec | None:  # fmt: skip
    """The spec of study ``name`` as recorded in ``ref`` by the host that opened it, or
    None if ``ref`` holds no such study (a server storage must answer: :meth:`check`)."""
    import optuna

    if not ref.exists():
        return None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.load_study(study_name=name, storage=ref.open())
    except KeyError:
        return None
    recorded = study.user_attrs.get(JOIN_ATTR)
    if recorded is None:
        return None
    return joined_spec(name, recorded, n_trials=n_trials, timeout=timeout)


def first_point(spec: StudySpec) -> dict[str, Any]:
    """Each searched hyperparameter at its first value (a range's low end)."""
    return {n: d.choices[0] if d.kind == "categorical" else d.low for n, d in spec.search.items()}


def epoch_steps(spec: StudySpec) -> int:
    """The epoch ends a trial reports (a multi-phase plugin's phases together), at the
    search's first point: the pruner's resource budget."""
    cls = get_entry(spec.plugin).load()
    config = parse_config(cls.Config, {**spec.fixed, **first_point(spec)})
    return cls().total_epochs(config, spec.settings.epochs)


@dataclass(frozen=True)
class OpenStudy:
    """A study ready for workers: the Optuna study, its storage and its MLflow parent run."""

    study: Any
    storage: Any
    parent_run_id: str


def open_study(spec: StudySpec, ref: StorageRef, tracker: Tracker) -> OpenStudy:
    """The study created or continued, its parent run RUNNING, its abandoned trials
    released. A continued study must have the same spec."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with locked(ref, spec.name):
        storage = open_with_recovery(ref, tracker)
        identity = json.loads(json.dumps(spec.identity()))
        try:
            study = optuna.load_study(study_name=spec.name, storage=storage)
        except KeyError:
            study = None
        if study is not None and not _half_made(study):
            _check_same_study(study, spec, identity, ref)
        # may refuse a deleted experiment
        experiment = tracker.experiment_id(spec.name, study_description(spec))
        if study is None:
            study = optuna.create_study(
                study_name=spec.name, storage=storage, directions=spec.directions
            )
        if study.metric_names is None:  # optuna-dashboard labels the objectives so
            with warnings.catch_warnings():  # experimental since Optuna 3.2, stable in use
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                study.set_metric_names([o.label for o in spec.objectives])
        if IDENTITY_ATTR not in study.user_attrs:
            study.set_user_attr(IDENTITY_ATTR, identity)
        study.set_user_attr(JOIN_ATTR, joinable(spec))  # the latest opener's budget
        parent = _parent_run(study, spec, ref, tracker, experiment)
        first = spec.objectives[0]
        tracker.save_runs_view(
            experiment, metrics=list(dict.fromkeys(o.metric for o in spec.objectives)),
            params=list(spec.search), tags=[TRIAL_STATE_TAG], order_by=first.metric,
            ascending=first.direction == "minimize", expanded=[parent],
        )  # fmt: skip
        release_abandoned(study, storage, tracker, ref.grace_s)
    return OpenStudy(study, storage, parent)


def study_description(spec: StudySpec) -> str:
    """The study's experiment description (Markdown): what is searched, for what, and how
    to find the trials, then the spec's own ``description``."""
    objectives = ", ".join(f"`{o.label}` ({o.direction})" for o in spec.objectives)
    searched = ", ".join(f"`{name}`" for name in spec.search) or "nothing (fixed settings)"
    lines = [
        f"Optuna study **{spec.name}**: plugin `{spec.plugin}`, {spec.n_trials} trials over "
        f"{searched}; objective {objectives}.",
        f"The parent run `{spec.name}` holds the spec; its child runs are the trials, named by "
        "their parameters and tagged `infoflow.trial_number` and `infoflow.trial_state`.",
    ]
    return "\n\n".join([*lines, spec.description] if spec.description else lines)


def _half_made(study: Any) -> bool:
    """A study whose creator was killed before it recorded its spec: no identity, no trials."""
    return IDENTITY_ATTR not in study.user_attrs and not study.get_trials(deepcopy=False)


def _check_same_study(study: Any, spec: StudySpec, identity: dict, ref: StorageRef) -> None:
    recorded = study.user_attrs.get(IDENTITY_ATTR)
    if recorded is None:
        raise UserError(
            f"study '{spec.name}' in {ref.shown} was not made by infoflow: choose another name"
        )
    if recorded != identity:
        differ = sorted(k for k in identity if recorded.get(k) != identity.get(k))
        raise UserError(
            f"study '{spec.name}' in {ref.shown} was run with a different "
            f"{' and '.join(differ)}: continue it with the spec it had, or give a new --name"
        )


def _parent_run(study: Any, spec: StudySpec, ref: StorageRef, tracker: Tracker, exp: str) -> str:
    """The study's MLflow parent run, created on first use and RUNNING while workers work."""
    tags = {"infoflow.study": spec.name, "infoflow.plugin": spec.plugin,
            "infoflow.sampler": spec.sampler.describe(), "infoflow.pruner": spec.pruner.describe(),
            "infoflow.storage": ref.shown, "infoflow.n_trials": str(spec.n_trials),
            "infoflow.objectives": ", ".join(f"{o.label} ({o.direction})"
                                             for o in spec.objectives),
            "mlflow.note.content": spec.description}  # fmt: skip
    run_id = study.user_attrs.get(PARENT_ATTR)
    key = study.user_attrs.get(PARENT_KEY_ATTR)
    if tracker.experiment_of(run_id) != exp and key:  # killed before it recorded its parent
        run_id = next(iter(tracker.find_runs(exp, {PARENT_KEY_ATTR: key})), None)
    if tracker.experiment_of(run_id) == exp:  # else not in this tracking store: start one here
        run = tracker.run(run_id)
        run.reopen()
        run.set_tags(tags)
        run.log_text(spec.text, "study/spec.toml")
        study.set_user_attr(PARENT_ATTR, run_id)
        return run_id
    key = uuid.uuid4().hex  # on the study first, so that a new parent can always be found
    study.set_user_attr(PARENT_KEY_ATTR, key)
    run = tracker.start_run(spec.name, run_name=spec.name, tags={**tags, PARENT_KEY_ATTR: key})
    identity = spec.identity()
    fixed = {f"fixed.{k}": v for k, v in identity["fixed"].items()}
    search = {f"search.{k}": json.dumps(v) for k, v in identity["search"].items()}
    options = option_params(identity["estimators"])
    run.log_params({**spec.settings.as_params(), **options, **fixed, **search})
    run.log_text(spec.text, "study/spec.toml")
    run.log_dict(identity, "study/spec.json")
    study.set_user_attr(PARENT_ATTR, run.run_id)
    return run.run_id


def run_study(
    spec: StudySpec,
    ref: StorageRef,
    tracker: Tracker,
    opened: OpenStudy,
    *,
    workers: int = 1,
    echo: Echo = print,
) -> Tally:
    """Run workers until the study holds ``spec.n_trials`` finished trials (or the timeout
    passes); the parent run ends FINISHED, or KILLED on Ctrl-C (which propagates)."""
    study, storage, parent_run_id = opened.study, opened.storage, opened.parent_run_id
    deadline = None if spec.timeout is None else time.time() + spec.timeout
    offset = len(study.get_trials(deepcopy=False)) * MAX_WORKERS
    job = StudyJob(spec, ref, tracker.uri, parent_run_id, deadline, offset)
    status = "KILLED"
    try:
        if workers == 1:
            work(job, 0, echo)
        else:
            _run_processes(job, workers, echo)
        if spec.figures == "best":
            draw_best_figures(study, tracker)
        status = "FINISHED"
    finally:
        with locked(ref, spec.name):  # trials of workers that died
            released = release_abandoned(study, storage, tracker, ref.grace_s)
        if released:
            echo(f"released trials {released} of workers that ended without finishing them")
        tracker.run(parent_run_id).end(status)
    return tally(study)


def draw_best_figures(study: Any, tracker: Tracker) -> None:
    """Draw the figures of the study's best complete trials (the Pareto front, at most
    BEST_SHOWN, for several objectives) on their runs, where they are not drawn yet."""
    try:
        best = study.best_trials if len(study.directions) > 1 else [study.best_trial]
    except ValueError:  # no complete trial
        return
    for trial in best[:BEST_SHOWN]:
        run_id = trial.user_attrs.get(RUN_ID_ATTR)
        if tracker.experiment_of(run_id) is not None:
            draw_logged_figures(tracker, run_id)


class TrialProgress:
    """Epoch listener saying how far a running trial is, ``  trial 4: epoch 12/50, 31 s,
    about 98 s left``, at most every ``every_s`` seconds (a trial shorter than that says
    nothing until its line in the study's table)."""

    def __init__(self, echo: Echo, number: int, epochs: int, every_s: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        self.echo, self.number, self.epochs, self.every_s = echo, number, epochs, every_s
        self.clock = clock
        self.started = self.shown = clock()

    def __call__(self, step: int, metrics: Any) -> None:
        now = self.clock()
        if now - self.shown < self.every_s or step >= self.epochs:
            return
        self.shown = now
        elapsed = now - self.started
        left = elapsed / step * (self.epochs - step)
        self.echo(f"  trial {self.number}: epoch {step}/{self.epochs}, {elapsed:.0f} s, "
                  f"about {left:.0f} s left")  # fmt: skip


def work(
    job: StudyJob, worker: int, echo: Echo, device: str | None = None, event: Any = None
) -> None:
    """Take trials until the budget is met or the deadline passes (one worker).

    While the trials still running elsewhere would meet the budget, the worker waits: one of
    them may be abandoned (its host cut off) and queued again for it to run."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    spec, ref = job.spec, job.storage
    tracker = Tracker(job.tracking_uri)
    storage = open_with_recovery(ref, tracker)
    study = optuna.load_study(
        study_name=spec.name, storage=storage,
        sampler=make_sampler(spec.sampler, spec.grid(), job.seed_offset + worker),
        pruner=make_pruner(spec.pruner, epoch_steps(spec)),
    )  # fmt: skip
    settings = spec.settings if device is None else replace(spec.settings, device=device)
    stop = StopRequest(event)
    epochs = epoch_steps(spec)
    with stop.installed():
        while job.deadline is None or time.time() < job.deadline:
            trial = None
            try:
                stop.check()
                trial = next_trial(study, storage, tracker, ref, spec.name, spec.n_trials)
                if trial is None:
                    return
                if trial is WAIT:
                    stop.wait(min(WAIT_S, ref.heartbeat_s))
                    trial = None
                    continue
                progress = TrialProgress(echo, trial.number, epochs)
                outcome = run_trial(study, trial, spec, storage=storage, tracker=tracker,
                                    parent_run_id=job.parent_run_id, settings=settings,
                                    listeners=[stop.check, progress],
                                    heartbeat_s=ref.heartbeat_s)  # fmt: skip
            except KeyboardInterrupt:
                if threading.current_thread() is threading.main_thread():
                    signal.signal(signal.SIGINT, signal.SIG_IGN)  # let the clean-up finish
                if trial is not None:
                    frozen = storage.get_trial(trial._trial_id)
                    release(study, storage, frozen, "interrupted (Ctrl-C)", tracker)
                raise
            except Exception as exc:
                if trial is not None and is_disk_full(exc):
                    with suppress(Exception):  # the disk may still be full: then the next
                        frozen = storage.get_trial(trial._trial_id)  # command releases it
                        release(study, storage, frozen, "disk full", tracker)
                raise
            echo(progress_line(outcome, study, spec))
            for warning in outcome.warnings:
                echo(f"  warning (trial {outcome.number}): {warning}")


#: What :func:`next_trial` returns while other workers' running trials fill the budget.
WAIT = object()
WAIT_S = 2.0  # seconds between looks while waiting (at most the heartbeat interval)


def next_trial(study: Any, storage: Any, tracker: Tracker, ref: StorageRef, name: str,
               n_trials: int) -> Any:  # fmt: skip
    """Under the study lock: release abandoned trials, then start and claim the next trial;
    None once ``n_trials`` trials are finished, :data:`WAIT` while running ones fill the
    budget."""
    with locked(ref, name):
        release_abandoned(study, storage, tracker, ref.grace_s)
        counts = tally(study)
        if counts.finished >= n_trials:
            return None
        if counts.finished + counts.running >= n_trials:
            return WAIT
        with warnings.catch_warnings():  # Optuna's heartbeat is meant for optimize(); we
            warnings.simplefilter("ignore")  # beat ourselves (recovery.heartbeat)
            trial = study.ask()
        claim(storage, trial._trial_id)
        return trial


def _run_processes(job: StudyJob, workers: int, echo: Echo) -> None:
    """``workers`` spawned processes, one device each (round-robin over visible GPUs)."""
    context = multiprocessing.get_context("spawn")  # no fork of a process holding torch/CUDA
    stop = context.Event()
    procs = [context.Process(target=_worker_process, args=(job, i, workers, stop),
                             name=f"infoflow-worker-{i}") for i in range(workers)]  # fmt: skip
    for proc in procs:
        proc.start()
    running = {proc.sentinel: (i, proc) for i, proc in enumerate(procs)}
    try:
        while running:  # reap each worker as it ends: a killed one unreaped would seem alive,
            for ended in multiprocessing.connection.wait(list(running)):  # its trial held
                i, proc = running.pop(ended)
                proc.join()
                if proc.exitcode:
                    echo(f"worker {i} ended with status {proc.exitcode}")
    except KeyboardInterrupt:
        stop.set()  # workers stop at their next epoch end (a terminal's Ctrl-C reached them too)
        for _, proc in running.values():
            proc.join()
        raise


def _worker_process(job: StudyJob, worker: int, workers: int, event: Any) -> None:
    import torch

    from infoflow_track.devices import worker_device

    torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))
    try:
        work(job, worker, functools.partial(print, flush=True),
             worker_device(job.spec.settings.device, worker), event)  # fmt: skip
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:
        if not is_disk_full(exc):
            raise
        print(f"worker {worker}: disk full ({error_line(exc)})", file=sys.stderr, flush=True)
        sys.exit(1)


def best_text(study: Any) -> str:
    """The best value so far and its trial, or the Pareto front of a multi-objective study."""
    objectives = objectives_of(study)
    if len(objectives) > 1:
        front = sorted(t.number for t in study.best_trials)
        return f"Pareto front: trials {', '.join(map(str, front))}" if front else "none yet"
    try:
        best = study.best_trial
    except ValueError:
        return "none yet"
    return f"{objectives[0][0]} {best.value:.4f} (trial {best.number})"


def progress_line(outcome: TrialOutcome, study: Any, spec: StudySpec) -> str:
    """One line per finished trial: its result, the study's counts and the best so far."""
    counts = tally(study)
    if outcome.values is not None:
        pairs = zip(spec.objectives, outcome.values, strict=True)
        result = "  ".join(f"{o.label} {v:.4f}" for o, v in pairs)
    else:
        result = outcome.detail[:120]
    return (
        f"trial {outcome.number:>3} {outcome.state:<8} {result}  ({outcome.seconds:.1f} s) | "
        f"{counts.finished}/{spec.n_trials} finished: {counts.complete} complete, "
        f"{counts.pruned} pruned, {counts.failed} failed | best {best_text(study)}"
    )
