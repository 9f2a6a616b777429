"""Run-level settings: everything about a run that is not a plugin hyperparameter.

Declared once, as hyperparameters are (:func:`~infoflow_track.hparams.hparam`): the ``infoflow
run`` options, ``--set`` on ``run`` and ``study``, the ``[settings]`` table of study specs,
their checks, params and help are all derived from :class:`RunSettings`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any, NamedTuple

from infoflow_track.errors import UserError, choices_text
from infoflow_track.hparams import HParams, hparam, parse_config

MAX_SEED = 2**32 - 1  # numpy and scikit-learn take seeds below 2**32
#: The estimators of a run when none are named: the first is primary (``mi_xt/<layer>``).
DEFAULT_ESTIMATORS = ("renyi",)


@dataclass(frozen=True)
class RunSettings(HParams):
    """Dataset, split, schedule, seed, device, probe and estimators of one run; validated on
    construction. Estimator options live beside it (see :mod:`infoflow_track.estimators`)."""

    kind = "setting"

    dataset: str = hparam("digits", help="dataset spec, see `infoflow datasets`")
    classes: tuple[int, ...] | None = hparam(
        None, none="all", low=0, help="class subset, relabelled 0..k-1 in this order, e.g. 8,9"
    )
    epochs: int = hparam(10, low=1, high=10**7, help="training epochs")
    batch_size: int = hparam(64, low=1, high=10**9, help="minibatch size")
    seed: int = hparam(0, low=0, high=MAX_SEED, help="seed of initialisation and batch order")
    replicates: int = hparam(
        1, low=1, high=1024, help="seeds seed, seed+1, ... of the same configuration, trained "
        "packed where the model allows; logged as mean, sd/ and ci95/ keys",
    )  # fmt: skip
    drop_diverged: bool = hparam(
        False, help="leave a diverging replicate out of the means instead of failing the run"
    )
    device: str = hparam("auto", help="auto, cpu, cuda or cuda:N")
    probe_size: int = hparam(
        4096, low=2, high=10**9, help="samples of the fixed probe set measured every epoch"
    )
    test_fraction: float = hparam(
        0.2, low=0.0, high=1.0, help="share of samples held out, strictly between 0 and 1"
    )
    split_seed: int = hparam(0, low=0, high=MAX_SEED, help="seed of the train/test split")
    mi: tuple[str, ...] = hparam(
        DEFAULT_ESTIMATORS,
        help="MI estimators on the probe set, the first primary (see `infoflow estimators "
        "list`); options as --set ESTIMATOR.OPTION=VALUE",
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 < self.test_fraction < 1.0:
            raise UserError(
                f"invalid value {self.test_fraction!r} for setting 'test_fraction': valid is "
                "0 < x < 1"
            )
        if self.classes is not None:
            shown = ",".join(map(str, self.classes))
            if len(self.classes) < 2:
                raise UserError(f"invalid setting classes {shown}: give at least two classes")
            if len(set(self.classes)) != len(self.classes):
                raise UserError(f"invalid setting classes {shown}: a class is repeated")
        if self.seed + self.replicates - 1 > MAX_SEED:
            raise UserError(
                f"invalid setting replicates {self.replicates}: seeds {self.seed}.."
                f"{self.seed + self.replicates - 1} pass {MAX_SEED}, the largest seed"
            )
        if len(set(self.mi)) != len(self.mi):
            raise UserError(f"invalid setting mi {','.join(self.mi)}: an estimator is repeated")


#: Names a plugin hyperparameter may not take: they are run params of every run.
RUN_SETTING_NAMES = frozenset(f.name for f in fields(RunSettings))


def settings_from(values: Mapping[str, Any]) -> RunSettings:
    """RunSettings from ``{name: value}``, values typed (a TOML table) or text (``--set``).

    An unknown name or unreadable value is a :class:`UserError` naming the setting.
    """
    return parse_config(RunSettings, values)


class Assignments(NamedTuple):
    """``--set`` values sorted by what they set."""

    settings: dict[str, Any]  # run setting -> value
    hyperparameters: dict[str, Any]  # plugin hyperparameter -> value
    estimator_options: dict[str, dict[str, Any]]  # estimator -> {option: value}


def split_assignments(
    values: Mapping[str, Any], hyperparameters: Iterable[str], plugin: str
) -> Assignments:
    """Sort ``{key: value}`` into run settings, hyperparameters of ``plugin`` and estimator
    options ``ESTIMATOR.OPTION``; any other key is a UserError listing the valid ones."""
    from infoflow_track.estimators import split_options

    plain, options = split_options(values)
    names = list(hyperparameters)  # in declaration order
    stray = sorted(k for k in plain if k not in RUN_SETTING_NAMES and k not in names)
    if stray:
        raise UserError(
            f"unknown --set key '{stray[0]}': valid are hyperparameters of {plugin} "
            f"({choices_text(names)}), run settings ({choices_text(sorted(RUN_SETTING_NAMES))}) "
            "and estimator options ESTIMATOR.OPTION (see `infoflow estimators show NAME`)"
        )
    settings = {k: v for k, v in plain.items() if k in RUN_SETTING_NAMES}
    return Assignments(settings, {k: v for k, v in plain.items() if k in names}, options)
