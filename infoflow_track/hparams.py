"""Declarative hyperparameters: frozen dataclasses whose fields carry type, range and help.

A plugin's config is a frozen dataclass deriving from :class:`HParams`; each field is made
with :func:`hparam`. Validation happens in ``__post_init__``, so no invalid config can exist,
and values given as strings (``--set widths=256,128``) are parsed by :func:`parse_config`.

Supported field types: ``int``, ``float``, ``bool``, ``str`` and ``tuple[int, ...]`` /
``tuple[float, ...]`` (written ``256,128,64`` on the command line).
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from infoflow_track.errors import UserError, choices_text

_SCALARS = {int: "int", float: "float", bool: "bool", str: "str"}
MAX_TEXT = 6000  # MLflow's limit on a param value
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


@dataclass(frozen=True)
class HParamSpec:
    """What a hyperparameter may be: its type, bounds (inclusive) or choices, and help."""

    name: str
    type: Any
    default: Any
    help: str = ""
    low: float | None = None
    high: float | None = None
    choices: tuple[Any, ...] | None = None
    log: bool = False

    @property
    def type_name(self) -> str:
        origin = typing.get_origin(self.type)
        if origin is tuple:
            return f"list of {_SCALARS[typing.get_args(self.type)[0]]}"
        return _SCALARS[self.type]

    @property
    def valid_text(self) -> str:
        """Human description of the valid values, e.g. ``1 <= x <= 4096``."""
        if self.choices is not None:
            return "one of " + choices_text(self.choices)
        if self.type is bool:
            return "true or false"
        if self.low is not None and self.high is not None:
            return f"{self.low:g} <= x <= {self.high:g}" + (" (log scale)" if self.log else "")
        if self.low is not None:
            return f"x >= {self.low:g}"
        if self.high is not None:
            return f"x <= {self.high:g}"
        return "any " + self.type_name


def hparam(
    default: Any,
    *,
    help: str = "",
    low: float | None = None,
    high: float | None = None,
    choices: tuple[Any, ...] | None = None,
    log: bool = False,
) -> Any:
    """Declare a hyperparameter field: its default, help text and valid range or choices.

    ``low``/``high`` are inclusive bounds (for tuples: on every element); ``log`` marks a
    quantity searched on a log scale.
    """
    meta = {"help": help, "low": low, "high": high, "choices": choices, "log": log}
    return dataclasses.field(default=default, metadata={"infoflow": meta})


def specs(config_cls: type) -> dict[str, HParamSpec]:
    """The :class:`HParamSpec` of every field of a config dataclass, in declaration order."""
    hints = typing.get_type_hints(config_cls)
    out = {}
    for field in dataclasses.fields(config_cls):
        meta = field.metadata.get("infoflow", {})
        if not _supported(hints[field.name]):
            raise TypeError(
                f"hyperparameter '{field.name}' has unsupported type {hints[field.name]}: "
                "supported are int, float, bool, str, tuple[int, ...], tuple[float, ...]"
            )
        out[field.name] = HParamSpec(
            name=field.name, type=hints[field.name], default=field.default, **meta
        )
    return out


def _supported(typ: Any) -> bool:
    if typing.get_origin(typ) is tuple:
        args = typing.get_args(typ)
        return len(args) == 2 and args[1] is Ellipsis and args[0] in (int, float)
    return typ in _SCALARS


class HParams:
    """Base of plugin configs: validates every field against its spec on construction
    (an int given for a float field is stored as float)."""

    def __post_init__(self) -> None:
        for spec in specs(type(self)).values():
            value = getattr(self, spec.name)
            check_value(spec, value)
            if spec.type is float and not isinstance(value, float):
                object.__setattr__(self, spec.name, float(value))

    def as_params(self) -> dict[str, str]:
        """Flat ``{name: text}`` form for tracking (tuples as ``256,128,64``)."""
        return {s.name: format_value(getattr(self, s.name)) for s in specs(type(self)).values()}


def check_value(spec: HParamSpec, value: Any) -> None:
    """Raise :class:`UserError` naming the hyperparameter if ``value`` is not valid."""
    origin = typing.get_origin(spec.type)
    if origin is tuple:
        elem_type = typing.get_args(spec.type)[0]
        if not isinstance(value, tuple) or not value:
            raise _invalid(spec, value)
        for v in value:
            _check_scalar(spec, elem_type, v, whole=value)
    else:
        _check_scalar(spec, spec.type, value, whole=value)
    length = len(format_value(value))
    if length > MAX_TEXT:
        raise UserError(
            f"hyperparameter '{spec.name}' is {length} characters long as text; MLflow "
            f"records at most {MAX_TEXT}"
        )


def _check_scalar(spec: HParamSpec, typ: type, v: Any, *, whole: Any) -> None:
    ok_type = isinstance(v, typ) and not (typ in (int, float) and isinstance(v, bool))
    if typ is float and isinstance(v, int) and not isinstance(v, bool):
        ok_type = True
    if not ok_type or (typ is float and not math.isfinite(v)):
        raise _invalid(spec, whole)
    if spec.choices is not None and v not in spec.choices:
        raise _invalid(spec, whole)
    if spec.low is not None and v < spec.low:
        raise _invalid(spec, whole)
    if spec.high is not None and v > spec.high:
        raise _invalid(spec, whole)


def _invalid(spec: HParamSpec, value: Any) -> UserError:
    return UserError(
        f"invalid value {format_value(value)!r} for hyperparameter '{spec.name}' "
        f"({spec.type_name}): valid is {spec.valid_text}"
    )


def format_value(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(format_value(v) for v in value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def parse_value(spec: HParamSpec, text: str) -> Any:
    """Parse the command-line text of one hyperparameter into its typed value."""
    origin = typing.get_origin(spec.type)
    try:
        if origin is tuple:
            elem_type = typing.get_args(spec.type)[0]
            parts = [p.strip() for p in text.split(",")]
            if not all(parts):
                raise ValueError(text)
            return tuple(_parse_scalar(elem_type, p) for p in parts)
        return _parse_scalar(spec.type, text.strip())
    except ValueError:
        raise UserError(
            f"cannot read {text!r} as {spec.type_name} for hyperparameter '{spec.name}': "
            f"valid is {spec.valid_text}"
        ) from None


def _parse_scalar(typ: type, text: str) -> Any:
    if typ is bool:
        low = text.lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise ValueError(text)
    return typ(text)


def parse_assignments(items: list[str] | tuple[str, ...]) -> dict[str, str]:
    """Split ``["key=value", ...]`` (the ``--set`` options) into a dict; malformed -> UserError."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key or not value.strip():
            raise UserError(f"malformed --set {item!r}: expected key=value, e.g. --set lr=0.01")
        if key in out:
            raise UserError(f"--set {key} given twice")
        out[key] = value
    return out


def parse_config(config_cls: type, overrides: Mapping[str, Any]) -> Any:
    """Build a validated config from defaults plus ``overrides`` (strings or typed values).

    Raises :class:`UserError` naming an unknown key with the valid keys, or a bad value with
    its valid range.
    """
    field_specs = specs(config_cls)
    unknown = sorted(set(overrides) - set(field_specs))
    if unknown:
        raise UserError(
            f"unknown hyperparameter '{unknown[0]}' for this plugin: valid are "
            f"{choices_text(field_specs)}"
        )
    values = {
        key: parse_value(field_specs[key], v) if isinstance(v, str) else v
        for key, v in overrides.items()
    }
    return config_cls(**values)
