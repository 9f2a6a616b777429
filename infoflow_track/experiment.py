"""One run, end to end: validate everything first, then open the store, train and record.

:func:`plan_run` resolves the plugin, its config, the device and the data, and builds the
model; any bad input raises :class:`~infoflow_track.errors.UserError` before a store is
touched. :func:`execute_run` creates the MLflow run (params, tags), trains through the
engine with the layer probe (MI and CKA every epoch, figures at the end) and closes the run
as FINISHED, FAILED or KILLED.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import platform
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from infoflow_track import __version__
from infoflow_track.data import Dataset, load_dataset
from infoflow_track.devices import describe_device, resolve_device
from infoflow_track.engine import (
    DivergedError,
    EpochHook,
    EpochListener,
    EpochValues,
    MetricSink,
    StopEarly,
    TrainResult,
    build_model,
    merge_histories,
    train,
)
from infoflow_track.ensemble import PackedEnsemble, pack
from infoflow_track.envflags import check_flags
from infoflow_track.errors import UserError
from infoflow_track.estimators import EstimatorChoice, resolve_estimators
from infoflow_track.figures import draw_accuracy_figure
from infoflow_track.hparams import parse_config, specs
from infoflow_track.names import (
    CKA_MEASURES,
    DROPPED_TAG,
    EPOCH_METRICS,
    ERROR_TAG,
    ESTIMATORS_TAG,
    SATURATED_TAG,
    STOPPED_TAG,
    WARNINGS_TAG,
    layer_key,
)
from infoflow_track.plugin import Plugin
from infoflow_track.probe import LayerProbe, estimator_keys, probe_activations
from infoflow_track.registry import Entry, PluginError, get_entry
from infoflow_track.replicates import (
    TABLE_ARTIFACT,
    ReplicateTable,
    seeds_of,
    summarise,
)
from infoflow_track.settings import RunSettings, settings_from, split_assignments
from infoflow_track.tracking import RunLogger, Tracker, check_experiment_name, git_state


@dataclass(frozen=True)
class RunPlan:
    """A validated run with its model built: nothing about it can still be a user error."""

    entry: Entry
    plugin: Plugin
    config: Any
    settings: RunSettings
    estimators: EstimatorChoice
    device: torch.device
    data: Dataset
    model: torch.nn.Module

    def label(self) -> str:
        """A run name: the plugin, the hyperparameters that differ from its defaults, the
        data and the seed(s), e.g. ``mlp: widths=10,7,5, activation=tanh · ib12, seed 0``
        (at most 250 characters)."""
        defaults = type(self.config)().as_params()
        changed = [f"{k}={v}" for k, v in self.config.as_params().items() if defaults.get(k) != v]
        s = self.settings
        seeds = f"seed {s.seed}" + (f"..{s.seed + s.replicates - 1}" if s.replicates > 1 else "")
        head = self.entry.name + (": " + ", ".join(changed) if changed else "")
        return f"{head} · {self.data.name}, {seeds}"[:250]

    def params(self) -> dict[str, str]:
        """Every resolved hyperparameter, run setting and estimator option, and the data's
        sizes, as params.

        Hyperparameters cannot collide with these: run-setting names are reserved by the
        contract check, and the ``data.`` and ``mi.`` prefixes are no Python identifiers.
        """
        data = self.data
        return {
            **self.config.as_params(),
            **self.settings.as_params(),
            **self.estimators.params(),
            "dataset": data.name,
            "device": str(self.device),
            "data.n_train": str(data.y_train.shape[0]),
            "data.n_test": str(data.y_test.shape[0]),
            "data.n_probe": str(data.y_probe.shape[0]),
            "data.num_classes": str(data.num_classes),
        }

    def metric_names(self) -> list[str]:
        """Every metric key this run logs each epoch: accuracy, loss and the layer measures."""
        layers = probe_activations(self.model, self.data.x_train[:2])
        mi = [key for i, e in enumerate(self.estimators.estimators) for name in layers
              for key in estimator_keys(e, i == 0, name)]  # fmt: skip
        cka = [layer_key(m, name) for name in layers for m in CKA_MEASURES]
        return [*EPOCH_METRICS, *self.plugin.epoch_metrics, *mi, *cka]

    @property
    def total_epochs(self) -> int:
        """Epoch ends the run reports, over all of the plugin's phases."""
        return self.plugin.total_epochs(self.config, self.settings.epochs)

    def tags(self) -> dict[str, str]:
        """Plugin identity, code version and environment, as MLflow tags."""
        tags = {
            "infoflow.plugin": self.entry.name,
            "infoflow.plugin_package": self.entry.package,
            "infoflow.plugin_version": self.entry.version,
            "infoflow.plugin_class": self.entry.target,
            "infoflow.plugin_api": type(self.plugin).api_version,
            "infoflow.version": __version__,
            "infoflow.device": describe_device(self.device),
            "infoflow.torch": torch.__version__,
            "infoflow.python": platform.python_version(),
            ESTIMATORS_TAG: ",".join(e.name for e in self.estimators.estimators),
        }
        plugin_file = sys.modules[type(self.plugin).__module__].__file__
        state = git_state(Path(plugin_file)) if plugin_file else None
        if state is not None:  # the plugin's source file is tracked by a git repository
            tags["mlflow.source.git.commit"] = state[0]
            tags["infoflow.git_dirty"] = str(state[1]).lower()
        return tags


@dataclass(frozen=True)
class RunResult:
    run_id: str
    metrics: dict[str, float]  # each metric's latest value, as in MLflow's run.data.metrics
    epochs: int  # epochs completed
    stopped: str | None = None  # why training stopped early (a pruner), if it did
    saturated: Mapping[str, list[str]] = field(default_factory=dict)  # {estimator: layers}
    warnings: tuple[str, ...] = ()  # one line each: saturation, unsuited estimator options


def experiment_name(requested: str | None, plan: RunPlan) -> str:
    """The MLflow experiment of a run, checked before any store opens: ``requested``, or the
    plugin's name by default."""
    return check_experiment_name(plan.entry.name if requested is None else requested)


def plan_from(plugin: str, values: Mapping[str, Any]) -> RunPlan:
    """:func:`plan_run` of ``plugin`` from ``{key: value}`` given on the command line: run
    settings, hyperparameters and estimator options ``ESTIMATOR.OPTION`` in one mapping."""
    entry = get_entry(plugin)
    given = split_assignments(values, specs(entry.load().Config), entry.name)
    return plan_run(entry, given.hyperparameters, settings_from(given.settings),
                    given.estimator_options)  # fmt: skip


def plan_run(
    plugin: str | Entry,
    overrides: Mapping[str, Any],
    settings: RunSettings,
    estimator_options: Mapping[str, Mapping[str, Any]] | None = None,
) -> RunPlan:
    """Resolve and validate a run of a plugin (its name, or its entry) with its
    hyperparameter ``overrides``, run settings and estimator options ``{estimator: {option:
    value}}``, and build its model; UserError names any bad input, a malformed boolean
    variable (``$INFOFLOW_DOWNLOAD``) among them, whether or not this run reads it."""
    check_flags()
    entry = plugin if isinstance(plugin, Entry) else get_entry(plugin)
    plugin_cls = entry.load()
    config = parse_config(plugin_cls.Config, overrides)
    estimators = resolve_estimators(settings.mi, estimator_options)
    device = resolve_device(settings.device)
    instance = plugin_cls()
    try:
        data = load_dataset(settings, device)
        model = build_model(instance, config, data, settings.seed)
    except TypeError as exc:
        raise PluginError(
            f"plugin '{entry.name}' ({entry.package}) breaks the model contract: {exc}"
        ) from None
    except (torch.OutOfMemoryError, MemoryError) as exc:
        raise UserError(f"data and model do not fit in memory on {device}: {exc}") from None
    except RuntimeError as exc:  # the CPU allocator's out-of-memory error
        if "can't allocate memory" not in str(exc):
            raise
        raise UserError(f"data and model do not fit in memory on {device}") from None
    return RunPlan(entry, instance, config, settings, estimators, device, data, model)


def execute_run(
    plan: RunPlan,
    tracker: Tracker,
    *,
    experiment: str,
    run_name: str | None = None,
    parent_run_id: str | None = None,
    tags: Mapping[str, str] | None = None,
    on_start: Callable[[RunLogger], None] | None = None,
    hooks: Sequence[EpochHook] = (),
    listeners: Sequence[EpochListener] = (),
    figures: bool = True,
) -> RunResult:
    """Train ``plan`` and record it as one MLflow run in ``experiment`` (see
    :func:`experiment_name`); the run is ended whatever happens.

    ``tags`` are added to the plan's; ``on_start`` gets the run as soon as it exists;
    ``figures`` False leaves out the PNG figures (the metrics and artifacts they are drawn
    from are logged all the same). With ``settings.replicates`` K >= 2 the K seeds train
    packed where the plugin's model allows (see :func:`~infoflow_track.ensemble.pack`), else
    one after another, saying why in the run's warnings. A listener raising
    :class:`~infoflow_track.engine.StopEarly` ends a FINISHED run early.
    """
    run = tracker.start_run(
        experiment,
        run_name=run_name or plan.label(),
        tags={**plan.tags(), **(tags or {})},
        parent_run_id=parent_run_id,
    )
    probe = None
    try:
        if on_start is not None:
            on_start(run)
        run.log_params(plan.params())
        packed = replicate_models(plan)
        if isinstance(packed, str):  # the reason they train one after another
            note = f"replicates train one after another: {packed}"
            result, probe = _train_sequential(plan, sink=run, hooks=hooks, listeners=listeners)
        else:
            note = None
            probe = LayerProbe(packed, plan.data, plan.estimators.estimators, artifacts=run)
            result = train(
                plan.plugin, packed, plan.config, plan.data, plan.settings,
                sink=run, hooks=[probe, *hooks], listeners=listeners,
            )  # fmt: skip
        probe.finish(figures)
        _log_replicates(run, plan, result, figures)
        saturated = probe.saturated()
        warnings = tuple(w for w in (note, *probe.warnings, probe.saturation_warning()) if w)
        run.set_tags(outcome_tags(result.stopped, saturated, warnings, result.dropped))
    except KeyboardInterrupt:
        run.end("KILLED")
        raise
    except BaseException as exc:
        run.set_tags({ERROR_TAG: f"{type(exc).__name__}: {exc}"[:5000]})
        if probe is not None:
            with contextlib.suppress(Exception):  # best effort: figures of the measured epochs
                probe.finish(figures)
        run.end("FAILED")
        raise
    run.end("FINISHED")
    return RunResult(run.run_id, result.metrics, result.steps, result.stopped, saturated,
                     warnings)  # fmt: skip


def replicate_models(plan: RunPlan) -> torch.nn.Module | PackedEnsemble | str:
    """The plan's model alone (one replicate), its K replicates packed (seeds seed + k), or
    why they cannot be packed."""
    k = plan.settings.replicates
    if k == 1:
        return plan.model
    models = [plan.model, *(build_model(plan.plugin, plan.config, plan.data, seed)
                            for seed in seeds_of(plan.settings.seed, k)[1:])]  # fmt: skip
    x, y = plan.data.x_train[:2], plan.data.y_train[:2]
    return pack(plan.plugin, models, plan.config, x, y)


def _train_sequential(
    plan: RunPlan,
    *,
    sink: RunLogger,
    hooks: Sequence[EpochHook],
    listeners: Sequence[EpochListener],
) -> tuple[TrainResult, LayerProbe]:
    """Train the K replicates one after another, then log what packed training would have:
    each epoch's means and spreads, heard by the listeners once all are trained (a pruner's
    stop then ends the record at that epoch). A diverged replicate fails the run, or with
    ``drop_diverged`` counts from the epoch it diverged on no more."""
    settings = plan.settings
    seeds = seeds_of(settings.seed, settings.replicates)
    histories, probes = [], []
    for seed in seeds:
        model = plan.model if seed == settings.seed else build_model(
            plan.plugin, plan.config, plan.data, seed)  # fmt: skip
        probe = LayerProbe(model, plan.data, plan.estimators.estimators)
        alone = dataclasses.replace(settings, seed=seed, replicates=1)
        try:
            histories.append(train(plan.plugin, model, plan.config, plan.data, alone,
                                   hooks=[probe, *hooks]).history)  # fmt: skip
        except DivergedError as exc:
            if not settings.drop_diverged:
                raise DivergedError(f"{exc} (replicate seed {seed})") from None
            histories.append(exc.history)
        probes.append(probe)
    return _replay(merge_histories(histories), seeds, sink, listeners), LayerProbe.merged(
        probes, sink
    )


def _replay(
    history: list[EpochValues],
    seeds: Sequence[int],
    sink: MetricSink,
    listeners: Sequence[EpochListener],
) -> TrainResult:
    """Log the summary of every merged epoch, then let the listeners hear them in order."""
    if not any(history[-1].kept):
        raise DivergedError("every replicate diverged (seeds " + ", ".join(map(str, seeds)) + ")")
    summaries = [(e.step, summarise(e.values, e.kept)) for e in history]
    for step, metrics in summaries:
        sink.log_metrics(metrics, step)
    dropped = {}
    for before, after in itertools.pairwise(history):
        pairs = zip(seeds, before.kept, after.kept, strict=True)
        dropped.update({seed: after.step for seed, was, now in pairs if was and not now})
    stopped = None
    for step, metrics in summaries[1:]:
        try:
            for listener in listeners:
                listener(step, metrics)
        except StopEarly as stop:
            stopped = str(stop)
            break
    last: dict[str, float] = {}
    for _, metrics in summaries:
        last.update(metrics)
    return TrainResult(last, history[-1].step, stopped, history, dropped)


def _log_replicates(run: RunLogger, plan: RunPlan, result: TrainResult, figures: bool) -> None:
    """With K >= 2 replicates: the per-replicate table and, with ``figures``, accuracy
    curves with 95% bands."""
    if plan.settings.replicates < 2:
        return
    table = ReplicateTable(seeds_of(plan.settings.seed, plan.settings.replicates))
    for epoch in result.history:
        table.add(epoch.step, epoch.values, epoch.kept)
    text = table.csv_text()
    run.log_text(text, TABLE_ARTIFACT)
    if figures:
        draw_accuracy_figure(text, run)


def outcome_tags(
    stopped: str | None,
    saturated: Mapping[str, Sequence[str]],
    warnings: Sequence[str],
    dropped: Mapping[int, int] | None = None,
) -> dict[str, str]:
    """Tags of a run's end: why it stopped early, its saturated layers
    (``"h1, h2 (binning); h3 (renyi)"``, or ``"none"``), its warnings and the replicates
    dropped after diverging (``"seed 3 at epoch 7"``)."""
    tags = {SATURATED_TAG: saturated_text(saturated)}
    if dropped:
        tags[DROPPED_TAG] = ", ".join(f"seed {s} at epoch {e}" for s, e in dropped.items())
    if stopped:
        tags[STOPPED_TAG] = stopped
    if warnings:
        tags[WARNINGS_TAG] = "\n".join(warnings)[:5000]
    return tags


def saturated_text(saturated: Mapping[str, Sequence[str]]) -> str:
    """``{"binning": ["h1", "h2"]}`` -> ``"h1, h2 (binning)"``; empty -> ``"none"``."""
    parts = [f"{', '.join(layers)} ({name})" for name, layers in saturated.items()]
    return "; ".join(parts) or "none"
