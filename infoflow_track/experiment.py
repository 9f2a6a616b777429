"""One run, end to end: validate everything first, then open the store, train and record.

:func:`plan_run` resolves the plugin, its config, the device and the data and raises
:class:`~infoflow_track.errors.UserError` on any bad input, before any store is touched.
:func:`execute_run` creates the MLflow run (params, tags), trains through the engine and
closes the run as FINISHED, FAILED or KILLED.
"""

from __future__ import annotations

import platform
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from infoflow_track import __version__
from infoflow_track.data import Dataset, load_dataset
from infoflow_track.devices import describe_device, resolve_device
from infoflow_track.engine import EpochHook, EpochListener, TrainResult, train
from infoflow_track.hparams import parse_config
from infoflow_track.plugin import Plugin
from infoflow_track.registry import PluginEntry, get_entry
from infoflow_track.settings import RunSettings
from infoflow_track.tracking import RunLogger, Tracker, git_commit


@dataclass(frozen=True)
class RunPlan:
    """A validated run: nothing about it can still be a user error."""

    entry: PluginEntry
    plugin: Plugin
    config: Any
    settings: RunSettings
    device: torch.device
    data: Dataset

    def params(self) -> dict[str, str]:
        """Every resolved hyperparameter and run setting, as MLflow params."""
        return {**self.config.as_params(), **self.settings.as_params(), "device": str(self.device)}

    def tags(self) -> dict[str, str]:
        """Plugin identity, code version and environment, as MLflow tags."""
        plugin_file = Path(sys.modules[type(self.plugin).__module__].__file__ or ".")
        commit = git_commit(plugin_file.parent) or git_commit(Path.cwd())
        tags = {
            "infoflow.plugin": self.entry.name,
            "infoflow.plugin_package": self.entry.package,
            "infoflow.plugin_version": self.entry.version,
            "infoflow.version": __version__,
            "infoflow.device": describe_device(self.device),
            "infoflow.torch": torch.__version__,
            "infoflow.python": platform.python_version(),
        }
        if commit:
            tags["mlflow.source.git.commit"] = commit
        return tags


@dataclass(frozen=True)
class RunResult:
    run_id: str
    metrics: dict[str, float]
    epochs: int


def plan_run(plugin_name: str, overrides: Mapping[str, Any], settings: RunSettings) -> RunPlan:
    """Resolve and validate a run; raises UserError naming any bad input. Writes nothing."""
    entry = get_entry(plugin_name)
    plugin_cls = entry.load()
    config = parse_config(plugin_cls.Config, overrides)
    device = resolve_device(settings.device)
    data = load_dataset(settings, device)
    return RunPlan(entry, plugin_cls(), config, settings, device, data)


def execute_run(
    plan: RunPlan,
    tracker: Tracker,
    *,
    experiment: str | None = None,
    run_name: str | None = None,
    parent_run_id: str | None = None,
    hooks: Sequence[EpochHook] = (),
    listeners: Sequence[EpochListener] = (),
) -> RunResult:
    """Train ``plan`` and record it as one MLflow run; the run is ended whatever happens."""
    run = tracker.start_run(
        experiment or plan.entry.name,
        run_name=run_name,
        tags=plan.tags(),
        parent_run_id=parent_run_id,
    )
    run.log_params(plan.params())
    result = _train_recorded(plan, run, hooks, listeners)
    return RunResult(run.run_id, result.metrics, result.steps)


def _train_recorded(
    plan: RunPlan,
    run: RunLogger,
    hooks: Sequence[EpochHook],
    listeners: Sequence[EpochListener],
) -> TrainResult:
    try:
        result = train(
            plan.plugin, plan.config, plan.data, plan.settings,
            sink=run, hooks=hooks, listeners=listeners,
        )  # fmt: skip
    except KeyboardInterrupt:
        run.end("KILLED")
        raise
    except BaseException as exc:
        run.set_tags({"infoflow.error": f"{type(exc).__name__}: {exc}"[:5000]})
        run.end("FAILED")
        raise
    run.end("FINISHED")
    return result
