"""Run-level settings: everything about a run that is not a plugin hyperparameter."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from infoflow_track.errors import UserError, choices_text

MAX_SEED = 2**32 - 1  # numpy and scikit-learn take seeds below 2**32
MI_ESTIMATORS = ("binning", "kde")


@dataclass(frozen=True)
class RunSettings:
    """Dataset, split, schedule, seed and device of one run; validated on construction.

    ``classes`` keeps a subset of the dataset's labels (relabelled 0..k-1 in the given order);
    ``probe_size`` is the number of fixed samples on which measures are taken every epoch;
    ``mi`` picks the MI estimator there: layer-wise ``binning`` into ``bins`` bins, or the
    ``kde`` upper bound with Gaussian noise of variance ``noise_var``.
    """

    dataset: str = "digits"
    classes: tuple[int, ...] | None = None
    epochs: int = 10
    batch_size: int = 64
    seed: int = 0
    device: str = "auto"
    probe_size: int = 4096
    test_fraction: float = 0.2
    split_seed: int = 0
    mi: str = "binning"
    bins: int = 30
    noise_var: float = 0.1

    def __post_init__(self) -> None:
        _in_range("epochs", self.epochs, 1, 10**7)
        _in_range("batch-size", self.batch_size, 1, 10**9)
        _in_range("seed", self.seed, 0, MAX_SEED)
        _in_range("probe-size", self.probe_size, 1, 10**9)
        _in_range("split-seed", self.split_seed, 0, MAX_SEED)
        _in_range("bins", self.bins, 1, 2**15)
        if self.mi not in MI_ESTIMATORS:
            raise UserError(f"invalid --mi {self.mi!r}: valid are {choices_text(MI_ESTIMATORS)}")
        if not (math.isfinite(self.noise_var) and self.noise_var > 0.0):
            raise UserError(f"invalid --noise-var {self.noise_var}: valid is a number > 0")
        if not (math.isfinite(self.test_fraction) and 0.0 < self.test_fraction < 1.0):
            raise UserError(f"invalid --test-fraction {self.test_fraction}: valid is 0 < x < 1")
        if self.classes is not None:
            shown = ",".join(map(str, self.classes))
            if len(self.classes) < 2:
                raise UserError(f"invalid --classes {shown}: give at least two classes")
            if len(set(self.classes)) != len(self.classes):
                raise UserError(f"invalid --classes {shown}: a class is repeated")

    def as_params(self) -> dict[str, str]:
        """Flat ``{name: text}`` form for tracking."""
        out = {k: str(v) for k, v in asdict(self).items()}
        out["classes"] = "all" if self.classes is None else ",".join(map(str, self.classes))
        return out


#: Names a plugin hyperparameter may not take: they are run params of every run.
RUN_SETTING_NAMES = frozenset(f.name for f in fields(RunSettings))


def settings_from(values: Mapping[str, Any]) -> RunSettings:
    """RunSettings from ``{name: value}``, values typed (a TOML table) or text (``--set``).

    An unknown name or unreadable value is a :class:`UserError` naming the setting.
    """
    defaults = RunSettings()
    typed: dict[str, Any] = {}
    for name, value in values.items():
        if name not in RUN_SETTING_NAMES:
            raise UserError(
                f"unknown setting '{name}': valid are {choices_text(sorted(RUN_SETTING_NAMES))}"
            )
        if name == "classes":
            typed[name] = _classes_value(value)
            continue
        kind = type(getattr(defaults, name))
        if isinstance(value, str) and kind is not str:
            try:
                value = kind(value.strip())
            except ValueError:
                raise UserError(
                    f"cannot read {value!r} as {kind.__name__} for setting '{name}'"
                ) from None
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise UserError(f"invalid setting '{name}' = {value!r}: expected {kind.__name__}")
        typed[name] = value
    return RunSettings(**typed)


def _classes_value(value: Any) -> tuple[int, ...] | None:
    if isinstance(value, str):
        return parse_classes(value)
    if isinstance(value, list) and all(type(v) is int for v in value):
        return tuple(value)
    raise UserError(f"invalid setting 'classes' = {value!r}: give a list of labels, e.g. [8, 9]")


def parse_classes(text: str | None) -> tuple[int, ...] | None:
    """``"8,9"`` -> ``(8, 9)``; ``None`` or ``"all"`` -> ``None`` (every class)."""
    if text is None or text.strip().lower() == "all":
        return None
    try:
        return tuple(int(p) for p in text.split(","))
    except ValueError:
        raise UserError(
            f"invalid --classes {text!r}: expected comma-separated integer labels, e.g. 8,9"
        ) from None


def _in_range(name: str, value: int, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise UserError(f"invalid --{name} {value!r}: valid is an integer {low}..{high}")
