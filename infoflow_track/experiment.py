"""One run, end to end: validate everything first, then open the store, train and record.

:func:`plan_run` resolves the plugin, its config, the device and the data, and builds the
model; any bad input raises :class:`~infoflow_track.errors.UserError` before a store is
touched. :func:`execute_run` creates the MLflow run (params, tags), trains through the
engine with the layer probe (MI and CKA every epoch, figures at the end) and closes the run
as FINISHED, FAILED or KILLED.
"""

from __future__ import annotations

import contextlib
import platform
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from infoflow_track import __version__
from infoflow_track.data import Dataset, load_dataset
from infoflow_track.devices import describe_device, resolve_device
from infoflow_track.engine import EPOCH_METRICS, EpochHook, EpochListener, build_model, train
from infoflow_track.errors import UserError
from infoflow_track.hparams import parse_config
from infoflow_track.plugin import Plugin
from infoflow_track.probe import LAYER_MEASURES, LayerProbe, probe_activations
from infoflow_track.registry import PluginEntry, PluginError, get_entry
from infoflow_track.settings import RunSettings
from infoflow_track.tracking import RunLogger, Tracker, check_experiment_name, git_state


@dataclass(frozen=True)
class RunPlan:
    """A validated run with its model built: nothing about it can still be a user error."""

    entry: PluginEntry
    plugin: Plugin
    config: Any
    settings: RunSettings
    device: torch.device
    data: Dataset
    model: torch.nn.Module

    def params(self) -> dict[str, str]:
        """Every resolved hyperparameter and run setting, and the data's sizes, as params.

        Hyperparameters cannot collide with these: run-setting names are reserved by the
        contract check, and the ``data.`` prefix is no Python identifier.
        """
        data = self.data
        return {
            **self.config.as_params(),
            **self.settings.as_params(),
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
        layer_metrics = (f"{m}/{name}" for m in LAYER_MEASURES for name in layers)
        return [*EPOCH_METRICS, *self.plugin.epoch_metrics, *layer_metrics]

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


def experiment_name(requested: str | None, plan: RunPlan) -> str:
    """The MLflow experiment of a run, checked before any store opens: ``requested``, or the
    plugin's name by default."""
    return check_experiment_name(plan.entry.name if requested is None else requested)


def plan_run(
    plugin: str | PluginEntry, overrides: Mapping[str, Any], settings: RunSettings
) -> RunPlan:
    """Resolve and validate a run of a plugin (its name, or its entry) and build its model;
    UserError names any bad input."""
    entry = plugin if isinstance(plugin, PluginEntry) else get_entry(plugin)
    plugin_cls = entry.load()
    config = parse_config(plugin_cls.Config, overrides)
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
    return RunPlan(entry, instance, config, settings, device, data, model)


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
) -> RunResult:
    """Train ``plan`` and record it as one MLflow run in ``experiment`` (see
    :func:`experiment_name`); the run is ended whatever happens.

    ``tags`` are added to the plan's; ``on_start`` gets the run as soon as it exists. A
    listener raising :class:`~infoflow_track.engine.StopEarly` ends a FINISHED run early.
    """
    run = tracker.start_run(
        experiment,
        run_name=run_name,
        tags={**plan.tags(), **(tags or {})},
        parent_run_id=parent_run_id,
    )
    probe = None
    try:
        if on_start is not None:
            on_start(run)
        run.log_params(plan.params())
        probe = LayerProbe(plan.model, plan.data, plan.settings, artifacts=run)  # before training
        result = train(
            plan.plugin, plan.model, plan.config, plan.data, plan.settings,
            sink=run, hooks=[probe, *hooks], listeners=listeners,
        )  # fmt: skip
        probe.finish()
        if result.stopped:
            run.set_tags({"infoflow.stopped": result.stopped})
    except KeyboardInterrupt:
        run.end("KILLED")
        raise
    except BaseException as exc:
        run.set_tags({"infoflow.error": f"{type(exc).__name__}: {exc}"[:5000]})
        if probe is not None:
            with contextlib.suppress(Exception):  # best effort: figures of the measured epochs
                probe.finish()
        run.end("FAILED")
        raise
    run.end("FINISHED")
    return RunResult(run.run_id, result.metrics, result.steps, result.stopped)
