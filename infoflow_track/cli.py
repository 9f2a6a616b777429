"""The ``infoflow`` command: parses, calls the library, prints, exits. No logic of its own.

User errors print one line and exit 2. Nothing heavy (torch, mlflow, optuna) is imported at
module level, so ``infoflow --help`` stays fast.
"""

from __future__ import annotations

import functools
import inspect
import os
import shlex
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

try:  # typer 0.2x vendors its own Click: its usage errors are these
    from typer._click import exceptions as click_errors
except ImportError:  # an older typer on the installed Click
    from click import exceptions as click_errors

from infoflow_track.errors import UserError
from infoflow_track.study.storage import HEARTBEAT_S
from infoflow_track.uris import mask_credentials


class _UsageLine(click_errors.ClickException):
    """A usage error shown as every other error is: one line, exit status 2."""

    exit_code = 2

    def show(self, file: Any = None) -> None:
        typer.echo(f"error: {' '.join(self.format_message().split())}", err=True)


class _OneLineUsageErrors(TyperGroup):
    """Click's usage errors (``--epochs abc``, ``--workers 0``, a missing argument) as one
    line instead of its usage block; ``infoflow`` alone still prints the help."""

    def make_context(self, *args: Any, **kwargs: Any) -> Any:
        with _one_line_usage():
            return super().make_context(*args, **kwargs)

    def invoke(self, ctx: Any) -> Any:
        with _one_line_usage():
            return super().invoke(ctx)


@contextmanager
def _one_line_usage() -> Iterator[None]:
    try:
        yield
    except click_errors.NoArgsIsHelpError:
        raise
    except click_errors.UsageError as exc:
        raise _UsageLine(exc.format_message()) from None


app = typer.Typer(
    help="Study how information flows through neural networks while they learn.",
    cls=_OneLineUsageErrors,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,  # plain usage errors, no boxes
)
plugins_app = typer.Typer(
    help="List and inspect experiment plugins.", no_args_is_help=True, rich_markup_mode=None
)
app.add_typer(plugins_app, name="plugins")
estimators_app = typer.Typer(
    help="List and inspect MI estimators.", no_args_is_help=True, rich_markup_mode=None
)
app.add_typer(estimators_app, name="estimators")


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn a UserError into one line on stderr and exit status 2."""
    try:
        yield
    except UserError as exc:
        typer.echo(f"error: {mask_credentials(str(exc))}", err=True)
        raise typer.Exit(UserError.exit_code) from None


TrackingUriOption = Annotated[
    str | None, typer.Option(help="MLflow store (default: $MLFLOW_TRACKING_URI or mlruns/)")
]
DataDirOption = Annotated[
    Path | None,
    typer.Option(
        help="directory of the mnist, fashion-mnist and cifar10 files (default: "
        "$INFOFLOW_DATA_DIR, else $XDG_CACHE_HOME/infoflow/data or ~/.cache/infoflow/data); "
        "sets INFOFLOW_DATA_DIR for this command, so spawned study workers use it too"
    ),
]
DownloadOption = Annotated[
    bool,
    typer.Option(
        "--download",
        help="download missing dataset files into the data directory (needs internet "
        "access); sets INFOFLOW_DOWNLOAD=1 for this command, so study workers do too",
    ),
]


def _use_data_options(data_dir: Path | None, download: bool) -> None:
    """Put --data-dir and --download in os.environ, where the dataset loaders read them: spawned
    study workers inherit the environment."""
    from infoflow_track.vision import DATA_DIR_ENV, DOWNLOAD_ENV

    if data_dir is not None:
        os.environ[DATA_DIR_ENV] = str(data_dir.expanduser().resolve())
    if download:
        os.environ[DOWNLOAD_ENV] = "1"


@app.callback()
def select_plugins(
    plugin: Annotated[
        list[str] | None,
        typer.Option(
            "--plugin",
            "-p",
            metavar="MODULE:CLASS",
            help="also load this plugin class, e.g. my_rule.plugin:MyRule, from an installed "
            "package, $PYTHONPATH or the working directory (repeatable; with "
            "INFOFLOW_DISABLE_PLUGIN_AUTOLOAD=1 the only plugins are these); adds to "
            "$INFOFLOW_PLUGINS, so spawned study workers load it too",
        ),
    ] = None,
    disable_plugin: Annotated[
        list[str] | None,
        typer.Option(
            metavar="NAME",
            help="ignore the plugin NAME without importing it (repeatable); adds to "
            "$INFOFLOW_DISABLE_PLUGINS, so spawned study workers ignore it too",
        ),
    ] = None,
) -> None:
    """Study how information flows through neural networks while they learn."""
    from infoflow_track.registry import DISABLED_ENV, EXPLICIT_ENV, Selection, split_list

    for variable, values in ((EXPLICIT_ENV, plugin), (DISABLED_ENV, disable_plugin)):
        if values:
            os.environ[variable] = ",".join(split_list(os.environ.get(variable, "")) + values)
    with user_errors():
        Selection.from_env()  # a malformed value is a user error before any command runs


@plugins_app.command("list")
def plugins_list() -> None:
    """Every plugin with its package and version; broken ones with the reason, disabled ones
    marked."""
    from infoflow_track.plugin import PLUGIN_API_VERSION
    from infoflow_track.registry import AUTOLOAD_OFF_ENV, scan

    with user_errors():
        found = scan()
    if not found.selection.autoload:
        typer.echo(f"entry points not read (${AUTOLOAD_OFF_ENV} is set): --plugin classes only")
    if not found.usable and not found.disabled:
        typer.echo("no plugins registered (install infoflow-plugins or a third-party plugin)")
    for entry in found.usable.values():
        reason = entry.broken_reason()
        where = f"{entry.package} {entry.version}"
        if reason is None:
            summary = entry.load().summary + (" (--plugin)" if entry.explicit else "")
            typer.echo(f"{entry.name:<20} {where:<28} {summary}")
        else:
            typer.echo(f"{entry.name:<20} {where:<28} BROKEN: {reason}")
    for entry in found.disabled.values():
        where = f"{entry.package} {entry.version}"
        typer.echo(f"{entry.name:<20} {where:<28} DISABLED (--disable-plugin)")
    unmatched = sorted(found.selection.disabled - set(found.disabled))
    if unmatched:
        typer.echo(f"disabled but not registered: {', '.join(unmatched)}")
    major = PLUGIN_API_VERSION.split(".")[0]
    typer.echo(f"(plugin API {PLUGIN_API_VERSION}: plugins declaring {major}.0 to it load)")


@plugins_app.command("new")
def plugins_new(
    name: Annotated[str, typer.Argument(help="plugin name: lowercase letters, digits, dashes")],
    dir_: Annotated[
        Path | None,
        typer.Option("--dir", help="the package's folder, new or empty [default: ./infoflow-NAME]"),
    ] = None,
) -> None:
    """Write a ready-to-install plugin package: pyproject with the entry point, a plugin
    module, tests using the conformance kit, a study spec and a README."""
    from infoflow_track.scaffold import LAYOUT, write_package

    with user_errors():
        names, root = write_package(name, dir_)
    typer.echo(f"wrote plugin '{names.name}' as package {names.dist} in {root}:")
    for target in LAYOUT.values():
        typer.echo(f"  {target.format(module=names.module, name=names.name)}")
    where = shlex.quote(str(root))
    typer.echo(
        f"next:\n  pip install -e {where}'[test]'\n  (cd {where} && pytest)\n"
        f"  infoflow plugins list\n  infoflow run {names.name} --epochs 5\n"
        f"  infoflow study {shlex.quote(str(root / 'studies' / (names.name + '.toml')))}"
    )


@plugins_app.command("show")
def plugins_show(name: Annotated[str, typer.Argument(help="plugin name")]) -> None:
    """A plugin's hyperparameters (type, default, valid range, help) and search space."""
    from infoflow_track.hparams import format_value, specs
    from infoflow_track.registry import get_entry

    with user_errors():
        entry = get_entry(name)
        cls = entry.load()
    typer.echo(f"{entry.name} — {cls.summary}\npackage: {entry.package} {entry.version}, "
               f"class {entry.target}, plugin API {cls.api_version}\n")  # fmt: skip
    typer.echo("hyperparameters (--set key=value):")
    for spec in specs(cls.Config).values():
        default = format_value(spec.default)
        row = f"  {spec.name:<16} {spec.type_name:<14} default {default:<14} {spec.valid_text}"
        typer.echo(row)
        if spec.help:
            typer.echo(f"  {'':<16} {spec.help}")
    if cls.search_space:
        typer.echo("\ndefault search space:")
        for key, dist in cls.search_space.items():
            typer.echo(f"  {key:<16} {dict(dist)}")


@estimators_app.command("list")
def estimators_list() -> None:
    """Every MI estimator with its package and version; broken ones with the reason."""
    from infoflow_track.estimators import ESTIMATOR_API_VERSION, ESTIMATORS
    from infoflow_track.registry import scan
    from infoflow_track.settings import DEFAULT_ESTIMATORS

    with user_errors():
        found = scan(kind=ESTIMATORS)
    for entry in found.usable.values():
        reason = entry.broken_reason()
        where = f"{entry.package} {entry.version}"
        state = entry.load().summary if reason is None else f"BROKEN: {reason}"
        typer.echo(f"{entry.name:<18} {where:<28} {state}")
    for entry in found.disabled.values():
        typer.echo(f"{entry.name:<18} {entry.package + ' ' + entry.version:<28} DISABLED")
    typer.echo(f"(default --mi {','.join(DEFAULT_ESTIMATORS)}; estimator API "
               f"{ESTIMATOR_API_VERSION}; options: infoflow estimators show NAME)")  # fmt: skip


@estimators_app.command("show")
def estimators_show(name: Annotated[str, typer.Argument(help="estimator name")]) -> None:
    """An estimator's options (type, default, valid values, help) and what it measures."""
    from infoflow_track.estimators import ESTIMATORS, option_rows
    from infoflow_track.registry import get_entry

    with user_errors():
        entry = get_entry(name, ESTIMATORS)
        cls = entry.load()
    typer.echo(f"{entry.name} — {cls.summary}\npackage: {entry.package} {entry.version}, "
               f"class {entry.target}, estimator API {cls.api_version}\n")  # fmt: skip
    typer.echo(inspect.cleandoc(cls.__doc__ or "") + "\n")
    typer.echo(f"options (--set {entry.name}.OPTION=VALUE, or [estimator.{entry.name}] in a spec):")
    for option, type_name, default, valid, help_text in option_rows(cls):
        typer.echo(f"  {option:<12} {type_name:<16} default {default:<10} {valid}")
        if help_text:
            typer.echo(f"  {'':<12} {help_text}")
    if cls.extras:
        extra = cls.extras[0]
        typer.echo(f"also logs: {', '.join(cls.extras)} (mi_xt.{extra}/<layer> when primary, "
                   f"else mi_xt.{entry.name}.{extra}/<layer>; mi_ty likewise)")  # fmt: skip


@app.command("datasets")
def datasets(data_dir: DataDirOption = None, download: DownloadOption = False) -> None:
    """The datasets this machine can load, and for the others which files to put where."""
    from infoflow_track import data, vision

    _use_data_options(data_dir, download)
    with user_errors():  # a data directory that is a file, a malformed $INFOFLOW_DOWNLOAD
        fetch = "--download fetches missing files"
        if vision.download_requested():
            fetch = "missing files are downloaded on first use"
        where = vision.data_dir()
    typer.echo(f"data directory: {where} (--data-dir; {fetch})")
    for source in data.SOURCES.values():
        reason = source.default_unavailable_reason()
        state = "available" if reason is None else "unavailable"
        typer.echo(f"{source.name:<14} {state:<12} {source.summary}")
        for key, help_text in source.options.items():
            shown = key.upper() if key == source.argument else f"{key}=..."
            typer.echo(f"{'':<14} {source.name}:{shown}  {help_text}")
        if reason is not None:
            typer.echo(f"{'':<14} {reason}")


_SETTING_PREFIX = "setting_"


def with_setting_options(command: Callable[..., None]) -> Callable[..., None]:
    """Give a command one option per run setting (``--epochs``, ``--batch-size``, ...), made
    from the declaration of :class:`~infoflow_track.settings.RunSettings`: its help, default
    and valid values. The command gets the ones given as ``settings: {name: text}``."""
    from infoflow_track.hparams import format_value, specs
    from infoflow_track.settings import RunSettings

    own = inspect.signature(command, eval_str=True)
    params = [p for p in own.parameters.values() if p.name != "settings"]
    for spec in specs(RunSettings).values():
        default = format_value(spec.default, spec.none)
        option = typer.Option(
            f"--{spec.name.replace('_', '-')}",
            show_default=False,
            metavar=spec.type_name.upper().replace(" ", "-"),
            help=f"{spec.help} [default: {default}; valid: {spec.valid_text}]",
        )
        kind, annotation = inspect.Parameter.KEYWORD_ONLY, Annotated[str | None, option]
        params.append(inspect.Parameter(_SETTING_PREFIX + spec.name, kind, default=None,
                                        annotation=annotation))  # fmt: skip

    @functools.wraps(command)
    def wrapper(**kwargs: Any) -> None:
        given = {k.removeprefix(_SETTING_PREFIX): v for k, v in kwargs.items()
                 if k.startswith(_SETTING_PREFIX) and v is not None}  # fmt: skip
        rest = {k: v for k, v in kwargs.items() if not k.startswith(_SETTING_PREFIX)}
        command(settings=given, **rest)

    wrapper.__signature__ = own.replace(parameters=params)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in params}
    del wrapper.__wrapped__  # Typer reads the signature above, not the command's
    return wrapper


SetOption = Annotated[
    list[str] | None,
    typer.Option(
        "--set", "-s",
        help="hyperparameter, run setting or estimator option (ESTIMATOR.OPTION) key=value, "
        "repeatable",
    ),
]  # fmt: skip


@app.command("run")
@with_setting_options
def run(
    plugin: Annotated[str, typer.Argument(help="plugin name (see `infoflow plugins list`)")],
    set_: SetOption = None,
    data_dir: DataDirOption = None,
    download: DownloadOption = False,
    experiment: Annotated[
        str | None, typer.Option(help="MLflow experiment (default: the plugin name)")
    ] = None,
    run_name: Annotated[
        str | None, typer.Option(help="MLflow run name (default: plugin, changed params, seed)")
    ] = None,
    tracking_uri: TrackingUriOption = None,
    every_epoch: Annotated[
        bool, typer.Option("--measures-every-epoch", help="print the layer measures each epoch")
    ] = False,
    settings: dict[str, str] | None = None,
) -> None:
    """Train one plugin once and record the run in MLflow."""
    from infoflow_track.experiment import experiment_name, plan_from
    from infoflow_track.hparams import merge_assignments, parse_assignments
    from infoflow_track.tracking import resolve_tracking_uri

    _use_data_options(data_dir, download)
    with user_errors():
        plan = plan_from(plugin, merge_assignments(settings or {}, parse_assignments(set_ or [])))
        experiment = experiment_name(experiment, plan)
        uri = resolve_tracking_uri(tracking_uri)
    with _run_outcome(f"tracking store {mask_credentials(uri)}"):
        _run_plan(plan, uri, experiment, run_name, every_epoch)


def _run_plan(plan: Any, uri: str, experiment: str, run_name: str | None,
              every_epoch: bool = False) -> None:  # fmt: skip
    from rich.console import Console

    from infoflow_track.experiment import execute_run
    from infoflow_track.interrupt import StopRequest
    from infoflow_track.tracking import Tracker, resolve_tracking_uri

    with user_errors():
        tracker = Tracker(uri)
        tracker.experiment_id(experiment)
    typer.echo(
        f"{plan.entry.name} on {plan.data.name} ({plan.data.x_train.shape[0]} train, "
        f"{plan.data.x_test.shape[0]} test, {plan.data.num_classes} classes) on {plan.device}; "
        f"MI by {', '.join(e.describe() for e in plan.estimators.estimators)}"
        + (
            f"; {plan.settings.replicates} replicates, seeds {plan.settings.seed}.."
            f"{plan.settings.seed + plan.settings.replicates - 1}"
            if plan.settings.replicates > 1
            else ""
        )
    )
    stop = StopRequest()  # Ctrl-C ends the run at an epoch end, a second one at once
    with stop.installed(), _epoch_progress(plan.total_epochs, every_epoch) as listener:
        result = execute_run(plan, tracker, experiment=experiment, run_name=run_name,
                             listeners=[listener, stop.check])  # fmt: skip
    Console(width=200).print(measures_table(result.metrics, "layer measures, last epoch"))
    summary = _headline(result.metrics)
    ui_command = "infoflow ui"
    if tracker.uri != resolve_tracking_uri(None):
        ui_command += f" --tracking-uri {shlex.quote(tracker.shown)}"
    typer.echo(f"done: run {result.run_id}\n  {summary}\n  store: {tracker.shown}")
    url = tracker.run_url(result.run_id)
    if url is not None:
        typer.echo(f"  open: {url}")
    else:
        typer.echo(f"  open the MLflow UI with `{ui_command}` (http://127.0.0.1:5000)")
    for warning in result.warnings:
        typer.echo(f"warning: {warning}", err=True)


@contextmanager
def _run_outcome(
    stores: str, interrupted: str = "a started run is recorded as KILLED"
) -> Iterator[None]:
    """A diverged run and a full disk exit 1, Ctrl-C exits 130, each with one line."""
    from infoflow_track.engine import DivergedError
    from infoflow_track.tracking import is_disk_full

    try:
        yield
    except DivergedError as exc:
        typer.echo(f"failed: {exc}; the run is recorded as FAILED", err=True)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        typer.echo(f"interrupted: {interrupted}", err=True)
        raise typer.Exit(130) from None
    except Exception as exc:
        if not is_disk_full(exc):
            raise
        typer.echo(f"failed: disk full writing to {stores}; free space and "
                   "rerun: the next command that opens the experiment closes the runs this "
                   "one left RUNNING as FAILED", err=True)  # fmt: skip
        raise typer.Exit(1) from None


def _headline(metrics: dict[str, float]) -> str:
    """Accuracy and loss in one line (mean +- 95% half-width over replicates), and how many
    layer measures and plugin values follow."""
    from infoflow_track.names import LAYER_KEY
    from infoflow_track.replicates import SPREAD_PREFIXES

    means = {k: v for k, v in metrics.items() if not k.startswith(SPREAD_PREFIXES)}
    shown = [f"{k} {v:.4f}" + (f" +- {metrics[f'ci95/{k}']:.4f}" if f"ci95/{k}" in metrics else "")
             for k, v in means.items() if k.startswith(("acc/", "loss/"))]  # fmt: skip
    layer = sum(bool(LAYER_KEY.fullmatch(k)) for k in means)
    own = len(means) - len(shown) - layer
    counts = [f"+{layer} layer measures"] * bool(layer) + [f"+{own} plugin values"] * bool(own)
    return "  ".join(shown) + (f"  ({', '.join(counts)})" if counts else "")


def measures_table(metrics: dict[str, float], title: str) -> Any:
    """The layer measures of one epoch as a rich table: a row per layer, a column per
    quantity (``mi_xt``, ``mi_xt.kde``, ``cka_label``, ...), each the mean and, with
    replicates, ``±`` its 95% half-width; the ceilings, the same for every layer as a rule,
    in the caption."""
    from rich.table import Table

    from infoflow_track.names import LAYER_KEY

    cells: dict[str, dict[str, str]] = {}
    ceilings: dict[str, set[str]] = {}
    for key, value in metrics.items():
        found = LAYER_KEY.fullmatch(key)
        if found is None:
            continue
        spread = metrics.get(f"ci95/{key}")
        text = f"{value:.2f}" + (f"±{spread:.2f}" if spread is not None else "")
        quantity = found["quantity"] + found["qualifier"]
        if quantity.startswith("ceiling"):
            ceilings.setdefault(quantity, set()).add(f"{value:.2f}")
            continue
        cells.setdefault(found["layer"], {})[quantity] = text
    columns = list(dict.fromkeys(q for row in cells.values() for q in row))
    caption = "MI in bits; ceilings " + ", ".join(f"{q} {'/'.join(sorted(v))}"
                                            for q, v in ceilings.items())  # fmt: skip
    table = Table("layer", *columns, title=title, title_justify="left",
                  caption=caption if ceilings else None, caption_justify="left")  # fmt: skip
    for layer, row in cells.items():
        table.add_row(layer, *(row.get(q, "") for q in columns))
    return table


@contextmanager
def _epoch_progress(epochs: int, measures: bool = False) -> Iterator:
    """A rich progress bar over epochs, and a line of metrics per epoch (with ``measures``,
    the table of layer measures too)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    columns = ("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())  # fmt: skip
    with Progress(*columns, transient=True) as progress:
        task = progress.add_task("training", total=epochs)

        def listener(step: int, metrics: dict[str, float]) -> None:
            shown = _headline(metrics)
            progress.console.print(f"epoch {step:>3}  {shown}", soft_wrap=True)
            if measures:
                progress.console.print(measures_table(metrics, f"layer measures, epoch {step}"))
            progress.update(task, completed=min(step, epochs))

        yield listener


@app.command("study")
def study(
    target: Annotated[str, typer.Argument(help="study name (studies/NAME.toml) or spec path")],
    n_trials: Annotated[
        int | None, typer.Option(help="total finished trials wanted (default: the spec's)")
    ] = None,
    workers: Annotated[int, typer.Option(help="parallel worker processes", min=1, max=64)] = 1,
    storage: Annotated[
        str | None,
        typer.Option(help="Optuna storage: journal:PATH, sqlite:///PATH, postgresql://..."),
    ] = None,
    set_: SetOption = None,
    timeout: Annotated[
        float | None, typer.Option(help="seconds after which no new trial starts")
    ] = None,
    name: Annotated[str | None, typer.Option(help="study name (default: the spec's)")] = None,
    heartbeat: Annotated[
        int,
        typer.Option(
            help="seconds between a running trial's heartbeats; a trial silent for 5 of them "
            "is failed and retried (give every host the same)",
            min=1,
            max=3600,
        ),
    ] = HEARTBEAT_S,
    data_dir: DataDirOption = None,
    download: DownloadOption = False,
    tracking_uri: TrackingUriOption = None,
) -> None:
    """Run (or continue) an Optuna study: one MLflow parent run, a child run per trial.

    With a shared --storage, a study that exists there can be joined by its name alone on a
    host without the spec file: the spec travels with the study."""
    from infoflow_track.hparams import parse_assignments
    from infoflow_track.study.runner import check_runnable, recorded_spec
    from infoflow_track.study.spec import load_spec
    from infoflow_track.study.storage import resolve_storage
    from infoflow_track.tracking import default_store_dir, resolve_tracking_uri

    _use_data_options(data_dir, download)
    with user_errors():
        uri = resolve_tracking_uri(tracking_uri)
        ref = resolve_storage(storage, default_store_dir(uri), heartbeat)
        overrides = parse_assignments(set_ or [])
        try:
            spec = load_spec(target, overrides=overrides, n_trials=n_trials, timeout=timeout,
                             name=name)  # fmt: skip
        except UserError as missing:
            if not str(missing).startswith("unknown study") or overrides or name:
                raise
            ref.check()
            spec = recorded_spec(ref, target, n_trials=n_trials, timeout=timeout)
            if spec is None:
                raise missing from None
        check_runnable(spec)
        ref.check()  # a server storage answers before either store is written
    stores = f"tracking store {mask_credentials(uri)} or study storage {ref.shown}"
    interrupted = "the running trials are failed and queued again; rerun to continue"
    with _run_outcome(stores, interrupted):
        _run_spec(spec, ref, uri, workers)


def _run_spec(spec: Any, ref: Any, uri: str, workers: int) -> None:
    from infoflow_track.study.report import publish_report
    from infoflow_track.study.runner import open_study, run_study, tally
    from infoflow_track.tracking import Tracker

    with user_errors():
        tracker = Tracker(uri)
        opened = open_study(spec, ref, tracker)
    before = tally(opened.study)
    typer.echo(
        f"study {spec.name}: {spec.plugin} on {spec.settings.dataset}, {spec.n_trials} trials "
        f"({before.finished} finished before), sampler {spec.sampler.describe()}, pruner "
        f"{spec.pruner.describe()}, {workers} worker(s)\n  storage: {ref.shown}\n  open: "
        f"{_study_link(tracker, opened.parent_run_id)}"
    )
    counts = run_study(spec, ref, tracker, opened, workers=workers, echo=typer.echo)
    with user_errors():
        notes = publish_report(spec.name, opened.study, tracker, opened.parent_run_id)
    typer.echo(
        f"done: {counts.finished}/{spec.n_trials} finished ({counts.complete} complete, "
        f"{counts.pruned} pruned, {counts.failed} failed)\n  parent run {opened.parent_run_id} in "
        f"experiment '{spec.name}', store {tracker.shown}"
    )
    for note in notes:
        typer.echo(f"  {note}")
    if counts.finished < spec.n_trials:
        typer.echo("  the budget is not met yet (timeout or a stopped worker): rerun to continue")


def _study_link(tracker: Any, parent_run_id: str) -> str:
    """The study's runs table in the UI (objective and parameters in view), else its parent
    run's id."""
    table = tracker.runs_table_url(tracker.experiment_of(parent_run_id))
    return table or f"parent run {parent_run_id} (the trials are its child runs)"


@app.command("report")
def report(
    target: Annotated[str, typer.Argument(help="study name, or its spec file")],
    storage: Annotated[str | None, typer.Option(help="Optuna storage of the study")] = None,
    tracking_uri: TrackingUriOption = None,
) -> None:
    """A study's trials as a table, and its figures logged on the study's parent run."""
    from rich.console import Console
    from rich.table import Table

    from infoflow_track.study.report import (
        load_for_report,
        publish_report,
        study_name_of,
        table_data,
    )
    from infoflow_track.study.runner import best_text
    from infoflow_track.study.storage import resolve_storage
    from infoflow_track.tracking import default_store_dir, resolve_tracking_uri

    with user_errors():
        name = study_name_of(target)
        uri = resolve_tracking_uri(tracking_uri)
        ref = resolve_storage(storage, default_store_dir(uri))
        study, tracker, parent = load_for_report(name, ref, uri)
    header, rows = table_data(study, tracker)
    table = Table(*header, title=f"study {name} ({ref.shown})")
    for row in rows:
        table.add_row(*row)
    Console(width=max(120, 12 * len(header))).print(table)
    notes = publish_report(name, study, tracker, parent)
    typer.echo(f"best: {best_text(study)}\nfigures and trials.csv logged to parent run "
               f"{parent} (experiment '{name}', store {tracker.shown})")  # fmt: skip
    typer.echo(f"  open: {_study_link(tracker, parent)}")
    for note in notes:
        typer.echo(f"  {note}")


@app.command("compare")
def compare(
    run_ids: Annotated[list[str] | None, typer.Argument(help="MLflow run ids")] = None,
    experiment: Annotated[
        str | None, typer.Option(help="compare the experiment's finished runs (newest first)")
    ] = None,
    study: Annotated[
        str | None, typer.Option(help="compare a study's best complete trials")
    ] = None,
    storage: Annotated[str | None, typer.Option(help="Optuna storage of --study")] = None,
    estimator: Annotated[
        str | None, typer.Option(help="whose series to draw (default: each run's first)")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="also save the figure as this PNG")] = None,
    tracking_uri: TrackingUriOption = None,
) -> None:
    """Information planes of several runs side by side, a panel per layer, logged as
    compare/information_planes.png (on a study's parent run, else on a run of its own)."""
    from infoflow_track import compare as cmp
    from infoflow_track.tracking import Tracker, check_creatable, resolve_tracking_uri

    with user_errors():
        given = [bool(run_ids), experiment is not None, study is not None]
        if sum(given) != 1:
            raise UserError("give run ids, --experiment NAME or --study NAME (one of them)")
        if out is not None:
            if out.suffix.lower() != ".png":
                raise UserError(f"invalid --out {str(out)!r}: give a file name ending in .png")
            check_creatable(out, "--out")
        uri = resolve_tracking_uri(tracking_uri)
        parent = None
        if study is not None:
            ids, parent, tracker = _study_runs(study, storage, uri)
        else:
            tracker = Tracker(uri, create=False)
            if experiment:
                ids = cmp.experiment_runs(tracker, experiment)
            else:
                ids = list(run_ids)
                cmp.check_runs(tracker, ids)
        runs, notes = cmp.load_planes(tracker, ids[: cmp.MOST_RUNS], estimator)
        if not runs:
            raise UserError("none of the runs logged information-plane records: "
                            + "; ".join(notes or ["no finished runs"]))  # fmt: skip
    figure = cmp.draw(runs, f"{len(runs)} runs, {runs[0].estimator}")
    where = cmp.log_comparison(tracker, runs, figure, parent)
    if out is not None:
        out.expanduser().absolute().parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(out, dpi=120)
    typer.echo(f"compared {len(runs)} runs: {cmp.COMPARE_FIGURE} on {tracker.where(where)}"
               + (f", and {out}" if out is not None else ""))  # fmt: skip
    left = len(ids) - min(len(ids), cmp.MOST_RUNS)
    for note in notes + ([f"{left} more runs left out (at most {cmp.MOST_RUNS})"] * bool(left)):
        typer.echo(f"  left out: {note}")


def _study_runs(name: str, storage: str | None, uri: str) -> tuple[list[str], str, Any]:
    """(run ids of the study's best complete trials, its parent run id, its tracker)."""
    from infoflow_track.study.report import best_numbers, load_for_report, trial_rows
    from infoflow_track.study.storage import resolve_storage
    from infoflow_track.tracking import default_store_dir

    ref = resolve_storage(storage, default_store_dir(uri))
    found, tracker, parent = load_for_report(name, ref, uri)
    by_number = {row.number: row.run_id for row in trial_rows(found)}
    best = best_numbers(found)
    return [by_number[n] for n in best if by_number.get(n)], parent, tracker


@app.command("ui")
def ui(
    port: Annotated[int, typer.Option(help="port on 127.0.0.1", min=1, max=65535)] = 5000,
    tracking_uri: Annotated[str | None, typer.Option(help="MLflow store to serve")] = None,
    workers: Annotated[
        int, typer.Option(help="server worker processes (1 answers one user in seconds)", min=1)
    ] = 1,
) -> None:
    """Serve the MLflow UI for the store (default mlruns/) on http://127.0.0.1:PORT."""
    from infoflow_track.tracking import Tracker, check_port_free, ui_command

    with user_errors():
        check_port_free(port)
        tracker = Tracker(tracking_uri)  # validated, and created once if new
        cmd = ui_command(tracker.uri, port, workers)
    typer.echo(
        f"MLflow UI for {tracker.shown} at http://127.0.0.1:{port}/#/?workflowType="
        "machine_learning (model training; Ctrl-C to stop); "
        f"links in runs and trials: set INFOFLOW_UI_URL=http://127.0.0.1:{port}"
    )
    sys.stdout.flush()
    os.execv(cmd[0], cmd)


def main() -> None:
    app()
