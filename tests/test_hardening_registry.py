"""Hardening of discovery and of the boolean variables: a --plugin class from the working
directory is imported without putting that directory on sys.path, every boolean variable is
read by one strict parser, and a process scans the entry points once, not once per run."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

import pytest
from helpers import plant_plugin, tiny_plugin
from typer.testing import CliRunner

from infoflow_track import UserError, registry, vision
from infoflow_track.estimators import ESTIMATORS
from infoflow_track.registry import AUTOLOAD_OFF_ENV, DISABLED_ENV, EXPLICIT_ENV, discover, scan
from infoflow_track.settings import RunSettings

# -- item 11: --plugin MODULE:CLASS from the working directory, sys.path left alone ----------

PLANTED = "planted_probe_mod"  # like a psutil.py left in the working directory


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory holding a planted module that writes ``ran`` when imported."""
    work = tmp_path / "work"
    work.mkdir()
    (work / f"{PLANTED}.py").write_text(f"open({str(tmp_path / 'ran')!r}, 'w').close()\n")
    monkeypatch.chdir(work)
    monkeypatch.setattr(sys, "path", list(sys.path))  # whatever happens, restored afterwards
    yield work
    for name in list(sys.modules):
        if name.startswith(("hardened_", PLANTED)):
            del sys.modules[name]


#: layout -> (files in the working directory, the --plugin target)
LAYOUTS = {
    "namespace": ({"hardened_ns/plugin.py": "hardened-ns"}, "hardened_ns.plugin:Tiny"),
    "package": (
        {
            "hardened_pkg/__init__.py": None,
            "hardened_pkg/rules/__init__.py": None,
            "hardened_pkg/rules/plugin.py": "hardened-pkg",
        },
        "hardened_pkg.rules.plugin:Tiny",
    ),
    "module": ({"hardened_mod.py": "hardened-mod"}, "hardened_mod:Tiny"),
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_a_working_directory_plugin_loads_without_widening_sys_path(
    workdir: Path, layout: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    files, target = LAYOUTS[layout]
    for path, name in files.items():
        (workdir / path).parent.mkdir(parents=True, exist_ok=True)
        (workdir / path).write_text("" if name is None else tiny_plugin(name))
    plugin_name = next(name for name in files.values() if name)
    before = list(sys.path)
    monkeypatch.setenv(EXPLICIT_ENV, target)
    entry = discover()[plugin_name]
    assert entry.broken_reason() is None and entry.explicit
    assert entry.load().__module__ == target.partition(":")[0]
    assert discover()[plugin_name].load() is entry.load()  # a second scan: the same class
    assert sys.path == before and str(workdir) not in sys.path and "" not in sys.path
    assert importlib.util.find_spec(PLANTED) is None
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module(PLANTED)
    assert not (workdir.parent / "ran").exists()


def test_a_module_missing_everywhere_is_broken_with_the_import_error(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(EXPLICIT_ENV, "hardened_absent.plugin:Tiny")
    reason = discover()["hardened_absent.plugin:Tiny"].broken_reason() or ""
    assert "ModuleNotFoundError: No module named 'hardened_absent'" in reason
    (workdir / "hardened_sub").mkdir()
    (workdir / "hardened_sub" / "__init__.py").write_text("")
    monkeypatch.setenv(EXPLICIT_ENV, "hardened_sub.absent:Tiny")  # the package is there
    reason = discover()["hardened_sub.absent:Tiny"].broken_reason() or ""
    assert "No module named 'hardened_sub.absent'" in reason
    assert str(workdir) not in sys.path


def test_an_entry_point_target_is_never_looked_up_in_the_working_directory(
    workdir: Path, tmp_path: Path
) -> None:
    site = tmp_path / "site"
    plant_plugin(site, "hardened-ep-dist", {"hardened-ep": "hardened_ep:Tiny"}, {})
    (workdir / "hardened_ep.py").write_text(tiny_plugin("hardened-ep"))  # not the package's
    sys.path.insert(0, str(site))
    reason = discover()["hardened-ep"].broken_reason() or ""
    assert "No module named 'hardened_ep'" in reason


def test_an_installed_module_wins_over_one_in_the_working_directory(
    workdir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "hardened_twin.py").write_text(tiny_plugin("hardened-installed"))
    (workdir / "hardened_twin.py").write_text(tiny_plugin("hardened-local"))
    sys.path.insert(0, str(site))
    monkeypatch.setenv(EXPLICIT_ENV, "hardened_twin:Tiny")
    assert set(discover()) >= {"hardened-installed"} and "hardened-local" not in discover()


# -- item 12: one strict parser for every boolean variable -----------------------------------


def env_flag(name: str) -> bool:
    from infoflow_track.envflags import env_flag as flag  # imported here: new with item 12

    return flag(name)


WORDS = {"1": True, "true": True, "Yes": True, " ON ": True,
         "0": False, "false": False, "NO": False, "off": False, "": False, "  ": False}  # fmt: skip


@pytest.mark.parametrize("value", list(WORDS))
def test_env_flag_reads_the_boolean_words(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INFOFLOW_DOWNLOAD", value)
    assert env_flag("INFOFLOW_DOWNLOAD") is WORDS[value]
    assert vision.download_requested() is WORDS[value]


def test_an_unset_flag_is_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("INFOFLOW_DOWNLOAD", raising=False)
    assert env_flag("INFOFLOW_DOWNLOAD") is False


@pytest.mark.parametrize("value", ["maybe", "2", "y", "enable"])
def test_env_flag_refuses_other_values_naming_variable_value_and_words(
    value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("INFOFLOW_DOWNLOAD", value)
    for read in (lambda: env_flag("INFOFLOW_DOWNLOAD"), vision.download_requested):
        with pytest.raises(UserError) as caught:
            read()
        message = str(caught.value)
        assert f"INFOFLOW_DOWNLOAD={value!r}" in message and "\n" not in message
        assert all(word in message for word in ("1", "true", "yes", "on", "0", "false", "off"))


def test_every_boolean_variable_uses_the_one_parser(monkeypatch: pytest.MonkeyPatch) -> None:
    from infoflow_track.envflags import BOOLEAN_VARIABLES

    assert set(BOOLEAN_VARIABLES) == {
        vision.DOWNLOAD_ENV, AUTOLOAD_OFF_ENV, ESTIMATORS.autoload_env
    }  # fmt: skip
    for variable, kind in ((AUTOLOAD_OFF_ENV, registry.PLUGINS), (ESTIMATORS.autoload_env,
                                                                  ESTIMATORS)):  # fmt: skip
        monkeypatch.setenv(variable, "maybe")
        with pytest.raises(UserError, match=f"{variable}='maybe': valid are 1, true"):
            scan(kind=kind)
        monkeypatch.setenv(variable, " Off ")
        assert scan(kind=kind).selection.autoload


def _invoke(args: list[str], env: dict[str, str]) -> object:
    from infoflow_track.cli import app

    return CliRunner().invoke(app, args, env=env)


@pytest.mark.parametrize("command", ["datasets", "run"])
def test_a_malformed_download_variable_is_one_line_exit_2(
    command: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    store = tmp_path / "store" / "mlflow.db"
    args = {
        "datasets": ["datasets"],
        "run": ["run", "mlp", "--tracking-uri", f"sqlite:///{store}", "--set", "epochs=1"],
    }
    result = _invoke(args[command], {"INFOFLOW_DOWNLOAD": "maybe"})  # fmt: skip
    assert result.exit_code == 2, result.output
    message = result.stderr.strip()
    assert message.startswith("error: INFOFLOW_DOWNLOAD='maybe': valid are") and "\n" not in message
    assert result.stdout == "" and not store.parent.exists() and not (tmp_path / "mlruns").exists()


# -- item 14: one entry-point scan per process, fresh when what it depends on changes --------


@pytest.fixture
def scans(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Entry-point scans by group, counted while the real reading still happens."""
    counts: dict[str, int] = {}
    real = registry._entry_point_entries

    def counted(kind):
        counts[kind.group] = counts.get(kind.group, 0) + 1
        return real(kind)

    monkeypatch.setattr(registry, "_entry_point_entries", counted)
    return counts


def test_a_second_plan_run_in_a_process_scans_no_entry_points(scans: dict[str, int]) -> None:
    from infoflow_track.experiment import plan_run

    settings = RunSettings(dataset="digits", epochs=1)
    first = plan_run("mlp", {}, settings)
    after_first = dict(scans)
    assert all(n <= 1 for n in after_first.values())  # none if an earlier test scanned already
    second = plan_run("mlp", {}, settings)
    assert scans == after_first  # the second run reads no entry points at all
    assert first.entry.target == second.entry.target == "infoflow_plugins.mlp:MLPPlugin"
    assert first.estimators.params() == second.estimators.params()


def test_the_discovery_stays_fresh_when_the_selection_or_the_path_changes(
    scans: dict[str, int], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert "mlp" in discover()
    discover()
    assert scans.get("infoflow.plugins", 0) <= 1
    monkeypatch.setenv(DISABLED_ENV, "mlp")
    found = scan()
    assert "mlp" in found.disabled and "mlp" not in found.usable
    monkeypatch.setenv(DISABLED_ENV, "")
    monkeypatch.setenv(AUTOLOAD_OFF_ENV, "1")
    assert discover() == {}
    monkeypatch.setenv(AUTOLOAD_OFF_ENV, "")
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    plant_plugin(site, "hardened-fresh-a", {"fresh-a": "hardened_fresh_a:Tiny"},
                 {"hardened_fresh_a": tiny_plugin("fresh-a")})  # fmt: skip
    assert "fresh-a" in discover()  # a new directory on the path
    plant_plugin(site, "hardened-fresh-b", {"fresh-b": "hardened_fresh_b:Tiny"},
                 {"hardened_fresh_b": tiny_plugin("fresh-b")})  # fmt: skip
    assert {"fresh-a", "fresh-b", "mlp"} <= set(discover())  # installed beside it since
    assert discover()["fresh-b"].broken_reason() is None
    before = dict(scans)
    discover()
    assert scans == before


def test_an_entry_of_a_cached_scan_is_fresh_each_time(scans: dict[str, int]) -> None:
    """Entries are not shared between scans: one's state (loaded or broken) never leaks."""
    assert discover()["mlp"] is not discover()["mlp"]
