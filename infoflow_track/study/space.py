"""Search spaces: validated against a plugin's hyperparameters, then sampled by an Optuna trial.

A space maps a hyperparameter name to a distribution, written as in study specs and in
``Plugin.search_space``::

    {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}     # also "step"
    {"type": "int", "low": 1, "high": 8, "step": 1}                 # also "log"
    {"type": "categorical", "choices": ["relu", "tanh"]}            # lists for tuple params

Bounds and choices must be valid values of the hyperparameter. Choices of a list-valued
hyperparameter (``widths``) may be written as lists (``[[64], [128, 64]]``); Optuna sees them
as text (``"128,64"``), which the plugin's config parses.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from infoflow_track.errors import UserError, choices_text
from infoflow_track.hparams import HParamSpec, check_value, format_value, parse_value

KINDS = ("float", "int", "categorical")
_KEYS = {
    "float": {"type", "low", "high", "step", "log"},
    "int": {"type", "low", "high", "step", "log"},
    "categorical": {"type", "choices"},
}
MAX_GRID_POINTS = 100_000


@dataclass(frozen=True)
class Dimension:
    """One searched hyperparameter: a float or int range, or categorical choices."""

    name: str
    kind: str
    low: float | None = None
    high: float | None = None
    step: float | None = None
    log: bool = False
    choices: tuple[Any, ...] = ()

    def suggest(self, trial: Any) -> Any:
        """The value an Optuna trial samples for this dimension."""
        if self.kind == "float":
            return trial.suggest_float(self.name, self.low, self.high, step=self.step, log=self.log)
        if self.kind == "int":
            return trial.suggest_int(self.name, self.low, self.high, step=self.step or 1,
                                     log=self.log)  # fmt: skip
        return trial.suggest_categorical(self.name, list(self.choices))

    def grid_values(self) -> list[Any] | None:
        """Every value of a discrete dimension, or None for a continuous one."""
        if self.kind == "categorical":
            return list(self.choices)
        if self.kind == "int":
            return list(range(int(self.low), int(self.high) + 1, int(self.step or 1)))
        if self.step is None:
            return None
        count = math.floor((self.high - self.low) / self.step + 1e-9) + 1
        return [min(self.high, round(self.low + k * self.step, 12)) for k in range(count)]

    def as_dict(self) -> dict[str, Any]:
        """The canonical spec form (what a study records and compares on a rerun)."""
        if self.kind == "categorical":
            return {"type": "categorical", "choices": list(self.choices)}
        out: dict[str, Any] = {"type": self.kind, "low": self.low, "high": self.high}
        if self.step is not None:
            out["step"] = self.step
        if self.log:
            out["log"] = True
        return out


def check_space(
    space: Mapping[str, Any], hparams: Mapping[str, HParamSpec], where: str
) -> dict[str, Dimension]:
    """Validate ``space`` against the plugin's hyperparameter specs; UserError names the entry.

    ``where`` says where the space was written (``search space``, ``[search] in x.toml``).
    """
    if not isinstance(space, Mapping):
        raise UserError(f"{where} must be a table of hyperparameter = distribution")
    dims = {}
    for key, dist in space.items():
        if key not in hparams:
            raise UserError(
                f"{where} names '{key}', which is not a hyperparameter: valid are "
                f"{choices_text(hparams)}"
            )
        dims[key] = _dimension(key, dist, hparams[key], f"{where} entry '{key}'")
    return dims


def _dimension(key: str, dist: Any, spec: HParamSpec, where: str) -> Dimension:
    if not isinstance(dist, Mapping):
        raise UserError(f'{where} must be a table such as {{type = "float", low = 0.001, ...}}')
    kind = dist.get("type")
    if kind not in KINDS:
        raise UserError(f"{where} has type {kind!r}: valid are {choices_text(KINDS)}")
    unknown = sorted(set(dist) - _KEYS[kind])
    if unknown:
        raise UserError(
            f"{where} has unknown key '{unknown[0]}': valid for {kind} are "
            f"{choices_text(sorted(_KEYS[kind]))}"
        )
    if kind == "categorical":
        return Dimension(key, kind, choices=_choices(dist.get("choices"), spec, where))
    if spec.type is not (float if kind == "float" else int):
        raise UserError(
            f"{where}: a {kind} range cannot set hyperparameter '{key}' ({spec.type_name}); "
            "use categorical choices"
        )
    number = (int,) if kind == "int" else (int, float)
    low, high, step, log = dist.get("low"), dist.get("high"), dist.get("step"), dist.get("log")
    for name, value in (("low", low), ("high", high)):
        if not isinstance(value, number) or isinstance(value, bool) or not math.isfinite(value):
            raise UserError(f"{where} needs '{name}' as a finite {kind}, got {value!r}")
        _check_in_range(spec, value, where)
    if low > high:
        raise UserError(f"{where} has low {low} > high {high}")
    if log not in (None, True, False):
        raise UserError(f"{where} has log = {log!r}: valid is true or false")
    if step is not None and (
        not isinstance(step, number) or isinstance(step, bool) or not 0 < step < math.inf
    ):
        raise UserError(f"{where} has step {step!r}: valid is a finite {kind} > 0")
    if log and (step is not None or low <= 0):
        raise UserError(f"{where}: a log scale needs low > 0 and no step")
    cast = float if kind == "float" else int
    step = None if step is None else cast(step)
    return Dimension(key, kind, cast(low), cast(high), step, bool(log))


def _choices(raw: Any, spec: HParamSpec, where: str) -> tuple[Any, ...]:
    if not isinstance(raw, list) or not raw:
        raise UserError(f"{where} needs 'choices', a non-empty list")
    choices: list[Any] = []
    seen = set()
    for choice in raw:
        if isinstance(choice, list):  # a tuple-valued hyperparameter written as a list
            choice = format_value(tuple(choice))
        if not isinstance(choice, str | int | float | bool):
            raise UserError(f"{where} has choice {choice!r}: use text, numbers or true/false")
        typed = parse_value(spec, choice) if isinstance(choice, str) else choice
        _check_in_range(spec, typed, where)
        if format_value(typed) in seen:
            raise UserError(f"{where} repeats choice {format_value(typed)!r}")
        seen.add(format_value(typed))
        choices.append(choice)
    return tuple(choices)


def _check_in_range(spec: HParamSpec, value: Any, where: str) -> None:
    try:
        check_value(spec, float(value) if spec.type is float else value)
    except UserError as exc:
        raise UserError(f"{where}: {exc}") from None


def grid(dims: Mapping[str, Dimension], where: str) -> dict[str, list[Any]]:
    """The grid sampler's search space: every value of every dimension (all discrete)."""
    out: dict[str, list[Any]] = {}
    for name, dim in dims.items():
        values = dim.grid_values()
        if values is None:
            raise UserError(
                f"{where} entry '{name}': the grid sampler needs choices or a step for a float"
            )
        out[name] = values
    if not out:
        raise UserError(f"{where} is empty: the grid sampler needs at least one dimension")
    if math.prod(len(v) for v in out.values()) > MAX_GRID_POINTS:
        raise UserError(f"{where}: the grid has more than {MAX_GRID_POINTS} points")
    return out
