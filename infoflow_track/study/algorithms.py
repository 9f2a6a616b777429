"""Samplers and pruners by name, with their options checked against Optuna's constructors.

A spec names one of each (``sampler = "tpe"`` or ``[sampler] type = "tpe"`` plus keyword
options of the Optuna class, e.g. ``seed``, ``n_startup_trials``); unknown options are a
:class:`UserError` naming them. Pruning needs a single objective: Optuna prunes on one value.
"""

from __future__ import annotations

import inspect
import math
import re
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
    parameters = inspect.signature(_optuna_class(table, kind).__init__).parameters
    accepted = {k: p for k, p in parameters.items() if k != "self" and k not in _RESERVED}
    for key, value in options.items():
        if key not in accepted:
            valid = choices_text(sorted(accepted))
            raise UserError(f"unknown option '{key}' of {table} {kind}: valid are {valid}")
        problem = _value_problem(key, value, str(accepted[key].annotation))
        if problem:
            raise UserError(f"invalid option {key} = {value!r} of [{table}] {kind}: {problem}")
    return Algorithm(kind, options)


#: What a spec can write for an option of each annotated type (TOML's own types).
_TOML_TYPES = {"int": "an integer", "float": "a number", "bool": "true or false", "str": "text"}
#: Bounds Optuna checks late (at the first trial) or never: the smallest valid value.
_AT_LEAST = {"n_startup_trials": 0, "n_ei_candidates": 1, "popsize": 1, "population_size": 2,
             "seed": 0, "n_warmup_steps": 0, "interval_steps": 1, "n_min_trials": 1,
             "min_resource": 1, "max_resource": 1, "reduction_factor": 2,
             "min_early_stopping_rate": 0, "bootstrap_count": 0}  # fmt: skip
_POSITIVE = {"sigma0", "prior_weight"}
_PROBABILITIES = {"mutation_prob", "crossover_prob", "swapping_prob"}
_WORDS = {"max_resource": ("auto",), "min_resource": ("auto",),
          "restart_strategy": ("ipop", "bipop")}  # fmt: skip


def _value_problem(key: str, value: Any, annotation: str) -> str | None:
    """What is wrong with ``value`` for an option annotated ``annotation`` (``"int | None"``,
    ``"<class 'int'>"``...), as "valid is ..."; None if it is valid."""
    kinds = [k for k in re.findall(r"\b(int|float|bool|str)\b", annotation)
             if "[" not in annotation or k in annotation.split("[")[0]]  # fmt: skip
    if not kinds:
        return "it takes a Python object, which a spec cannot give"
    fits = (
        ("bool" in kinds and isinstance(value, bool))
        or ("int" in kinds and isinstance(value, int) and not isinstance(value, bool))
        or ("float" in kinds and isinstance(value, int | float) and not isinstance(value, bool))
        or ("str" in kinds and isinstance(value, str))
    )
    valid = " or ".join(_TOML_TYPES[k] for k in dict.fromkeys(kinds))
    if isinstance(value, str) and key in _WORDS and "str" in kinds:
        fits, valid = value in _WORDS[key], f"{' or '.join(map(repr, _WORDS[key]))} or {valid}"
    if not fits:
        return f"valid is {valid}"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if not math.isfinite(value):
        return "valid is a finite number"
    if key in _AT_LEAST and value < _AT_LEAST[key]:
        return f"valid is {valid} >= {_AT_LEAST[key]}"
    if key in _POSITIVE and value <= 0:
        return f"valid is {valid} > 0"
    if key in _PROBABILITIES and not 0 <= value <= 1:
        return "valid is a probability, 0 to 1"
    return None


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
    """The Optuna pruner of trials reporting ``epochs`` epoch ends, at steps 1..``epochs``.

    Hyperband's ``max_resource`` defaults to ``epochs``. ``n_warmup_steps = w`` means w
    epochs without pruning: Optuna counts warm-up steps from step 0, our first report is
    step 1, so Optuna gets w + 1.
    """
    options = dict(pruner.options)
    if pruner.kind == "hyperband":
        options.setdefault("max_resource", epochs)
    if "n_warmup_steps" in options:
        options["n_warmup_steps"] += 1
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
