"""Samplers and pruners by name, with their options checked against Optuna's constructors.

A spec names one of each (``sampler = "tpe"`` or ``[sampler] type = "tpe"`` plus keyword
options of the Optuna class, e.g. ``seed``, ``n_startup_trials``); unknown options are a
:class:`UserError` naming them. Pruning needs a single objective: Optuna prunes on one value.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from infoflow_track.errors import UserError, choices_text

SAMPLERS = {
    "tpe": "TPESampler",
    "random": "RandomSampler",
    "grid": "GridSampler",
    "cmaes": "CmaEsSampler",
    "gp": "GPSampler",
    "nsga2": "NSGAIISampler",
}
PRUNERS = {
    "none": "NopPruner",
    "median": "MedianPruner",
    "hyperband": "HyperbandPruner",
    "successive-halving": "SuccessiveHalvingPruner",
}
SINGLE_OBJECTIVE_SAMPLERS = ("cmaes",)
#: Options the study sets itself: the grid's points come from the search space.
_RESERVED = {"search_space"}


@dataclass(frozen=True)
class Algorithm:
    """A sampler or pruner: its name in specs and its keyword options."""

    kind: str
    options: Mapping[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        """``tpe`` or ``tpe(seed=0, n_startup_trials=3)``, for tags and progress lines."""
        if not self.options:
            return self.kind
        return f"{self.kind}({', '.join(f'{k}={v!r}' for k, v in self.options.items())})"


def parse_algorithm(raw: Any, table: str, default: str) -> Algorithm:
    """``"tpe"`` or ``{type = "tpe", seed = 0}`` from the spec's ``[sampler]``/``[pruner]``."""
    names = SAMPLERS if table == "sampler" else PRUNERS
    if raw is None:
        raw = default
    if isinstance(raw, str):
        raw = {"type": raw}
    if not isinstance(raw, Mapping):
        raise UserError(f"[{table}] must be a name or a table with 'type'")
    options = dict(raw)
    kind = options.pop("type", None)
    if kind not in names:
        raise UserError(f"invalid {table} type {kind!r}: valid are {choices_text(names)}")
    cls = _optuna_class(table, kind)
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self"} - _RESERVED
    for key, value in options.items():
        if key not in accepted:
            valid = choices_text(sorted(accepted))
            raise UserError(f"unknown option '{key}' of {table} {kind}: valid are {valid}")
        if not isinstance(value, str | int | float | bool):
            raise UserError(f"option '{key}' of {table} {kind} must be text, a number or a bool")
    return Algorithm(kind, options)


def check_algorithms(sampler: Algorithm, pruner: Algorithm, n_objectives: int) -> None:
    """The combinations Optuna cannot run: pruning or CMA-ES with several objectives."""
    if n_objectives > 1 and pruner.kind != "none":
        raise UserError(
            f"pruner {pruner.kind} needs a single objective; this study has {n_objectives} "
            '(use pruner = "none")'
        )
    if n_objectives > 1 and sampler.kind in SINGLE_OBJECTIVE_SAMPLERS:
        raise UserError(f"sampler {sampler.kind} handles a single objective only")


def make_sampler(sampler: Algorithm, grid: Mapping[str, list[Any]] | None, seed_offset: int):
    """The Optuna sampler; a given ``seed`` is shifted by ``seed_offset`` so that parallel
    workers and resumed runs do not replay the same random draws."""
    options = dict(sampler.options)
    if "seed" in options:
        seed = options["seed"]
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise UserError(f"invalid options for sampler {sampler.kind}: seed {seed!r} is not "
                            "an integer")  # fmt: skip
        options["seed"] = seed + seed_offset
    if sampler.kind == "grid":
        return _build("sampler grid", _grid_sampler_class(), {"search_space": grid, **options})
    return _build(f"sampler {sampler.kind}", _optuna_class("sampler", sampler.kind), options)


def make_pruner(pruner: Algorithm, epochs: int):
    """The Optuna pruner; Hyperband's ``max_resource`` defaults to the number of epochs."""
    options = dict(pruner.options)
    if pruner.kind == "hyperband":
        options.setdefault("max_resource", epochs)
    return _build(f"pruner {pruner.kind}", _optuna_class("pruner", pruner.kind), options)


def _build(what: str, cls: type, options: dict[str, Any]):
    import optuna

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return cls(**options)
    except (TypeError, ValueError) as exc:
        raise UserError(f"invalid options for {what}: {exc}") from None


def _optuna_class(table: str, kind: str) -> type:
    import optuna

    if table == "sampler":
        return getattr(optuna.samplers, SAMPLERS[kind])
    return getattr(optuna.pruners, PRUNERS[kind])


def _grid_sampler_class() -> type:
    import optuna

    class GridSampler(optuna.samplers.GridSampler):
        """Optuna's grid sampler without its ``study.stop()`` at the grid's end: the study's
        own trial budget ends the search (and ``stop`` is refused outside ``optimize``)."""

        def after_trial(self, study, trial, state, values) -> None:
            return None

    return GridSampler
