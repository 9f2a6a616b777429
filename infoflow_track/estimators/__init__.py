"""MI estimators as extensions: the contract, discovery and resolution of a run's estimators.

An estimator is an :class:`Estimator` subclass registered under the entry-point group
``infoflow.estimators`` (the built-ins in :mod:`infoflow_track.estimators.builtin` exactly as a
third party's). It declares a name, a one-line summary, the estimator API version it was
written for and a frozen ``Config`` of options declared as plugin hyperparameters are. A run
measures every probed layer with each of its estimators (``--mi renyi,binning``; ``renyi`` by
default); the first
is primary and writes ``mi_xt/<layer>``, the others ``mi_xt.<name>/<layer>`` (see
:mod:`infoflow_track.names`). Options are given as ``--set NAME.OPTION=VALUE`` or in a study
spec's ``[estimator.NAME]`` table.

This module imports no torch, so listing estimators stays cheap.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

from infoflow_track.errors import UserError, choices_text
from infoflow_track.hparams import HParams, format_value, parse_config, specs
from infoflow_track.registry import (
    NAME_RE,
    ContractError,
    ExtensionKind,
    check_config,
    check_identity,
    get_entry,
)

if TYPE_CHECKING:
    import torch

#: The estimator API this infoflow-track provides, "MAJOR.MINOR" (rules as for plugins).
ESTIMATOR_API_VERSION = "1.0"


class Estimate(NamedTuple):
    """One layer's estimates and ceilings, in bits: 0-d tensors (or floats) on any device.

    ``ceiling_xt`` / ``ceiling_ty`` are the largest values the estimator can give for this
    probe set and layer (e.g. log2 N for binning); a layer that stays at its ceiling carries
    no information about training. ``extra`` holds further pairs (I(X;T), I(T;Y)) by name,
    named in the estimator's ``extras`` (e.g. the KDE lower bound as ``"lower"``).
    """

    i_xt: Any
    i_ty: Any
    ceiling_xt: Any
    ceiling_ty: Any
    extra: Mapping[str, tuple[Any, Any]] = {}


class Estimator:
    """Base class of every MI estimator. Subclasses set the class attributes and ``measure``.

    An instance holds one validated config (``self.config``); :meth:`prepare` is called once
    per run with the probe set before any :meth:`measure`, so that what depends on the
    inputs and labels alone (their entropy, a Gram matrix) is computed once.
    """

    #: Registered name: lowercase letters, digits and dashes; equals the entry-point name.
    name: ClassVar[str] = ""
    #: One line shown by ``infoflow estimators list``.
    summary: ClassVar[str] = ""
    #: The estimator API the class was written for, e.g. ``"1.0"``.
    api_version: ClassVar[str] = ""
    #: Frozen dataclass of options deriving from :class:`~infoflow_track.hparams.HParams`.
    Config: ClassVar[type[HParams]]
    #: Names of the further values ``measure`` returns in ``Estimate.extra``.
    extras: ClassVar[tuple[str, ...]] = ()
    #: What to change when a layer's I(X;T) sits at its ceiling (shown in the warning).
    saturation_advice: ClassVar[str] = "measure with another estimator, e.g. --mi renyi"

    def __init__(self, config: HParams | None = None) -> None:
        self.config = self.Config() if config is None else config

    def prepare(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Called once per run with the probe inputs x (N, ...) and labels y (N,)."""

    def measure(self, t: torch.Tensor, y: torch.Tensor, x: torch.Tensor) -> Estimate:
        """Estimates of one layer t (N, ...) against labels y (N,) and inputs x (N, ...), all
        on one device; returns tensors on that device (no host read needed)."""
        raise NotImplementedError

    def measure_replicates(self, t: torch.Tensor, y: torch.Tensor, x: torch.Tensor) -> Estimate:
        """Estimates of K replicates of one layer, t (K, N, ...), against the same y and x:
        an Estimate of (K,) tensors on t's device (a value shared by all K may stay 0-d or
        a float). This default calls :meth:`measure` once per replicate; an estimator whose
        math batches overrides it with one vectorised call (the built-ins do)."""
        import torch

        found = [self.measure(replicate, y, x) for replicate in t]

        def stacked(values: list[Any]) -> torch.Tensor:
            return torch.stack([torch.as_tensor(v, dtype=torch.float64, device=t.device)
                                for v in values])  # fmt: skip

        main = (stacked([f[i] for f in found]) for i in range(4))
        extra = {e: tuple(stacked([f.extra[e][i] for f in found]) for i in (0, 1))
                 for e in self.extras}  # fmt: skip
        return Estimate(*main, extra)

    def scale_warning(self, layer: str, t: torch.Tensor) -> str | None:
        """A warning if the options do not suit layer t (N, ...) at initialisation, or None."""
        return None

    def describe(self) -> str:
        """``name (option=value, ...)``: for figure titles and messages."""
        options = ", ".join(f"{k}={v}" for k, v in self.config.as_params().items())
        return f"{self.name} ({options})" if options else self.name

    def params(self) -> dict[str, str]:
        """Every option as a run param ``mi.<name>.<option>``."""
        return option_params({self.name: self.config.as_params()})


def option_params(options: Mapping[str, Mapping[str, str]]) -> dict[str, str]:
    """``{estimator: {option: text}}`` as run params ``{"mi.<estimator>.<option>": text}``."""
    return {f"mi.{name}.{k}": v for name, opts in options.items() for k, v in opts.items()}


def check_estimator_contract(cls: Any, entry_name: str) -> None:
    """Raise :class:`ContractError` naming the first way ``cls`` breaks the estimator
    contract."""
    check_identity(cls, entry_name, Estimator, "estimator", ESTIMATOR_API_VERSION)
    if cls.measure is Estimator.measure:
        raise ContractError(f"{cls.__name__} does not implement measure(t, y, x)")
    check_config(cls)
    extras = cls.extras
    if not (isinstance(extras, tuple) and all(isinstance(e, str) and NAME_RE.fullmatch(e)
                                              for e in extras)):  # fmt: skip
        raise ContractError(
            f"{cls.__name__}.extras must be a tuple of names (lowercase letters, digits, dashes)"
        )
    if not isinstance(cls.saturation_advice, str) or not cls.saturation_advice.strip():
        raise ContractError(f"{cls.__name__}.saturation_advice must be a non-empty string")


ESTIMATORS = ExtensionKind(
    noun="estimator", group="infoflow.estimators", check=check_estimator_contract,
    autoload_env="INFOFLOW_DISABLE_ESTIMATOR_AUTOLOAD", explicit_env="INFOFLOW_ESTIMATORS",
    disabled_env="INFOFLOW_DISABLE_ESTIMATORS", explicit_option="$INFOFLOW_ESTIMATORS",
    disabled_option="$INFOFLOW_DISABLE_ESTIMATORS", listing="infoflow estimators list",
)  # fmt: skip


def split_options(values: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Split ``{key: value}`` into plain keys and estimator options ``NAME.OPTION``:
    ``({key: value}, {name: {option: value}})``. No plain key holds a dot."""
    plain: dict[str, Any] = {}
    options: dict[str, dict[str, Any]] = {}
    for key, value in values.items():
        name, dot, option = key.partition(".")
        if not dot:
            plain[key] = value
        elif not name or not option:
            raise UserError(f"malformed estimator option {key!r}: write ESTIMATOR.OPTION=VALUE")
        else:
            options.setdefault(name, {})[option] = value
    return plain, options


class EstimatorChoice(NamedTuple):
    """The estimators of a run, resolved and configured, in order (the first is primary)."""

    estimators: tuple[Estimator, ...]

    def params(self) -> dict[str, str]:
        return option_params(self.options())

    def options(self) -> dict[str, dict[str, str]]:
        """``{name: {option: text}}`` of every estimator: what a study must keep."""
        return {e.name: e.config.as_params() for e in self.estimators}


def resolve_estimators(
    names: Sequence[str], options: Mapping[str, Mapping[str, Any]] | None = None
) -> EstimatorChoice:
    """Load and configure the estimators ``names`` with ``options`` ``{name: {option:
    value}}`` (typed, or text as from ``--set``); UserError names any unknown estimator,
    broken estimator, unknown option or bad value, or options of an estimator not chosen."""
    options = dict(options or {})
    stray = sorted(set(options) - set(names))
    if stray:
        raise UserError(
            f"options of estimator '{stray[0]}' given, but the run's estimators (setting mi) "
            f"are {choices_text(names)}: add it to mi or drop its options"
        )
    chosen = []
    for name in names:
        cls = get_entry(name, ESTIMATORS).load()
        cls_options = dict(options.get(name, {}))
        try:
            config = parse_config(cls.Config, cls_options)
        except UserError as exc:
            raise UserError(f"estimator {name}: {exc}") from None
        chosen.append(cls(config))
    return EstimatorChoice(tuple(chosen))


def option_rows(cls: type[Estimator]) -> list[tuple[str, str, str, str, str]]:
    """(option, type, default, valid values, help) of every option of estimator ``cls``."""
    return [(s.name, s.type_name, format_value(s.default, s.none), s.valid_text, s.help)
            for s in specs(cls.Config).values()]  # fmt: skip
