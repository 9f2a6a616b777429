"""Declarative hyperparameters: frozen dataclasses whose fields carry type, range and help.

A plugin's config is a frozen dataclass deriving from :class:`HParams`; each field is made
with :func:`hparam`. Validation happens in ``__post_init__``, so no invalid config can exist,
and values given as strings (``--set widths=256,128``) are parsed by :func:`parse_config`.

Supported field types: ``int``, ``float``, ``bool``, ``str``, ``tuple[int, ...]`` /
``tuple[float, ...]`` / ``tuple[str, ...]`` (written ``256,128,64`` on the command line), and any
of these ``| None`` where the field declares the word that means None (``none="all"``).

The same declarations serve run settings and estimator options: a config class names what its
fields are with the class attribute ``kind`` (default ``"hyperparameter"``), which error
messages use.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

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
    none: str | None = None  # the text that means None, for an optional field
    kind: str = "hyperparameter"  # what the field is, for messages

    @property
    def value_type(self) -> Any:
        """The declared type without ``| None``."""
        return _strip_none(self.type)

    @property
    def type_name(self) -> str:
        typ = self.value_type
        name = (f"list of {_SCALARS[typing.get_args(typ)[0]]}" if typing.get_origin(typ) is tuple
                else _SCALARS[typ])  # fmt: skip
        return name if self.none is None else f"{name} or {self.none}"

    @property
    def valid_text(self) -> str:
        """Human description of the valid values, e.g. ``1 <= x <= 4096``."""
        text = self._valid_values()
        return text if self.none is None else f"{text}, or {self.none}"

    def _valid_values(self) -> str:
        if self.choices is not None:
            return "one of " + choices_text(self.choices)
        if self.value_type is bool:
            return "true or false"
        low, high = (_bound_text(b, self.value_type) for b in (self.low, self.high))
        if low and high:
            return f"{low} <= x <= {high}" + (" (log scale)" if self.log else "")
        if low:
            return f"x >= {low}"
        if high:
            return f"x <= {high}"
        return "any " + self.type_name


def _bound_text(bound: float | None, typ: Any) -> str:
    """A bound as text: integers of int fields in full (``4294967295``), others as ``%g``."""
    if bound is None:
        return ""
    whole = typ is int or typing.get_args(typ)[:1] == (int,)
    return str(int(bound)) if whole and float(bound).is_integer() else f"{bound:g}"


def hparam(
    default: Any,
    *,
    help: str = "",
    low: float | None = None,
    high: float | None = None,
    choices: tuple[Any, ...] | None = None,
    log: bool = False,
    none: str | None = None,
) -> Any:
    """Declare a hyperparameter field: its default, help text and valid range or choices.

    ``low``/``high`` are inclusive bounds (for tuples: on every element); ``log`` marks a
    quantity searched on a log scale; ``none`` is the text meaning None for a field typed
    ``X | None`` (e.g. ``"all"``).
    """
    meta = {"help": help, "low": low, "high": high, "choices": choices, "log": log, "none": none}
    return dataclasses.field(default=default, metadata={"infoflow": meta})


def specs(config_cls: type) -> dict[str, HParamSpec]:
    """The :class:`HParamSpec` of every field of a config dataclass, in declaration order."""
    hints = typing.get_type_hints(config_cls)
    kind = getattr(config_cls, "kind", "hyperparameter")
    out = {}
    for field in dataclasses.fields(config_cls):
        meta = field.metadata.get("infoflow", {})
        typ = hints[field.name]
        optional = _strip_none(typ) is not typ
        if not _supported(_strip_none(typ)) or optional != (meta.get("none") is not None):
            raise TypeError(
                f"{kind} '{field.name}' has unsupported type {typ}: supported are int, float, "
                "bool, str, tuple[int | float | str, ...], and X | None with hparam(none=...)"
            )
        out[field.name] = HParamSpec(
            name=field.name, type=typ, default=field.default, kind=kind, **meta
        )
    return out


def _strip_none(typ: Any) -> Any:
    """``X | None`` -> ``X``; any other type as it is."""
    args = typing.get_args(typ)
    if typing.get_origin(typ) in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return rest[0] if len(rest) == 1 else typ
    return typ


def _supported(typ: Any) -> bool:
    if typing.get_origin(typ) is tuple:
        args = typing.get_args(typ)
        return len(args) == 2 and args[1] is Ellipsis and args[0] in (int, float, str)
    return typ in _SCALARS


class HParams:
    """Base of plugin configs (and of run settings and estimator options): validates every
    field against its spec on construction (an int given for a float field is stored as
    float, a list for a tuple field as a tuple)."""

    #: What the fields are, in messages: "hyperparameter", "setting", "option of kde", ...
    kind: ClassVar[str] = "hyperparameter"

    def __post_init__(self) -> None:
        for spec in specs(type(self)).values():
            value = getattr(self, spec.name)
            if isinstance(value, list):
                value = tuple(value)
                object.__setattr__(self, spec.name, value)
            check_value(spec, value)
            if spec.value_type is float and not isinstance(value, float) and value is not None:
                object.__setattr__(self, spec.name, float(value))

    def as_params(self) -> dict[str, str]:
        """Flat ``{name: text}`` form for tracking (tuples as ``256,128,64``)."""
        return {s.name: format_value(getattr(self, s.name), s.none)
                for s in specs(type(self)).values()}  # fmt: skip


def check_value(spec: HParamSpec, value: Any) -> None:
    """Raise :class:`UserError` naming the field if ``value`` is not valid."""
    typ = spec.value_type
    if value is None and spec.none is not None:
        return
    if typing.get_origin(typ) is tuple:
        elem_type = typing.get_args(typ)[0]
        if not isinstance(value, tuple) or not value:
            raise _invalid(spec, value)
        for v in value:
            _check_scalar(spec, elem_type, v, whole=value)
    else:
        _check_scalar(spec, typ, value, whole=value)
    length = len(format_value(value))
    if length > MAX_TEXT:
        raise UserError(
            f"{spec.kind} '{spec.name}' is {length} characters long as text; MLflow "
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
        f"invalid value {format_value(value, spec.none)!r} for {spec.kind} '{spec.name}' "
        f"({spec.type_name}): valid is {spec.valid_text}"
    )


def params_text(params: Mapping[str, Any]) -> str:
    """``lr=0.003162, widths=64,32``: parameters as a run name or legend shows them, floats
    to 4 significant digits."""
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={format_value(v)}"
                     for k, v in params.items())  # fmt: skip


def format_value(value: Any, none: str | None = None) -> str:
    """The text form of a value: tuples as ``256,128,64``, booleans as true/false, None as
    ``none`` (the field's word for it)."""
    if value is None and none is not None:
        return none
    if isinstance(value, tuple):
        return ",".join(format_value(v) for v in value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def parse_value(spec: HParamSpec, text: str) -> Any:
    """Parse the command-line text of one field into its typed value."""
    typ = spec.value_type
    if spec.none is not None and text.strip().lower() == spec.none:
        return None
    try:
        if typing.get_origin(typ) is tuple:
            elem_type = typing.get_args(typ)[0]
            parts = [p.strip() for p in text.split(",")]
            if not all(parts):
                raise ValueError(text)
            return tuple(_parse_scalar(elem_type, p) for p in parts)
        return _parse_scalar(typ, text.strip())
    except ValueError:
        raise UserError(
            f"cannot read {text!r} as {spec.type_name} for {spec.kind} '{spec.name}': "
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


def merge_assignments(*parts: Mapping[str, Any]) -> dict[str, Any]:
    """One ``{key: value}`` of several sources (options, ``--set``); a key given in two is a
    UserError."""
    merged: dict[str, Any] = {}
    for part in parts:
        for key, value in part.items():
            if key in merged:
                raise UserError(f"{key} is given twice (as an option and in --set): give it once")
            merged[key] = value
    return merged


def parse_config(config_cls: type, overrides: Mapping[str, Any]) -> Any:
    """Build a validated config from defaults plus ``overrides`` (strings or typed values).

    Raises :class:`UserError` naming an unknown key with the valid keys, or a bad value with
    its valid range.
    """
    field_specs = specs(config_cls)
    unknown = sorted(set(overrides) - set(field_specs))
    if unknown:
        kind = getattr(config_cls, "kind", "hyperparameter")
        owner = " for this plugin" if kind == "hyperparameter" else ""
        raise UserError(
            f"unknown {kind} '{unknown[0]}'{owner}: valid are {choices_text(field_specs)}"
        )
    values = {
        key: parse_value(field_specs[key], v) if isinstance(v, str) else v
        for key, v in overrides.items()
    }
    return config_cls(**values)
