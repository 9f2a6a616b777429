"""Plugin discovery through real entry points: listing without import, isolation of broken
plugins, the contract check and the plugin API version, duplicate names, and the selection
variables (autoload off, explicit classes, disabled names)."""

from __future__ import annotations

import re
import sys
from importlib import metadata
from pathlib import Path

import pytest
from helpers import plant_plugin, tiny_plugin

from infoflow_track import UserError
from infoflow_track import plugin as plugin_module
from infoflow_track.registry import (
    AUTOLOAD_OFF_ENV,
    DISABLED_ENV,
    EXPLICIT_ENV,
    PluginError,
    discover,
    get_entry,
    scan,
)


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "site"
    path.mkdir()
    monkeypatch.syspath_prepend(str(path))
    return path


def _variant(site: Path, module: str, source: str, name: str = "planted") -> None:
    plant_plugin(site, f"{module}-dist", {name: f"{module}:Tiny"}, {module: source})


def test_builtin_mlp_is_discovered_with_package_and_version() -> None:
    entry = discover()["mlp"]
    assert (entry.package, entry.target) == ("infoflow-plugins", "infoflow_plugins.mlp:MLPPlugin")
    assert entry.version == "0.1.0"
    assert entry.broken_reason() is None


def test_discovery_imports_nothing_and_load_checks_the_contract(site: Path) -> None:
    _variant(site, "planted_good", tiny_plugin("planted"))
    entry = discover()["planted"]
    assert (entry.package, entry.version) == ("planted_good-dist", "0.3.1")
    assert "planted_good" not in sys.modules
    cls = entry.load()
    assert cls.name == "planted" and "planted_good" in sys.modules


BROKEN = {
    "raises": ("raise RuntimeError('boom at import')", "RuntimeError: boom at import"),
    "not_plugin": ("class Tiny:\n    pass", "is not a subclass of infoflow_track.Plugin"),
    "wrong_name": (tiny_plugin("other"), "entry point registers it as 'planted'"),
    "no_build": (
        tiny_plugin("planted").replace("def build", "def _build"),
        "does not implement build",
    ),
    "thawed": (
        tiny_plugin("planted").replace("(frozen=True)", ""),
        "must be a frozen dataclass",
    ),
    "bad_space": (
        tiny_plugin("planted").replace('{"lr"', '{"depth"'),
        "search space names 'depth', which is not a hyperparameter",
    ),
    "exits": ("import sys\nsys.exit(3)", "SystemExit: 3"),
    "optional_type": (
        tiny_plugin("planted").replace(
            "lr: float = hparam(0.01, low=1e-5, high=1.0)", "lr: float | None = hparam(None)"
        ),
        "hyperparameter 'lr' has unsupported type",
    ),
    "run_setting_name": (
        tiny_plugin("planted").replace("    lr: float", "    seed: int = hparam(0)\n    lr: float"),
        "field 'seed' has the name of a run setting",
    ),
    "framework_metric": (
        tiny_plugin("planted").replace(
            "    search_space", '    epoch_metrics = ("acc/local",)\n    search_space'
        ),
        "'acc/local' is not a free metric name",
    ),
    "space_out_of_range": (
        tiny_plugin("planted").replace('"high": 0.1', '"high": 10.0'),
        "search space entry 'lr'",
    ),
}


@pytest.mark.parametrize("variant", sorted(BROKEN))
def test_broken_plugin_is_isolated_with_its_reason(site: Path, variant: str) -> None:
    source, reason = BROKEN[variant]
    _variant(site, f"planted_{variant}", source)
    entries = discover()
    assert reason in (entries["planted"].broken_reason() or "")
    with pytest.raises(PluginError, match="plugin 'planted'"):
        entries["planted"].load()
    assert entries["mlp"].broken_reason() is None  # the others keep working


def test_duplicate_name_is_an_error_naming_both_packages(site: Path) -> None:
    _variant(site, "planted_dup", tiny_plugin("mlp"), name="mlp")
    entry = discover()["mlp"]
    reason = entry.broken_reason() or ""
    assert "duplicate plugin name 'mlp'" in reason
    assert "infoflow-plugins" in reason and "planted_dup-dist" in reason


def test_a_name_claimed_three_times_names_all_three_packages(site: Path) -> None:
    for module in ("dup_a", "dup_b"):
        _variant(site, module, tiny_plugin("mlp"), name="mlp")
    reason = discover()["mlp"].broken_reason() or ""
    assert all(p in reason for p in ("infoflow-plugins", "dup_a-dist", "dup_b-dist"))


def test_unknown_plugin_lists_the_registered_ones() -> None:
    with pytest.raises(UserError, match=r"unknown plugin 'nope': registered are .*mlp"):
        get_entry("nope")


#: Declared version -> None (loads) or a part of the reason, under a provided API of "1.2".
API_VERDICTS = {
    "1.2": None,
    "1.0": None,
    "1.3": "upgrade infoflow-track",
    "2.0": "upgrade infoflow-track",
    "0.9": "update the plugin to plugin API 1.x",
    "1": 'expected "MAJOR.MINOR"',
    "v1.0": 'expected "MAJOR.MINOR"',
    "": "declares no api_version",
}


@pytest.mark.parametrize("declared", list(API_VERDICTS))
def test_the_plugin_api_version_is_checked_first(
    site: Path, declared: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(plugin_module, "PLUGIN_API_VERSION", "1.2")  # our API, for this test
    source = tiny_plugin("planted", api=declared)
    source = source.replace("def build", "def _build")  # a later flaw: the API speaks first
    _variant(site, f"planted_api_{list(API_VERDICTS).index(declared)}", source)
    reason = discover()["planted"].broken_reason() or ""
    expected = API_VERDICTS[declared]
    if expected is None:
        assert "does not implement build" in reason
    else:
        assert expected in reason and "does not implement build" not in reason
    if expected and ("upgrade" in expected or "update" in expected):
        assert f"written for plugin API {declared}" in reason and "loads 1.0 to 1.2" in reason


def test_autoload_off_reads_no_entry_points_and_explicit_classes_are_found(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(AUTOLOAD_OFF_ENV, "1")
    assert discover() == {}
    with pytest.raises(UserError, match=r"unknown plugin 'mlp'.*--plugin MODULE:CLASS"):
        get_entry("mlp")
    target = "infoflow_plugins.mlp:MLPPlugin"
    monkeypatch.setenv(EXPLICIT_ENV, f" {target} ,{target}")  # spaces and repeats are fine
    (entry,) = discover().values()
    assert (entry.name, entry.package, entry.version, entry.explicit) == (
        "mlp", "infoflow-plugins", metadata.version("infoflow-plugins"), True
    )  # fmt: skip
    assert entry.load().__name__ == "MLPPlugin"


def test_an_explicit_class_beside_the_entry_points_is_one_plugin_or_a_duplicate(
    site: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(EXPLICIT_ENV, "infoflow_plugins.mlp:MLPPlugin")  # also registered: one
    assert discover()["mlp"].broken_reason() is None
    (site / "local_mlp.py").write_text(tiny_plugin("mlp"))
    monkeypatch.setenv(EXPLICIT_ENV, "local_mlp:Tiny")  # on the path, from no distribution
    reason = discover()["mlp"].broken_reason() or ""
    assert "duplicate plugin name 'mlp'" in reason and "local_mlp (local_mlp:Tiny)" in reason


def test_an_explicit_class_that_fails_to_import_is_listed_under_its_target(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(EXPLICIT_ENV, "no_such_module:Plugin")
    entry = discover()["no_such_module:Plugin"]
    assert (entry.package, entry.version) == ("no_such_module", "unknown")
    assert "ModuleNotFoundError: No module named 'no_such_module'" in (entry.broken_reason() or "")
    assert discover()["mlp"].broken_reason() is None


def test_a_disabled_plugin_is_never_imported_and_cannot_be_run(
    site: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _variant(site, "planted_loud", "raise RuntimeError('imported although disabled')")
    monkeypatch.setenv(DISABLED_ENV, "planted, local-mi")
    found = scan()
    assert set(found.disabled) == {"planted", "local-mi"}
    assert "planted" not in found.usable and "local-mi" not in found.usable
    for entry in found.usable.values():
        assert entry.broken_reason() is None
    assert "planted_loud" not in sys.modules
    with pytest.raises(UserError, match="plugin 'local-mi' is disabled"):
        get_entry("local-mi")


SELECTION_ERRORS = {
    AUTOLOAD_OFF_ENV: ("maybe", f"{AUTOLOAD_OFF_ENV}='maybe': valid are 1, true"),
    EXPLICIT_ENV: ("my_module", "plugin class 'my_module' (--plugin or $INFOFLOW_PLUGINS) is not"),
    DISABLED_ENV: ("Local_MI", "plugin name 'Local_MI' (--disable-plugin or"),
}


@pytest.mark.parametrize("variable", list(SELECTION_ERRORS))
def test_a_malformed_selection_variable_is_a_user_error_naming_it(
    variable: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    value, message = SELECTION_ERRORS[variable]
    monkeypatch.setenv(variable, value)
    with pytest.raises(UserError, match=re.escape(message)):
        discover()
