"""Discovery of extensions: experiment plugins (``infoflow.plugins``) and MI estimators
(``infoflow.estimators``), each from entry points plus classes named explicitly.

Find first, load later: :func:`scan` reads entry-point metadata only (name, target, package,
version) and imports nothing; a process reads it once, and again only when sys.path or the
distributions on it change (:func:`path_state`). :meth:`Entry.load` imports one extension
and checks its contract, its API version first; one that fails either is *broken*, with the
reason kept, while every other keeps working. Two packages registering one name make that
name broken, naming both. An :class:`ExtensionKind` says which group, contract and variables
apply.

Three environment variables select the extensions of each kind; for plugins the CLI's
``--plugin`` and ``--disable-plugin`` set them, so spawned study workers select the same:

- ``INFOFLOW_DISABLE_PLUGIN_AUTOLOAD=1``: read no entry points at all;
- ``INFOFLOW_PLUGINS=module:Class,...``: load these classes too, imported while scanning
  (their names are only known from the class) from sys.path or else the working directory,
  which is not put on sys.path (:func:`import_from_cwd`);
- ``INFOFLOW_DISABLE_PLUGINS=name,...``: ignore these plugins, never importing them.

Estimators read ``INFOFLOW_DISABLE_ESTIMATOR_AUTOLOAD``, ``INFOFLOW_ESTIMATORS`` and
``INFOFLOW_DISABLE_ESTIMATORS`` the same way.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.machinery
import importlib.util
import os
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

from infoflow_track.envflags import env_flag
from infoflow_track.errors import UserError, choices_text
from infoflow_track.names import FRAMEWORK_METRIC_PREFIXES

NAME_RE = re.compile(r"[a-z][a-z0-9]*(-[a-z0-9]+)*")
_TARGET_RE = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")
_API_RE = re.compile(r"(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)")
_METRIC_RE = re.compile(r"[A-Za-z0-9_.\-/]{1,250}")


@dataclass(frozen=True)
class ExtensionKind:
    """One kind of extension: its entry-point group, its contract and its variables."""

    noun: str  # "plugin", "estimator": in messages
    group: str  # entry-point group
    check: Callable[[Any, str], None]  # (class, entry name) -> None or ContractError
    autoload_env: str
    explicit_env: str
    disabled_env: str
    explicit_option: str  # the CLI option (or variable) that names classes, for messages
    disabled_option: str
    listing: str  # the command that lists them, for messages


class PluginError(UserError):
    """An extension that cannot be used: failed import, broken contract or duplicate name."""


class ContractError(TypeError):
    """A class breaks its kind's contract; the message says how and what to do."""


def check_contract(cls: Any, entry_name: str) -> None:
    """Raise :class:`ContractError` naming the first way ``cls`` breaks the plugin contract."""
    from infoflow_track.plugin import PLUGIN_API_VERSION, Plugin

    check_identity(cls, entry_name, Plugin, "plugin", PLUGIN_API_VERSION)
    if cls.build is Plugin.build:
        raise ContractError(f"{cls.__name__} does not implement build(config, data)")
    fields = check_config(cls, reserved=_run_setting_names())
    default_fit = cls.fit is Plugin.fit and cls.configure_optimizer is Plugin.configure_optimizer
    if default_fit and "lr" not in fields:
        raise ContractError(
            f"{cls.__name__}.Config has no 'lr' for the default optimizer: add it or "
            "override configure_optimizer"
        )
    _check_search_space(cls.search_space, fields)
    _check_epoch_metrics(cls)


def _run_setting_names() -> frozenset[str]:
    from infoflow_track.settings import RUN_SETTING_NAMES

    return RUN_SETTING_NAMES


PLUGINS = ExtensionKind(
    noun="plugin", group="infoflow.plugins", check=check_contract,
    autoload_env="INFOFLOW_DISABLE_PLUGIN_AUTOLOAD", explicit_env="INFOFLOW_PLUGINS",
    disabled_env="INFOFLOW_DISABLE_PLUGINS", explicit_option="--plugin",
    disabled_option="--disable-plugin", listing="infoflow plugins list",
)  # fmt: skip
ENTRY_POINT_GROUP = PLUGINS.group
AUTOLOAD_OFF_ENV = PLUGINS.autoload_env
EXPLICIT_ENV = PLUGINS.explicit_env
DISABLED_ENV = PLUGINS.disabled_env


@dataclass(frozen=True)
class Selection:
    """Which extensions to find: entry points or not, explicit classes, names switched off."""

    autoload: bool = True
    explicit: tuple[str, ...] = ()  # "module:Class" targets
    disabled: frozenset[str] = frozenset()

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] = os.environ, kind: ExtensionKind = PLUGINS
    ) -> Selection:
        """Read the kind's three variables; a malformed value is a UserError naming it (the
        autoload variable is a boolean, read by :func:`~infoflow_track.envflags.env_flag`)."""
        off = env_flag(kind.autoload_env, environ)
        explicit = _checked_list(environ, kind.explicit_env, _TARGET_RE, f"{kind.noun} class",
                                 kind.explicit_option,
                                 "MODULE:CLASS, e.g. my_package.module:MyClass")  # fmt: skip
        valid_name = f"a {kind.noun} name: lowercase letters, digits, dashes"
        disabled = _checked_list(environ, kind.disabled_env, NAME_RE, f"{kind.noun} name",
                                 kind.disabled_option, valid_name)  # fmt: skip
        return cls(not off, tuple(dict.fromkeys(explicit)), frozenset(disabled))


def split_list(text: str) -> list[str]:
    """``"a, b,,c"`` -> ``["a", "b", "c"]``: the comma-separated lists of the variables."""
    return [item.strip() for item in text.split(",") if item.strip()]


def _checked_list(
    environ: Mapping[str, str], variable: str, pattern: re.Pattern, what: str, option: str,
    valid: str,
) -> list[str]:  # fmt: skip
    """The items of ``variable``; one not matching ``pattern`` is a UserError naming it."""
    items = split_list(environ.get(variable, ""))
    for item in items:
        if not pattern.fullmatch(item):
            raise UserError(f"{what} {item!r} ({option} or ${variable}) is not {valid}")
    return items


@dataclass
class Entry:
    """One extension, known from metadata; ``load()`` imports and checks it once."""

    name: str
    target: str  # "module:Class"
    package: str
    version: str
    explicit: bool = False  # named by --plugin / $INFOFLOW_PLUGINS rather than an entry point
    conflict: str | None = None  # set when several packages register this name
    kind: ExtensionKind = field(default=PLUGINS, repr=False)
    _loaded: Any = field(default=None, repr=False)
    _error: str | None = field(default=None, repr=False)

    def load(self) -> type:
        """The class; raises :class:`PluginError` with the reason if it is broken."""
        if self._loaded is None and self._error is None:
            self._error = self.conflict
            if self._error is None:
                try:
                    cls = load_target(self.target, from_cwd=self.explicit)
                    self.kind.check(cls, self.name)
                    self._loaded = cls
                except (Exception, SystemExit) as exc:  # third-party code: any failure
                    self._error = failure_text(exc)
        if self._error is not None:
            raise PluginError(
                f"{self.kind.noun} '{self.name}' ({self.package}) is broken: {self._error}"
            )
        return self._loaded

    def broken_reason(self) -> str | None:
        """None if the extension loads and meets its contract, else why not."""
        try:
            self.load()
        except PluginError:
            return self._error
        return None


def load_target(target: str, from_cwd: bool = False) -> Any:
    """Import ``module:Class`` and return the object it names. With ``from_cwd`` (a class
    named explicitly) a module that is not importable is looked for in the working directory,
    without putting that directory on sys.path (see :func:`import_from_cwd`)."""
    if not from_cwd:
        return metadata.EntryPoint("", target, "").load()
    module_name, _, attribute = target.partition(":")
    try:
        found = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name.partition(".")[0]:
            raise
        found = import_from_cwd(module_name, exc)
    for part in attribute.split("."):
        found = getattr(found, part)
    return found


def import_from_cwd(module_name: str, not_found: ModuleNotFoundError) -> Any:
    """Import ``module_name`` with its top-level package (or module) from the working
    directory, and the rest of its dotted name through that package's ``__path__``; raise
    ``not_found`` if the directory holds no such top level.

    sys.path stays as it was: a module planted in the working directory (a ``psutil.py``,
    say) is not run by another library's optional import. A module loaded so imports its
    siblings relatively or through its package, not as top-level modules of the directory.
    """
    top = module_name.partition(".")[0]
    spec = importlib.machinery.PathFinder.find_spec(top, [os.getcwd()])
    if spec is None:
        raise not_found
    module = importlib.util.module_from_spec(spec)
    sys.modules[top] = module
    try:
        if spec.loader is not None:  # None: a namespace package, nothing to run
            spec.loader.exec_module(module)
        return importlib.import_module(module_name)
    except BaseException:
        for name in [n for n in sys.modules if n == top or n.startswith(f"{top}.")]:
            del sys.modules[name]  # as a failed import leaves it: a later try starts afresh
        raise


def failure_text(exc: BaseException) -> str:
    """Why an extension is broken: a contract message as it is, any other error with its type."""
    return str(exc) if isinstance(exc, ContractError) else f"{type(exc).__name__}: {exc}"


@dataclass(frozen=True)
class Discovery:
    """The extensions found: usable (possibly broken) ones by name, and those switched off."""

    usable: dict[str, Entry]
    disabled: dict[str, Entry]
    selection: Selection


def scan(selection: Selection | None = None, kind: ExtensionKind = PLUGINS) -> Discovery:
    """Find the extensions of ``kind`` in ``selection`` (default: from the environment). Entry
    points are read as metadata only; explicit classes are imported to learn their names."""
    selection = Selection.from_env(kind=kind) if selection is None else selection
    found = _entry_points_of(kind) if selection.autoload else []
    found += [_explicit_entry(target, kind) for target in selection.explicit]
    claims: dict[str, list[Entry]] = {}
    seen: set[tuple[str, str, str]] = set()
    for entry in found:
        key = (entry.name, entry.target, entry.package)
        if key not in seen:  # a dist on sys.path twice, or a class both registered and named
            seen.add(key)
            claims.setdefault(entry.name, []).append(entry)
    usable, disabled = {}, {}
    for name, entries in sorted(claims.items()):
        if name in selection.disabled:
            disabled[name] = entries[0]
            continue
        if len(entries) > 1:
            who = " and ".join(sorted(f"{e.package} ({e.target})" for e in entries))
            entries[0].conflict = f"duplicate {kind.noun} name '{name}' registered by {who}"
        usable[name] = entries[0]
    return Discovery(usable, disabled, selection)


def discover(kind: ExtensionKind = PLUGINS) -> dict[str, Entry]:
    """Every extension of ``kind`` selected in this environment, by name (see :func:`scan`)."""
    return scan(kind=kind).usable


#: The last reading of each entry-point group and of the top-level modules' distributions,
#: with the :func:`path_state` it was read under: a process (a study worker running trial
#: after trial) reads the metadata again only when what it depends on has changed.
_ENTRY_POINTS: dict[str, tuple[tuple, list[Entry]]] = {}
_PACKAGES: list[tuple[tuple, Mapping[str, list[str]]]] = []
_METADATA_SUFFIXES = (".dist-info", ".egg-info", ".egg")


def path_state() -> tuple:
    """What importlib.metadata finds distributions from: every sys.path entry (absolute) with
    the metadata directories in it and their modification times. Planting or installing a
    distribution, or changing sys.path, changes it; a stat per distribution is far cheaper
    than reading every distribution's metadata."""
    state = []
    for entry in sys.path:
        path = os.path.abspath(entry or os.curdir)
        try:
            with os.scandir(path) as found:
                names = sorted((item.name, item.stat().st_mtime_ns) for item in found
                               if item.name.endswith(_METADATA_SUFFIXES))  # fmt: skip
            state.append((path, tuple(names)))
        except NotADirectoryError:  # a zip archive
            state.append((path, os.stat(path).st_mtime_ns))
        except OSError:  # missing or unreadable: nothing found there
            state.append((path, None))
    return tuple(state)


def _entry_points_of(kind: ExtensionKind) -> list[Entry]:
    """Fresh entries of the kind's entry points, read again only if :func:`path_state` has
    changed since the last reading (the selection is applied afresh by each scan)."""
    state = path_state()  # before reading: a change while reading shows at the next scan
    cached = _ENTRY_POINTS.get(kind.group)
    if cached is None or cached[0] != state:
        cached = _ENTRY_POINTS[kind.group] = (state, _entry_point_entries(kind))
    return [dataclasses.replace(entry, kind=kind) for entry in cached[1]]  # unloaded copies


def _packages_distributions() -> Mapping[str, list[str]]:
    """:func:`importlib.metadata.packages_distributions`, read again only if
    :func:`path_state` has changed."""
    state = path_state()
    if not _PACKAGES or _PACKAGES[0][0] != state:
        _PACKAGES[:] = [(state, metadata.packages_distributions())]
    return _PACKAGES[0][1]


def _entry_point_entries(kind: ExtensionKind) -> list[Entry]:
    """Read the entry points of the kind's group from every distribution's metadata."""
    entries = []
    for dist in metadata.distributions():
        package = dist.metadata["Name"] or "?"
        for ep in dist.entry_points:
            if ep.group == kind.group:
                entries.append(Entry(ep.name, ep.value, package, dist.version, kind=kind))
    return entries


def _explicit_entry(target: str, kind: ExtensionKind) -> Entry:
    """The entry of an explicitly named class: named by its ``name`` attribute, or by the
    target itself when it cannot be imported (then it is broken with that reason)."""
    package, version = distribution_of(target.partition(":")[0])
    try:
        cls = load_target(target, from_cwd=True)
    except (Exception, SystemExit) as exc:
        entry = Entry(target, target, package, version, explicit=True, kind=kind)
        entry._error = failure_text(exc)
        return entry
    name = getattr(cls, "name", None)
    return Entry(name if isinstance(name, str) and name else target, target, package,
                 version, explicit=True, kind=kind)  # fmt: skip


def distribution_of(module: str) -> tuple[str, str]:
    """(package, version) of the installed distribution holding ``module``; for a module on
    the path that no distribution installed, its top-level name and version "unknown"."""
    top = module.partition(".")[0]
    for dist_name in _packages_distributions().get(top, []):
        try:
            return metadata.metadata(dist_name)["Name"], metadata.version(dist_name)
        except metadata.PackageNotFoundError:
            continue
    return top, "unknown"


def get_entry(name: str, kind: ExtensionKind = PLUGINS) -> Entry:
    """The entry of ``name`` of ``kind``, or :class:`UserError` saying why there is none."""
    found = scan(kind=kind)
    if name in found.usable:
        return found.usable[name]
    if name in found.disabled:
        raise UserError(
            f"{kind.noun} '{name}' is disabled ({kind.disabled_option} or "
            f"${kind.disabled_env}); selectable are {choices_text(found.usable)}"
        )
    hint = ""
    if not found.selection.autoload:
        hint = f" (entry points are not read: ${kind.autoload_env} is set; name its class with "
        hint += f"{kind.explicit_option} MODULE:CLASS)"
    raise UserError(
        f"unknown {kind.noun} '{name}': registered are {choices_text(found.usable)}{hint}"
    )


def check_identity(cls: Any, entry_name: str, base: type, noun: str, api: str) -> None:
    """The checks every kind shares: a subclass of ``base``, an API version this package
    provides (``api``), a valid name equal to the entry's, a one-line summary."""
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise ContractError(f"{cls!r} is not a subclass of infoflow_track.{base.__name__}")
    check_api_version(cls, noun, api)
    if not (isinstance(cls.name, str) and NAME_RE.fullmatch(cls.name)):
        raise ContractError(
            f"{cls.__name__}.name is {cls.name!r}: a {noun} name is lowercase letters, digits "
            "and dashes, starting with a letter"
        )
    if cls.name != entry_name:
        raise ContractError(
            f"{cls.__name__}.name is {cls.name!r}, but its entry point registers it as "
            f"'{entry_name}': the two must be equal"
        )
    if not isinstance(cls.summary, str) or not cls.summary.strip() or "\n" in cls.summary:
        raise ContractError(f"{cls.__name__}.summary must be a non-empty one-line string")


def check_api_version(cls: Any, noun: str = "plugin", api: str | None = None) -> None:
    """The class's ``api_version`` "M.m" is one this infoflow-track provides (``api``, the
    plugin API by default): M equal to ours and m at most ours. Otherwise
    :class:`ContractError` says which side to upgrade."""
    from infoflow_track import __version__
    from infoflow_track.plugin import PLUGIN_API_VERSION

    api = PLUGIN_API_VERSION if api is None else api
    ours = f"{noun} API {api} (infoflow-track {__version__})"
    declared = cls.api_version
    if not declared:
        raise ContractError(
            f'{cls.__name__} declares no api_version: set api_version = "{api}" if it is '
            f"written for {ours}"
        )
    match = _API_RE.fullmatch(declared) if isinstance(declared, str) else None
    if match is None:
        raise ContractError(
            f'{cls.__name__}.api_version is {declared!r}: expected "MAJOR.MINOR" such as "{api}"'
        )
    major, minor = int(match[1]), int(match[2])
    our_major, our_minor = (int(part) for part in api.split("."))
    if (major, minor) > (our_major, our_minor):
        advice = "upgrade infoflow-track"
    elif major < our_major:
        advice = f"update the {noun} to {noun} API {our_major}.x"
    else:
        return
    raise ContractError(
        f"incompatible {noun} API: {cls.__name__} is written for {noun} API {declared}, this "
        f"is {ours}, which loads {our_major}.0 to {api}: {advice}"
    )


def _check_epoch_metrics(cls: Any) -> None:
    """A plugin's own metric names are metric keys that no framework metric can take."""
    names = cls.epoch_metrics
    if not (isinstance(names, tuple) and all(isinstance(n, str) for n in names)):
        raise ContractError(f"{cls.__name__}.epoch_metrics must be a tuple of metric names")
    taken = ", ".join(FRAMEWORK_METRIC_PREFIXES)
    for name in names:
        if not _METRIC_RE.fullmatch(name) or name.startswith(FRAMEWORK_METRIC_PREFIXES):
            raise ContractError(
                f"{cls.__name__}.epoch_metrics: {name!r} is not a free metric name (1-250 of "
                f"letters, digits, '_-./', not starting with {taken})"
            )


def check_config(cls: Any, reserved: frozenset[str] = frozenset()) -> dict[str, Any]:
    """Check ``cls.Config`` (frozen HParams dataclass, valid defaults, no field named as one
    of ``reserved``); return its specs."""
    from infoflow_track.hparams import HParams, specs

    config = getattr(cls, "Config", None)
    if not (dataclasses.is_dataclass(config) and isinstance(config, type)):
        raise ContractError(f"{cls.__name__}.Config must be a dataclass")
    if not (issubclass(config, HParams) and config.__dataclass_params__.frozen):
        raise ContractError(
            f"{cls.__name__}.Config must be a frozen dataclass deriving from HParams"
        )
    try:
        config()  # every field has a supported type and a valid default, or this raises
        fields = specs(config)
    except (TypeError, UserError) as exc:
        raise ContractError(f"{cls.__name__}.Config: {exc}") from None
    clash = sorted(set(fields) & reserved)
    if clash:
        raise ContractError(
            f"{cls.__name__}.Config field '{clash[0]}' has the name of a run setting; "
            f"rename it (run settings: {choices_text(sorted(reserved))})"
        )
    return fields


def _check_search_space(space: Any, fields: dict[str, Any]) -> None:
    """Every entry names a hyperparameter, has a known type, and stays in its valid range."""
    from infoflow_track.study.space import check_space

    try:
        check_space(space, fields, "search space")
    except UserError as exc:
        raise ContractError(str(exc)) from None
