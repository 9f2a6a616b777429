"""Plugin discovery through the ``infoflow.plugins`` entry-point group.

Find first, load later: :func:`discover` reads entry-point metadata only (name, target,
package, version) and imports nothing. :meth:`PluginEntry.load` imports one plugin and checks
its contract; a plugin that fails either is *broken*, with the reason kept, while every other
plugin keeps working. Two packages registering one name make that name broken, naming both.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

from infoflow_track.errors import UserError, choices_text

ENTRY_POINT_GROUP = "infoflow.plugins"
_NAME_RE = re.compile(r"[a-z][a-z0-9]*(-[a-z0-9]+)*")
_METRIC_RE = re.compile(r"[A-Za-z0-9_.\-/]{1,250}")
#: The engine's and the probe's metrics (engine.EPOCH_METRICS, probe.LAYER_MEASURES) start so;
#: spelled out here because the registry must not import torch.
_FRAMEWORK_METRIC_PREFIXES = ("acc/", "loss/", "mi_xt/", "mi_ty/", "cka_label/", "cka_init/")


class PluginError(UserError):
    """A plugin that cannot be used: failed import, broken contract or duplicate name."""


@dataclass
class PluginEntry:
    """One registered plugin, known from metadata; ``load()`` imports and checks it once."""

    name: str
    target: str  # "module:Class"
    package: str
    version: str
    conflict: str | None = None  # set when several packages register this name
    _loaded: Any = field(default=None, repr=False)
    _error: str | None = field(default=None, repr=False)

    def load(self) -> type:
        """The plugin class; raises :class:`PluginError` with the reason if it is broken."""
        if self._loaded is None and self._error is None:
            self._error = self.conflict
            if self._error is None:
                try:
                    cls = metadata.EntryPoint(self.name, self.target, ENTRY_POINT_GROUP).load()
                    check_contract(cls, self.name)
                    self._loaded = cls
                except (Exception, SystemExit) as exc:  # third-party code: any failure
                    self._error = f"{type(exc).__name__}: {exc}"
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


def discover() -> dict[str, PluginEntry]:
    """Every plugin registered in this environment, by name, without importing any."""
    claims: dict[str, list[PluginEntry]] = {}
    seen: set[tuple[str, str, str]] = set()
    for dist in metadata.distributions():
        package = dist.metadata["Name"] or "?"
        for ep in dist.entry_points:
            key = (ep.name, ep.value, package)
            if ep.group != ENTRY_POINT_GROUP or key in seen:  # seen: a dist on sys.path twice
                continue
            seen.add(key)
            claims.setdefault(ep.name, []).append(
                PluginEntry(ep.name, ep.value, package, dist.version)
            )
    found = {}
    for name, entries in sorted(claims.items()):
        if len(entries) > 1:
            who = " and ".join(f"{e.package} ({e.target})" for e in entries)
            entries[0].conflict = f"duplicate plugin name '{name}' registered by {who}"
        found[name] = entries[0]
    return found


def get_entry(name: str) -> PluginEntry:
    """The entry of plugin ``name``, or :class:`UserError` listing the registered names."""
    entries = discover()
    if name not in entries:
        raise UserError(f"unknown plugin '{name}': registered are {choices_text(entries)}")
    return entries[name]


def check_contract(cls: Any, entry_name: str) -> None:
    """Raise ``TypeError`` naming the first way ``cls`` breaks the plugin contract."""
    from infoflow_track.plugin import Plugin

    if not (isinstance(cls, type) and issubclass(cls, Plugin)):
        raise TypeError(f"{cls!r} is not a subclass of infoflow_track.Plugin")
    if cls.name != entry_name or not _NAME_RE.fullmatch(cls.name):
        raise TypeError(
            f"{cls.__name__}.name is {cls.name!r}; it must equal the entry-point name "
            f"'{entry_name}' (lowercase letters, digits, dashes)"
        )
    if not isinstance(cls.summary, str) or not cls.summary.strip():
        raise TypeError(f"{cls.__name__}.summary must be a non-empty one-line string")
    if cls.build is Plugin.build:
        raise TypeError(f"{cls.__name__} does not implement build(config, data)")
    fields = _check_config(cls)
    default_fit = cls.fit is Plugin.fit and cls.configure_optimizer is Plugin.configure_optimizer
    if default_fit and "lr" not in fields:
        raise TypeError(
            f"{cls.__name__}.Config has no 'lr' for the default optimizer: add it or "
            "override configure_optimizer"
        )
    _check_search_space(cls.search_space, fields)
    _check_epoch_metrics(cls)


def _check_epoch_metrics(cls: Any) -> None:
    """A plugin's own metric names are metric keys that no framework metric can take."""
    names = cls.epoch_metrics
    if not (isinstance(names, tuple) and all(isinstance(n, str) for n in names)):
        raise TypeError(f"{cls.__name__}.epoch_metrics must be a tuple of metric names")
    taken = ", ".join(_FRAMEWORK_METRIC_PREFIXES)
    for name in names:
        if not _METRIC_RE.fullmatch(name) or name.startswith(_FRAMEWORK_METRIC_PREFIXES):
            raise TypeError(
                f"{cls.__name__}.epoch_metrics: {name!r} is not a free metric name (1-250 of "
                f"letters, digits, '_-./', not starting with {taken})"
            )


def _check_config(cls: Any) -> dict[str, Any]:
    """Check ``cls.Config`` (frozen HParams dataclass, valid defaults); return its specs."""
    from infoflow_track.hparams import HParams, specs
    from infoflow_track.settings import RUN_SETTING_NAMES

    config = getattr(cls, "Config", None)
    if not (dataclasses.is_dataclass(config) and isinstance(config, type)):
        raise TypeError(f"{cls.__name__}.Config must be a dataclass")
    if not (issubclass(config, HParams) and config.__dataclass_params__.frozen):
        raise TypeError(f"{cls.__name__}.Config must be a frozen dataclass deriving from HParams")
    config()  # every field has a supported type and a valid default, or this raises
    fields = specs(config)
    clash = sorted(set(fields) & RUN_SETTING_NAMES)
    if clash:
        raise TypeError(
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
        raise TypeError(str(exc)) from None
