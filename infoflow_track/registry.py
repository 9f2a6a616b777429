"""Plugin discovery: the ``infoflow.plugins`` entry points, plus classes named explicitly.

Find first, load later: :func:`scan` reads entry-point metadata only (name, target, package,
version) and imports nothing. :meth:`PluginEntry.load` imports one plugin and checks its
contract, its plugin API version first; a plugin that fails either is *broken*, with the
reason kept, while every other plugin keeps working. Two packages registering one name make
that name broken, naming both.

Three environment variables select plugins; the CLI's ``--plugin`` and ``--disable-plugin``
set them, so spawned study workers select the same plugins:

- ``INFOFLOW_DISABLE_PLUGIN_AUTOLOAD=1``: read no entry points at all;
- ``INFOFLOW_PLUGINS=module:Class,...``: load these classes too, imported while scanning
  (their names are only known from the class) from sys.path or else the working directory;
- ``INFOFLOW_DISABLE_PLUGINS=name,...``: ignore these plugins, never importing them.
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

from infoflow_track.errors import UserError, choices_text

ENTRY_POINT_GROUP = "infoflow.plugins"
AUTOLOAD_OFF_ENV = "INFOFLOW_DISABLE_PLUGIN_AUTOLOAD"
EXPLICIT_ENV = "INFOFLOW_PLUGINS"
DISABLED_ENV = "INFOFLOW_DISABLE_PLUGINS"
NAME_RE = re.compile(r"[a-z][a-z0-9]*(-[a-z0-9]+)*")
_TARGET_RE = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")
_API_RE = re.compile(r"(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)")
_METRIC_RE = re.compile(r"[A-Za-z0-9_.\-/]{1,250}")
#: The engine's and the probe's metrics (engine.EPOCH_METRICS, probe.LAYER_MEASURES) start so;
#: spelled out here because the registry must not import torch.
_FRAMEWORK_METRIC_PREFIXES = ("acc/", "loss/", "mi_xt/", "mi_ty/", "cka_label/", "cka_init/")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"", "0", "false", "no", "off"}


class PluginError(UserError):
    """A plugin that cannot be used: failed import, broken contract or duplicate name."""


class ContractError(TypeError):
    """A plugin class breaks the plugin contract; the message says how and what to do."""


@dataclass(frozen=True)
class Selection:
    """Which plugins to find: entry points or not, explicit classes, names switched off."""

    autoload: bool = True
    explicit: tuple[str, ...] = ()  # "module:Class" targets
    disabled: frozenset[str] = frozenset()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Selection:
        """Read the three variables; a malformed value is a UserError naming it."""
        off = environ.get(AUTOLOAD_OFF_ENV, "").strip().lower()
        if off not in _TRUE | _FALSE:
            raise UserError(
                f"{AUTOLOAD_OFF_ENV}={off!r}: valid are 1, true, yes, on (no entry points "
                "are read) or 0, false, no, off, empty"
            )
        explicit = _checked_list(environ, EXPLICIT_ENV, _TARGET_RE, "plugin class", "--plugin",
                                 "MODULE:CLASS, e.g. my_plugin.plugin:MyPlugin")  # fmt: skip
        disabled = _checked_list(environ, DISABLED_ENV, NAME_RE, "plugin name", "--disable-plugin",
                                 "a plugin name: lowercase letters, digits, dashes")  # fmt: skip
        return cls(off not in _TRUE, tuple(dict.fromkeys(explicit)), frozenset(disabled))


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
class PluginEntry:
    """One plugin, known from metadata; ``load()`` imports and checks it once."""

    name: str
    target: str  # "module:Class"
    package: str
    version: str
    explicit: bool = False  # named by --plugin / INFOFLOW_PLUGINS rather than an entry point
    conflict: str | None = None  # set when several packages register this name
    _loaded: Any = field(default=None, repr=False)
    _error: str | None = field(default=None, repr=False)

    def load(self) -> type:
        """The plugin class; raises :class:`PluginError` with the reason if it is broken."""
        if self._loaded is None and self._error is None:
            self._error = self.conflict
            if self._error is None:
                try:
                    cls = load_target(self.target)
                    check_contract(cls, self.name)
                    self._loaded = cls
                except (Exception, SystemExit) as exc:  # third-party code: any failure
                    self._error = failure_text(exc)
        if self._error is not None:
            raise PluginError(f"plugin '{self.name}' ({self.package}) is broken: {self._error}")
        return self._loaded

    def broken_reason(self) -> str | None:
        """None if the plugin loads and meets the contract, else why not."""
        try:
            self.load()
        except PluginError:
            return self._error
        return None


def load_target(target: str) -> Any:
    """Import ``module:Class`` and return the object it names."""
    return metadata.EntryPoint("", target, ENTRY_POINT_GROUP).load()


def failure_text(exc: BaseException) -> str:
    """Why a plugin is broken: a contract message as it is, any other error with its type."""
    return str(exc) if isinstance(exc, ContractError) else f"{type(exc).__name__}: {exc}"


@dataclass(frozen=True)
class Discovery:
    """The plugins found: usable (possibly broken) ones by name, and those switched off."""

    plugins: dict[str, PluginEntry]
    disabled: dict[str, PluginEntry]
    selection: Selection


def scan(selection: Selection | None = None) -> Discovery:
    """Find the plugins of ``selection`` (default: from the environment). Entry points are
    read as metadata only; explicit classes are imported to learn their names."""
    selection = Selection.from_env() if selection is None else selection
    found = _entry_point_entries() if selection.autoload else []
    if selection.explicit and os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())  # after installed packages, as a last resort
    found += [_explicit_entry(target) for target in selection.explicit]
    claims: dict[str, list[PluginEntry]] = {}
    seen: set[tuple[str, str, str]] = set()
    for entry in found:
        key = (entry.name, entry.target, entry.package)
        if key not in seen:  # a dist on sys.path twice, or a class both registered and named
            seen.add(key)
            claims.setdefault(entry.name, []).append(entry)
    plugins, disabled = {}, {}
    for name, entries in sorted(claims.items()):
        if name in selection.disabled:
            disabled[name] = entries[0]
            continue
        if len(entries) > 1:
            who = " and ".join(sorted(f"{e.package} ({e.target})" for e in entries))
            entries[0].conflict = f"duplicate plugin name '{name}' registered by {who}"
        plugins[name] = entries[0]
    return Discovery(plugins, disabled, selection)


def discover() -> dict[str, PluginEntry]:
    """Every plugin selected in this environment, by name (see :func:`scan`)."""
    return scan().plugins


def _entry_point_entries() -> list[PluginEntry]:
    entries = []
    for dist in metadata.distributions():
        package = dist.metadata["Name"] or "?"
        for ep in dist.entry_points:
            if ep.group == ENTRY_POINT_GROUP:
                entries.append(PluginEntry(ep.name, ep.value, package, dist.version))
    return entries


def _explicit_entry(target: str) -> PluginEntry:
    """The entry of an explicitly named class: named by its ``name`` attribute, or by the
    target itself when it cannot be imported (then it is broken with that reason)."""
    package, version = distribution_of(target.partition(":")[0])
    try:
        cls = load_target(target)
    except (Exception, SystemExit) as exc:
        entry = PluginEntry(target, target, package, version, explicit=True)
        entry._error = failure_text(exc)
        return entry
    name = getattr(cls, "name", None)
    return PluginEntry(name if isinstance(name, str) and name else target, target, package,
                       version, explicit=True)  # fmt: skip


def distribution_of(module: str) -> tuple[str, str]:
    """(package, version) of the installed distribution holding ``module``; for a module on
    the path that no distribution installed, its top-level name and version "unknown"."""
    top = module.partition(".")[0]
    for dist_name in metadata.packages_distributions().get(top, []):
        try:
            return metadata.metadata(dist_name)["Name"], metadata.version(dist_name)
        except metadata.PackageNotFoundError:
            continue
    return top, "unknown"


def get_entry(name: str) -> PluginEntry:
    """The entry of plugin ``name``, or :class:`UserError` saying why there is none."""
    found = scan()
    if name in found.plugins:
        return found.plugins[name]
    if name in found.disabled:
        raise UserError(
            f"plugin '{name}' is disabled (--disable-plugin or ${DISABLED_ENV}); selectable "
            f"are {choices_text(found.plugins)}"
        )
    hint = ""
    if not found.selection.autoload:
        hint = f" (entry points are not read: ${AUTOLOAD_OFF_ENV} is set; name its class with "
        hint += "--plugin MODULE:CLASS)"
    raise UserError(f"unknown plugin '{name}': registered are {choices_text(found.plugins)}{hint}")


def check_contract(cls: Any, entry_name: str) -> None:
    """Raise :class:`ContractError` naming the first way ``cls`` breaks the plugin contract."""
    from infoflow_track.plugin import Plugin

    if not (isinstance(cls, type) and issubclass(cls, Plugin)):
        raise ContractError(f"{cls!r} is not a subclass of infoflow_track.Plugin")
    check_api_version(cls)
    if not (isinstance(cls.name, str) and NAME_RE.fullmatch(cls.name)):
        raise ContractError(
            f"{cls.__name__}.name is {cls.name!r}: a plugin name is lowercase letters, digits "
            "and dashes, starting with a letter"
        )
    if cls.name != entry_name:
        raise ContractError(
            f"{cls.__name__}.name is {cls.name!r}, but its entry point registers it as "
            f"'{entry_name}': the two must be equal"
        )
    if not isinstance(cls.summary, str) or not cls.summary.strip() or "\n" in cls.summary:
        raise ContractError(f"{cls.__name__}.summary must be a non-empty one-line string")
    if cls.build is Plugin.build:
        raise ContractError(f"{cls.__name__} does not implement build(config, data)")
    fields = _check_config(cls)
    default_fit = cls.fit is Plugin.fit and cls.configure_optimizer is Plugin.configure_optimizer
    if default_fit and "lr" not in fields:
        raise ContractError(
            f"{cls.__name__}.Config has no 'lr' for the default optimizer: add it or "
            "override configure_optimizer"
        )
    _check_search_space(cls.search_space, fields)
    _check_epoch_metrics(cls)


def check_api_version(cls: Any) -> None:
    """The plugin's ``api_version`` "M.m" is one this infoflow-track provides: M equal to
    ours and m at most ours. Otherwise :class:`ContractError` says which side to upgrade."""
    from infoflow_track import __version__
    from infoflow_track.plugin import PLUGIN_API_VERSION

    ours = f"plugin API {PLUGIN_API_VERSION} (infoflow-track {__version__})"
    declared = cls.api_version
    if not declared:
        raise ContractError(
            f"{cls.__name__} declares no api_version: set api_version = "
            f'"{PLUGIN_API_VERSION}" if it is written for {ours}'
        )
    match = _API_RE.fullmatch(declared) if isinstance(declared, str) else None
    if match is None:
        raise ContractError(
            f'{cls.__name__}.api_version is {declared!r}: expected "MAJOR.MINOR" such as '
            f'"{PLUGIN_API_VERSION}"'
        )
    major, minor = int(match[1]), int(match[2])
    our_major, our_minor = (int(part) for part in PLUGIN_API_VERSION.split("."))
    if (major, minor) > (our_major, our_minor):
        advice = "upgrade infoflow-track"
    elif major < our_major:
        advice = f"update the plugin to plugin API {our_major}.x"
    else:
        return
    raise ContractError(
        f"incompatible plugin API: {cls.__name__} is written for plugin API {declared}, this is "
        f"{ours}, which loads {our_major}.0 to {PLUGIN_API_VERSION}: {advice}"
    )


def _check_epoch_metrics(cls: Any) -> None:
    """A plugin's own metric names are metric keys that no framework metric can take."""
    names = cls.epoch_metrics
    if not (isinstance(names, tuple) and all(isinstance(n, str) for n in names)):
        raise ContractError(f"{cls.__name__}.epoch_metrics must be a tuple of metric names")
    taken = ", ".join(_FRAMEWORK_METRIC_PREFIXES)
    for name in names:
        if not _METRIC_RE.fullmatch(name) or name.startswith(_FRAMEWORK_METRIC_PREFIXES):
            raise ContractError(
                f"{cls.__name__}.epoch_metrics: {name!r} is not a free metric name (1-250 of "
                f"letters, digits, '_-./', not starting with {taken})"
            )


def _check_config(cls: Any) -> dict[str, Any]:
    """Check ``cls.Config`` (frozen HParams dataclass, valid defaults); return its specs."""
    from infoflow_track.hparams import HParams, specs
    from infoflow_track.settings import RUN_SETTING_NAMES

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
    clash = sorted(set(fields) & RUN_SETTING_NAMES)
    if clash:
        raise ContractError(
            f"{cls.__name__}.Config field '{clash[0]}' has the name of a run setting; "
            f"rename it (run settings: {choices_text(sorted(RUN_SETTING_NAMES))})"
        )
    return fields


def _check_search_space(space: Any, fields: dict[str, Any]) -> None:
    """Every entry names a hyperparameter, has a known type, and stays in its valid range."""
    from infoflow_track.study.space import check_space

    try:
        check_space(space, fields, "search space")
    except UserError as exc:
        raise ContractError(str(exc)) from None
