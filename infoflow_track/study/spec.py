"""Study specs: TOML files parsed and validated into a :class:`StudySpec`, never executed.

::

    name = "quickstart"            # Optuna study and MLflow experiment (default: file name)
    plugin = "mlp"
    n_trials = 6                   # the study's total budget of finished trials
    timeout = 900                  # optional: seconds after which no new trial starts
    figures = "best"               # PNGs of the best trials, drawn once all are done; or "all"

    [settings]                     # run settings (see `infoflow run --help`)
    dataset = "digits"
    epochs = 3
    mi = ["renyi", "binning"]      # MI estimators, the first primary (mi_xt/<layer>)

    [estimator.binning]            # options of an estimator (`infoflow estimators show NAME`)
    bin_width = 0.07

    [fixed]                        # hyperparameters held fixed
    activation = "relu"

    [search]                       # searched hyperparameters (default: the plugin's space)
    lr = { type = "float", low = 1e-4, high = 1e-2, log = true }

    [objective]                    # or several [[objective]] tables (multi-objective)
    metric = "acc/test"            # any metric the run logs, value at the last epoch
    direction = "maximize"
    statistic = "mean"             # with replicates: mean, or lower / upper end of its 95% CI

    [sampler]                      # tpe, random, grid, cmaes, gp, nsga2 (+ Optuna options)
    type = "tpe"
    seed = 0

    [pruner]                       # none, median, hyperband, successive-halving
    type = "median"

Every error is a :class:`UserError` naming the spec and the key, raised before anything runs.
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from infoflow_track.errors import UserError, choices_text
from infoflow_track.estimators import resolve_estimators
from infoflow_track.hparams import format_value, parse_config, specs
from infoflow_track.names import CKA_MEASURES, EPOCH_METRICS, LAYER_KEY, MI_QUANTITIES
from infoflow_track.settings import RunSettings, settings_from, split_assignments
from infoflow_track.study.algorithms import Algorithm, check_algorithms, parse_algorithm
from infoflow_track.study.space import Dimension, check_space, grid

TOP_LEVEL_KEYS = ("name", "description", "plugin", "n_trials", "timeout", "figures",
                  "settings", "estimator", "fixed", "search", "objective", "sampler",
                  "pruner")  # fmt: skip
#: Which trials draw their figures: the best (once the study's trials are done) or every one.
FIGURES = ("best", "all")
DIRECTIONS = ("maximize", "minimize")
MAX_TRIALS = 100_000
DEFAULT_OBJECTIVE = {"metric": "acc/test", "direction": "maximize"}


#: What of an objective's metric a trial is worth: its mean over the replicates, or the low or
#: high end of its 95% interval (see :func:`infoflow_track.replicates.bound`).
STATISTICS = ("mean", "lower", "upper")


@dataclass(frozen=True)
class Objective:
    metric: str  # a metric key the run logs, e.g. acc/test or mi_xt/hidden1
    direction: str  # maximize | minimize
    statistic: str = "mean"  # mean | lower | upper

    @property
    def label(self) -> str:
        """``acc/test``, or ``acc/test (lower 95%)`` for a bound."""
        return self.metric if self.statistic == "mean" else f"{self.metric} ({self.statistic} 95%)"

    def identity(self) -> list[str]:
        """[metric, direction] and the statistic unless it is the mean (older studies)."""
        base = [self.metric, self.direction]
        return base if self.statistic == "mean" else [*base, self.statistic]


@dataclass(frozen=True)
class StudySpec:
    """A validated study: what to train, what to search, what to optimise, how long."""

    name: str
    plugin: str
    settings: RunSettings
    estimator_options: Mapping[str, Mapping[str, str]]  # estimator -> {option: text}, all
    fixed: Mapping[str, Any]  # hyperparameter -> typed value
    search: Mapping[str, Dimension]
    objectives: tuple[Objective, ...]
    sampler: Algorithm
    pruner: Algorithm
    n_trials: int
    timeout: float | None
    path: Path  # the spec file
    text: str  # its text, kept as an artifact of the study
    description: str = ""  # shown on the parent run in the MLflow UI
    figures: str = "best"  # see FIGURES
    overrides: Mapping[str, str] = field(default_factory=dict)  # --set key=value, as given

    @property
    def directions(self) -> list[str]:
        return [o.direction for o in self.objectives]

    def grid(self) -> dict[str, list[Any]] | None:
        """The grid sampler's points per dimension, or None for other samplers."""
        return grid(self.search, "[search]") if self.sampler.kind == "grid" else None

    def identity(self) -> dict[str, Any]:
        """What a study must keep to be continued: plugin, settings, fixed values, space and
        objectives. Budget, timeout, sampler and pruner may change between runs."""
        return {
            "plugin": self.plugin,
            "settings": self.settings.as_params(),
            "estimators": {k: dict(v) for k, v in self.estimator_options.items()},
            "fixed": {k: format_value(v) for k, v in sorted(self.fixed.items())},
            "search": {k: d.as_dict() for k, d in sorted(self.search.items())},
            "objectives": [o.identity() for o in self.objectives],
        }


def resolve_spec_path(target: str, studies_dir: Path) -> Path:
    """``NAME`` -> ``studies_dir/NAME.toml``; anything path-like is taken as a path."""
    path = Path(target)
    if target.endswith(".toml") or "/" in target or path.is_file():
        if not path.is_file():
            raise UserError(f"study spec {target!r} not found")
        return path
    candidate = studies_dir / f"{target}.toml"
    if not candidate.is_file():
        known = sorted(p.stem for p in studies_dir.glob("*.toml")) if studies_dir.is_dir() else []
        raise UserError(
            f"unknown study {target!r}: no {candidate}; studies there are {choices_text(known)}"
        )
    return candidate


MAX_SPEC_BYTES = 1_000_000


def read_spec(path: Path) -> tuple[dict[str, Any], str]:
    """(parsed TOML, text) of the spec file ``path``; a file that is not UTF-8 TOML is a
    UserError naming the line at fault."""
    try:
        if path.stat().st_size > MAX_SPEC_BYTES:
            raise UserError(f"study spec {path} is over {MAX_SPEC_BYTES // 1000} kB: not a spec")
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"study spec {path} is not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise UserError(f"cannot read study spec {path}: {exc.strerror}") from None
    try:
        return tomllib.loads(text), text
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"malformed study spec {path}{_toml_error_text(exc, text)}") from None
    except RecursionError:
        raise UserError(f"malformed study spec {path}: nested too deeply") from None


def _toml_error_text(exc: Exception, text: str) -> str:
    """``, line 3 ('lr = 2'): Cannot overwrite a value (a key or table given twice)``."""
    message = str(exc)
    where = re.search(r"\(at line (\d+), column \d+\)$", message)
    if where is None:
        return f": {message}"
    number = int(where[1])
    lines = text.splitlines()
    shown = lines[number - 1].strip()[:80] if number <= len(lines) else ""
    reason = message[: where.start()].strip()
    if reason.startswith(("Cannot overwrite", "Cannot declare")):
        reason += " (a key or table given twice)"
    return f", line {number} ({shown!r}): {reason}"


def load_spec(
    target: str,
    *,
    overrides: Mapping[str, str] | None = None,
    n_trials: int | None = None,
    timeout: float | None = None,
    name: str | None = None,
    studies_dir: Path = Path("studies"),
) -> StudySpec:
    """Read and validate the spec ``target`` (a name in ``studies_dir`` or a path).

    ``overrides`` (``--set key=value``) set run settings or fix hyperparameters (a fixed
    hyperparameter leaves the search); ``n_trials``, ``timeout`` and ``name`` replace the
    spec's.
    """
    path = resolve_spec_path(target, studies_dir)
    raw, text = read_spec(path)
    return parse_spec(raw, path=path, text=text, overrides=overrides or {},
                      n_trials=n_trials, timeout=timeout, name=name)  # fmt: skip


def joinable(spec: StudySpec) -> dict[str, Any]:
    """What a host without the spec file needs to join the study: the spec's text, the
    ``--set`` overrides and the budget it was opened with (see :func:`joined_spec`)."""
    return {"text": spec.text, "set": dict(spec.overrides), "n_trials": spec.n_trials}


def joined_spec(
    name: str, recorded: Mapping[str, Any], *, n_trials: int | None, timeout: float | None
) -> StudySpec:
    """The spec of study ``name`` from what :func:`joinable` recorded in its storage."""
    text = recorded["text"]
    where = Path(f"{name} (the spec recorded in its storage)")
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"malformed study spec {where}{_toml_error_text(exc, text)}") from None
    budget = n_trials if n_trials is not None else recorded["n_trials"]
    return parse_spec(raw, path=where, text=text, overrides=recorded["set"], n_trials=budget,
                      timeout=timeout, name=name)  # fmt: skip


def parse_spec(
    raw: Mapping[str, Any],
    *,
    path: Path,
    text: str = "",
    overrides: Mapping[str, str],
    n_trials: int | None = None,
    timeout: float | None = None,
    name: str | None = None,
) -> StudySpec:
    """Validate the parsed TOML ``raw`` of spec ``path``; see :func:`load_spec`."""
    from infoflow_track.registry import get_entry
    from infoflow_track.tracking import check_experiment_name

    where = path.name
    unknown = sorted(set(raw) - set(TOP_LEVEL_KEYS))
    if unknown:
        raise UserError(
            f"unknown key '{unknown[0]}' in {where}: valid are {choices_text(TOP_LEVEL_KEYS)}"
        )
    study_name = name if name is not None else raw.get("name", path.stem)
    if not isinstance(study_name, str):
        raise UserError(f"'name' in {where} must be text")
    study_name = check_experiment_name(study_name)
    description = raw.get("description", "")
    if not isinstance(description, str):
        raise UserError(f"'description' in {where} must be text")
    figures = raw.get("figures", "best")
    if figures not in FIGURES:
        raise UserError(
            f"invalid figures {figures!r} in {where}: valid are {choices_text(FIGURES)}"
        )
    plugin_name = raw.get("plugin")
    if not isinstance(plugin_name, str):
        raise UserError(f"'plugin' in {where} is missing: name a plugin, e.g. plugin = \"mlp\"")
    plugin_cls = get_entry(plugin_name).load()
    config_cls = plugin_cls.Config
    hparams = specs(config_cls)

    given = split_assignments(overrides, hparams, plugin_name)
    fixed_over = given.hyperparameters
    try:
        settings = settings_from({**_table(raw, "settings", where), **given.settings})
    except UserError as exc:
        raise UserError(f"[settings] in {where}: {exc}") from None
    estimator_options = _estimator_options(raw, given.estimator_options, settings, where)
    fixed_raw = {k: tuple(v) if isinstance(v, list) else v
                 for k, v in _table(raw, "fixed", where).items()}  # fmt: skip
    fixed = _check_fixed({**fixed_raw, **fixed_over}, config_cls, where)

    if "search" in raw:
        search = check_space(_table(raw, "search", where), hparams, f"[search] in {where}")
        both = sorted(set(search) & set(fixed_raw))
        if both:
            raise UserError(f"hyperparameter '{both[0]}' is both [fixed] and [search] in {where}")
    else:
        search = check_space(plugin_cls.search_space, hparams, "search space")
    search = {k: d for k, d in search.items() if k not in fixed}
    if not search:
        raise UserError(f"nothing to search in {where}: every hyperparameter is fixed")

    objectives = _objectives(raw.get("objective", DEFAULT_OBJECTIVE), plugin_cls, where)
    bounded = [o for o in objectives if o.statistic != "mean"]
    if bounded and settings.replicates < 2:
        raise UserError(
            f"objective {bounded[0].metric} in {where} takes statistic {bounded[0].statistic!r}, "
            f"which needs replicates: set replicates >= 2 in [settings] (it is "
            f"{settings.replicates})"
        )
    sampler = parse_algorithm(raw.get("sampler"), "sampler", "tpe")
    pruner = parse_algorithm(raw.get("pruner"), "pruner", "none")
    check_algorithms(sampler, pruner, len(objectives))

    spec = StudySpec(
        name=study_name, plugin=plugin_name, settings=settings,
        estimator_options=estimator_options, fixed=fixed, search=search,
        objectives=objectives, sampler=sampler, pruner=pruner, n_trials=1, timeout=None,
        path=path, text=text, description=description, figures=figures,
        overrides=dict(overrides),
    )  # fmt: skip
    points = spec.grid()
    grid_size = None if points is None else math.prod(len(v) for v in points.values())
    budget = n_trials if n_trials is not None else raw.get("n_trials", grid_size)
    if budget is None:
        raise UserError(f"'n_trials' in {where} is missing: give the number of trials")
    _check_int("n_trials", budget, 1, MAX_TRIALS, where)
    if grid_size is not None and budget > grid_size:
        raise UserError(f"n_trials {budget} exceeds the {grid_size} points of the grid in {where}")
    seconds = timeout if timeout is not None else raw.get("timeout")
    if seconds is not None and (
        isinstance(seconds, bool) or not isinstance(seconds, int | float) or not seconds > 0
    ):
        raise UserError(f"invalid timeout {seconds!r} in {where}: valid is a number of seconds > 0")
    return replace(spec, n_trials=budget, timeout=None if seconds is None else float(seconds))


def _table(raw: Mapping[str, Any], key: str, where: str) -> dict[str, Any]:
    value = raw.get(key, {})
    if not isinstance(value, Mapping):
        raise UserError(f"[{key}] in {where} must be a table")
    return dict(value)


def _estimator_options(
    raw: Mapping[str, Any], over: Mapping[str, Mapping[str, Any]], settings: RunSettings,
    where: str,
) -> dict[str, dict[str, str]]:  # fmt: skip
    """Every option of every estimator of the study, as text: the ``[estimator.NAME]`` tables
    with the ``--set NAME.OPTION`` values over them, checked by the estimators."""
    tables = _table(raw, "estimator", where)
    for name, table in tables.items():
        if not isinstance(table, Mapping):
            raise UserError(f"[estimator.{name}] in {where} must be a table of options")
    merged = {name: {**tables.get(name, {}), **over.get(name, {})} for name in {*tables, *over}}
    try:
        return resolve_estimators(settings.mi, merged).options()
    except UserError as exc:
        raise UserError(f"{where}: {exc}") from None


def _check_fixed(fixed: dict[str, Any], config_cls: type, where: str) -> dict[str, Any]:
    """Typed values of the fixed hyperparameters, validated by the plugin's config."""
    try:
        config = parse_config(config_cls, fixed)
    except UserError as exc:
        raise UserError(f"[fixed] in {where}: {exc}") from None
    return {key: getattr(config, key) for key in fixed}


def _objectives(raw: Any, plugin_cls: Any, where: str) -> tuple[Objective, ...]:
    """The objectives: the engine's metrics, a layer key (``mi_xt/<layer>``,
    ``mi_xt.renyi/<layer>``, ...), or one of the plugin's own."""
    items = raw if isinstance(raw, list) else [raw]
    named = (*EPOCH_METRICS, *plugin_cls.epoch_metrics)
    out = []
    for item in items:
        if not isinstance(item, Mapping) or set(item) - {"metric", "direction", "statistic"}:
            raise UserError(
                f"[objective] in {where} takes only 'metric', 'direction' and 'statistic'"
            )
        metric, direction = item.get("metric"), item.get("direction", "maximize")
        statistic = item.get("statistic", "mean")
        if not isinstance(metric, str) or not (metric in named or LAYER_KEY.fullmatch(metric)):
            raise UserError(
                f"invalid objective metric {metric!r} in {where}: valid are "
                f"{choices_text(named)} or <measure>/<layer> with measure one of "
                f"{choices_text((*MI_QUANTITIES, *CKA_MEASURES))}, optionally .<estimator>"
            )
        if direction not in DIRECTIONS:
            raise UserError(
                f"invalid direction {direction!r} of objective {metric} in {where}: valid are "
                f"{choices_text(DIRECTIONS)}"
            )
        if statistic not in STATISTICS:
            raise UserError(
                f"invalid statistic {statistic!r} of objective {metric} in {where}: valid are "
                f"{choices_text(STATISTICS)}"
            )
        out.append(Objective(metric, direction, statistic))
    if not out or len({o.metric for o in out}) != len(out):
        raise UserError(f"[objective] in {where} needs distinct metrics, at least one")
    return tuple(out)


def _check_int(key: str, value: Any, low: int, high: int, where: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise UserError(f"invalid {key} {value!r} in {where}: valid is an integer {low}..{high}")
