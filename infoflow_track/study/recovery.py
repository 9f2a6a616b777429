"""Trials whose worker is gone: found, failed, their MLflow runs closed, their parameters
retried.

RDB storages use Optuna's heartbeat: :func:`optuna.storages.fail_stale_trials` fails every
RUNNING trial whose heartbeat is older than the grace period, and :class:`StaleTrials` (the
storage's stale-trial callback) closes its MLflow run as FAILED and queues it again through
Optuna's :class:`~optuna.storages.RetryHeartbeatStaleTrialCallback`.

The journal file has no heartbeat of Optuna's, so there each trial records its owner (host,
pid and process start time) and a heartbeat every interval in its user attributes, and
:func:`release_abandoned` fails a RUNNING trial whose owner is gone (same host: the process
no longer exists; other host: no heartbeat for the grace period).

On either, a worker starts and claims its trial (Optuna's ``ask``, then :func:`claim`) under
the study lock, so a RUNNING trial without an owner that the lock's next holder sees was
left by a worker that ended in between: it is released at once.

Either way the retry carries Optuna's ``failed_trial``/``retry_history`` system attributes,
and abandoned trials do not count towards the budget. Call :func:`release_abandoned` under
the study lock, so that each trial is released once.
"""

from __future__ import annotations

import copy
import threading
import time
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from typing import Any

from infoflow_track.names import ERROR_TAG, TRIAL_NUMBER_TAG, TRIAL_STATE_TAG
from infoflow_track.owners import owner_alive, owner_id
from infoflow_track.study.storage import (
    ABANDONED_ATTR,
    ERROR_ATTR,
    HEARTBEAT_ATTR,
    OWNER_ATTR,
    PARENT_ATTR,
    RUN_ID_ATTR,
    RUN_URL_ATTR,
    SATURATED_ATTR,
    STALE_AFTER_S,
    StorageRef,
)


def uses_optuna_heartbeat(storage: Any) -> bool:
    """Whether ``storage`` (as :meth:`StorageRef.open` returns it) has Optuna's heartbeat:
    an RDB storage; the journal has none."""
    return getattr(storage, "get_heartbeat_interval", lambda: None)() is not None


def open_with_recovery(ref: StorageRef, tracker: Any | None) -> Any:
    """``ref`` opened so that its stale trials' MLflow runs are closed by ``tracker``."""
    return ref.open(on_stale=StaleTrials(tracker, ref.grace_s))


class StaleTrials:
    """Optuna's stale-trial callback: close the trial's MLflow run, then retry it."""

    def __init__(self, tracker: Any | None, grace_s: float) -> None:
        self.tracker, self.grace_s = tracker, grace_s
        self.released: list[int] = []

    def __call__(self, study: Any, trial: Any) -> None:
        owner = trial.user_attrs.get(OWNER_ATTR, "unknown")
        reason = f"no heartbeat from its worker ({owner}) for {self.grace_s} s"
        close_run(self.tracker, run_of(study, self.tracker, trial), reason)
        retry(study, trial)
        self.released.append(trial.number)


#: Trial attributes of one attempt, which its retry does not inherit.
ATTEMPT_ATTRS = (OWNER_ATTR, HEARTBEAT_ATTR, ABANDONED_ATTR, RUN_ID_ATTR, RUN_URL_ATTR,
                 ERROR_ATTR, SATURATED_ATTR)  # fmt: skip


def retry(study: Any, trial: Any) -> None:
    """Queue the failed ``trial``'s parameters again with Optuna's retry callback (which
    records ``failed_trial`` and ``retry_history``), without the attempt's attributes."""
    import optuna
    from optuna.storages import RetryHeartbeatStaleTrialCallback

    carried = copy.deepcopy(trial)
    carried.user_attrs = {k: v for k, v in trial.user_attrs.items() if k not in ATTEMPT_ATTRS}
    with warnings.catch_warnings():  # experimental since Optuna 2.8, stable in use
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        RetryHeartbeatStaleTrialCallback()(study, carried)


def claim(storage: Any, trial_id: int) -> None:
    """Mark the trial as owned by this process, after a first heartbeat (so that an owned
    trial always has one)."""
    beat(storage, trial_id)
    storage.set_trial_user_attr(trial_id, OWNER_ATTR, owner_id())


def beat(storage: Any, trial_id: int) -> None:
    """One heartbeat of the trial: Optuna's on an RDB storage, a user attribute on a journal."""
    if uses_optuna_heartbeat(storage):
        storage.record_heartbeat(trial_id)
    else:
        storage.set_trial_user_attr(trial_id, HEARTBEAT_ATTR, time.time())


@contextmanager
def heartbeat(storage: Any, trial_id: int, interval: float) -> Iterator[None]:
    """A heartbeat of the trial every ``interval`` seconds while the block runs."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(interval):
            with suppress(Exception):  # a storage hiccup must not kill the trial
                beat(storage, trial_id)

    thread = threading.Thread(target=loop, name="infoflow-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def abandoned_reason(
    trial: Any, now: float, grace_s: float = STALE_AFTER_S, optuna_heartbeat: bool = False
) -> str | None:
    """Why a RUNNING trial is abandoned by its owner, or None if it may still be running
    (call under the study lock).

    A trial never claimed was left by a worker that ended between Optuna's ``ask`` and
    :func:`claim`, which it holds the lock across. With Optuna's heartbeat, that is the only
    case judged here (a claimed trial's heartbeat is Optuna's to judge)."""
    owner = trial.user_attrs.get(OWNER_ATTR)
    if owner is None:
        return "never claimed: its worker ended between starting and claiming it"
    if optuna_heartbeat:
        return None
    alive = owner_alive(owner)
    if alive is False:
        return f"its worker process ({owner}) ended without finishing it"
    if alive is None:
        last = trial.user_attrs.get(HEARTBEAT_ATTR)  # claim beats first
        last = float(last) if last is not None else trial.datetime_start.timestamp()
        if now - last > grace_s:
            return f"no heartbeat from its worker ({owner}) for {now - last:.0f} s"
    return None


def release(study: Any, storage: Any, trial: Any, reason: str, tracker: Any | None) -> bool:
    """Fail a RUNNING trial (abandoned, or interrupted here), close its MLflow run and queue
    its parameters again. Returns False if the trial had finished meanwhile (nothing is
    changed then)."""
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    run_id = run_of(study, tracker, trial)
    try:  # FrozenTrial._trial_id: Optuna's own retry callbacks address trials so too
        if run_id and RUN_ID_ATTR not in trial.user_attrs:  # killed before it recorded its
            storage.set_trial_user_attr(trial._trial_id, RUN_ID_ATTR, run_id)  # run: link it
        storage.set_trial_user_attr(trial._trial_id, ABANDONED_ATTR, reason)
        storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
    except UpdateFinishedTrialError:
        return False
    close_run(tracker, run_id, reason)
    retry(study, storage.get_trial(trial._trial_id))
    return True


def run_of(study: Any, tracker: Any | None, trial: Any) -> str | None:
    """The trial's MLflow run id: recorded on the trial, else found by its tags (a worker
    killed before it recorded it), else None (none started, or no tracker to ask)."""
    if RUN_ID_ATTR in trial.user_attrs or tracker is None:
        return trial.user_attrs.get(RUN_ID_ATTR)
    return trial_run_id(study, tracker, trial.number)


def close_run(tracker: Any | None, run_id: str | None, reason: str) -> None:
    """Tag the MLflow run of an abandoned trial FAIL with ``reason`` and end it FAILED."""
    if tracker is None or not run_id:  # no tracker, or killed before it started its run
        return
    run = tracker.run(run_id)
    run.set_tags({TRIAL_STATE_TAG: "FAIL", ERROR_TAG: f"abandoned: {reason}"})
    if run.status == "RUNNING":
        run.end("FAILED")


def trial_run_id(study: Any, tracker: Any, number: int) -> str | None:
    """The MLflow run of trial ``number``, found by its tags (parent run and trial number)."""
    parent = study.user_attrs.get(PARENT_ATTR)
    experiment = tracker.experiment_of(parent)
    if experiment is None:
        return None
    found = tracker.find_runs(
        experiment, {"mlflow.parentRunId": parent, TRIAL_NUMBER_TAG: str(number)}
    )
    return found[-1] if found else None


def release_abandoned(
    study: Any, storage: Any, tracker: Any | None, grace_s: float = STALE_AFTER_S
) -> list[int]:
    """Release every abandoned RUNNING trial (call under the study lock); their numbers."""
    import optuna
    from optuna.trial import TrialState

    now = time.time()
    released = []
    optuna_heartbeat = uses_optuna_heartbeat(storage)
    if optuna_heartbeat:
        callback = storage.get_heartbeat_stale_trial_callback()
        assert isinstance(callback, StaleTrials), "open the storage with open_with_recovery"
        before = len(callback.released)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
        released = callback.released[before:]
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        reason = abandoned_reason(trial, now, grace_s, optuna_heartbeat)
        if reason is not None and release(study, storage, trial, reason, tracker):
            released.append(trial.number)
    return released


def retried_numbers(trials: Iterable[Any]) -> set[int]:
    """Numbers of the trials that were queued again (Optuna's ``retry_history``): abandoned
    trials, which do not count towards the budget."""
    return {n for t in trials for n in t.system_attrs.get("retry_history", ())}
