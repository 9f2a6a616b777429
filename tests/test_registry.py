"""Plugin discovery through real entry points: listing without import, isolation of broken
plugins, the contract check, duplicate names."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from helpers import plant_plugin

from infoflow_track import UserError
from infoflow_track.registry import PluginError, discover, get_entry

GOOD = """
from dataclasses import dataclass
from infoflow_track import HParams, Plugin, hparam

@dataclass(frozen=True)
class Config(HParams):
    lr: float = hparam(0.01, low=1e-5, high=1.0)

class Good(Plugin):
    name = "{name}"
    summary = "a planted plugin"
    Config = Config
    search_space = {{"lr": {{"type": "float", "low": 1e-4, "high": 0.1, "log": True}}}}

    def build(self, config, data):
        raise NotImplementedError
"""


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "site"
    path.mkdir()
    monkeypatch.syspath_prepend(str(path))
    return path


def _variant(site: Path, module: str, source: str, name: str = "planted") -> None:
    plant_plugin(site, f"{module}-dist", {name: f"{module}:Good"}, {module: source})


def test_builtin_mlp_is_discovered_with_package_and_version() -> None:
    entry = discover()["mlp"]
    assert (entry.package, entry.target) == ("infoflow-plugins", "infoflow_plugins.mlp:MLPPlugin")
    assert entry.version == "0.1.0"
    assert entry.broken_reason() is None


def test_discovery_imports_nothing_and_load_checks_the_contract(site: Path) -> None:
    _variant(site, "planted_good", GOOD.format(name="planted"))
    entry = discover()["planted"]
    assert (entry.package, entry.version) == ("planted_good-dist", "0.3.1")
    assert "planted_good" not in sys.modules
    cls = entry.load()
    assert cls.name == "planted" and "planted_good" in sys.modules


BROKEN = {
    "raises": ("raise RuntimeError('boom at import')", "RuntimeError: boom at import"),
    "not_plugin": ("class Good:\n    pass", "is not a subclass of infoflow_track.Plugin"),
    "wrong_name": (GOOD.format(name="other"), "must equal the entry-point name 'planted'"),
    "no_build": (
        GOOD.format(name="planted").replace("def build", "def _build"),
        "does not implement build",
    ),
    "thawed": (
        GOOD.format(name="planted").replace("(frozen=True)", ""),
        "must be a frozen dataclass",
    ),
    "bad_space": (
        GOOD.format(name="planted").replace('{"lr"', '{"depth"'),
        "search space names 'depth', which is not a hyperparameter",
    ),
    "exits": ("import sys\nsys.exit(3)", "SystemExit: 3"),
    "optional_type": (
        GOOD.format(name="planted").replace(
            "lr: float = hparam(0.01, low=1e-5, high=1.0)", "lr: float | None = hparam(None)"
        ),
        "hyperparameter 'lr' has unsupported type",
    ),
    "run_setting_name": (
        GOOD.format(name="planted").replace(
            "    lr: float", "    seed: int = hparam(0)\n    lr: float"
        ),
        "field 'seed' has the name of a run setting",
    ),
    "framework_metric": (
        GOOD.format(name="planted").replace(
            "    search_space", '    epoch_metrics = ("acc/local",)\n    search_space'
        ),
        "'acc/local' is not a free metric name",
    ),
    "space_out_of_range": (
        GOOD.format(name="planted").replace('"high": 0.1', '"high": 10.0'),
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
    _variant(site, "planted_dup", GOOD.format(name="mlp"), name="mlp")
    entry = discover()["mlp"]
    reason = entry.broken_reason() or ""
    assert "duplicate plugin name 'mlp'" in reason
    assert "infoflow-plugins" in reason and "planted_dup-dist" in reason


def test_a_name_claimed_three_times_names_all_three_packages(site: Path) -> None:
    for module in ("dup_a", "dup_b"):
        _variant(site, module, GOOD.format(name="mlp"), name="mlp")
    reason = discover()["mlp"].broken_reason() or ""
    assert all(p in reason for p in ("infoflow-plugins", "dup_a-dist", "dup_b-dist"))


def test_unknown_plugin_lists_the_registered_ones() -> None:
    with pytest.raises(UserError, match=r"unknown plugin 'nope': registered are .*mlp"):
        get_entry("nope")
