"""Third-party plugins end to end, through the real `infoflow` command and a real pip: a
scaffolded package installs, passes its own tests, lists, runs, studies and uninstalls;
broken packages are reported with their reason while the built-ins keep working; plugins are
selected with --plugin, --disable-plugin and INFOFLOW_DISABLE_PLUGIN_AUTOLOAD."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from helpers import file_digest, pip, plant_plugin, run_cli, runs_of, tiny_plugin

from infoflow_track.testing import CHECKS

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

NAME, DIST, MODULE = "scaffold-e2e", "infoflow-scaffold-e2e", "infoflow_scaffold_e2e"
RUFF = str(Path(sys.executable).with_name("ruff"))


def listed(cwd: Path, *options: str, env: dict[str, str] | None = None) -> dict[str, str]:
    """`infoflow [options] plugins list` as {first word: line}."""
    proc = run_cli(*options, "plugins", "list", cwd=cwd, env=env)
    assert proc.returncode == 0, proc.stderr
    return {line.split()[0]: line for line in proc.stdout.splitlines() if line.strip()}


@pytest.fixture
def scaffolded(tmp_path: Path):
    """A scaffolded plugin package; whatever the test does, it is uninstalled afterwards."""
    pip("uninstall", "--yes", DIST)  # the leftover of an interrupted run, if any
    package = tmp_path / "pkg"
    proc = run_cli("plugins", "new", NAME, "--dir", str(package), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    yield package
    pip("uninstall", "--yes", DIST)


def test_a_scaffolded_plugin_installs_lists_runs_studies_and_uninstalls(
    scaffolded: Path, tmp_path: Path
) -> None:
    from mlflow.tracking import MlflowClient

    package = scaffolded
    assert (package / "src" / MODULE / "plugin.py").is_file()
    for lint in ([RUFF, "check", "."], [RUFF, "format", "--check", "."]):  # its own ruff config
        proc = subprocess.run(lint, cwd=package, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout + proc.stderr

    installed = pip("install", "--no-index", "--no-build-isolation", str(package))
    assert installed.returncode == 0, installed.stderr
    own_tests = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=package, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert own_tests.returncode == 0, own_tests.stdout[-3000:]
    assert f"{len(CHECKS) + 1} passed" in own_tests.stdout  # every kit check and its own test

    lines = listed(tmp_path)
    assert f"{DIST} 0.1.0" in lines[NAME] and "BROKEN" not in lines[NAME]
    assert "BROKEN" not in lines["mlp"]

    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    env = {"MLFLOW_TRACKING_URI": uri}
    ran = run_cli("run", NAME, "--epochs", "2", "--probe-size", "256", "--set", "width=8",
                  cwd=tmp_path, env=env)  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name(NAME).experiment_id])
    assert run.info.status == "FINISHED" and run.data.params["width"] == "8"
    assert run.data.tags["infoflow.plugin_package"] == DIST
    assert run.data.tags["infoflow.plugin_version"] == "0.1.0"
    assert run.data.tags["infoflow.plugin_class"] == f"{MODULE}.plugin:ScaffoldE2ePlugin"
    assert run.data.tags["infoflow.plugin_api"] == "1.0"
    history = client.get_metric_history(run.info.run_id, "mi_xt/hidden")
    assert [m.step for m in history] == [0, 1, 2]  # 0: the model at initialisation

    studied = run_cli("study", f"studies/{NAME}.toml", "--n-trials", "2", "--set", "epochs=1",
                      "--set", "probe_size=256", "--name", "e2e", cwd=package, env=env)  # fmt: skip
    assert studied.returncode == 0, studied.stderr
    parent, children = runs_of(uri, "e2e")
    assert parent.data.tags["infoflow.plugin"] == NAME
    assert sorted(c.data.tags["infoflow.trial_state"] for c in children) == ["COMPLETE"] * 2
    assert {c.data.tags["infoflow.plugin_package"] for c in children} == {DIST}

    uninstalled = pip("uninstall", "--yes", DIST)
    assert uninstalled.returncode == 0, uninstalled.stderr
    assert NAME not in listed(tmp_path)
    gone = run_cli("run", NAME, cwd=tmp_path, env=env)
    assert gone.returncode == 2 and f"unknown plugin '{NAME}'" in gone.stderr


def test_scaffolding_refuses_bad_names_taken_names_and_used_folders(tmp_path: Path) -> None:
    used = tmp_path / "used"
    used.mkdir()
    (used / "keep.txt").write_text("mine")
    cases = {
        ("Sparse_MLP",): "plugin name 'Sparse_MLP' is not valid",
        ("mlp",): "plugin name 'mlp' is already registered by infoflow-plugins",
        ("track",): "would make package infoflow-track (module infoflow_track), which is already",
        ("fresh", "--dir", str(used)): f"{used} exists and is not an empty folder",
    }
    for args, message in cases.items():
        proc = run_cli("plugins", "new", *args, cwd=tmp_path)
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr
        assert len(proc.stderr.splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["used"]
    assert [p.name for p in used.iterdir()] == ["keep.txt"]


def test_broken_packages_are_listed_with_their_reason_while_the_builtins_work(
    tmp_path: Path,
) -> None:
    site = tmp_path / "site"
    variants = {  # plugin name -> (dist, module source, what `plugins list` must say)
        "needs-import": ("raise ImportError('needs torch_geometric, which is not installed')",
                         "BROKEN: ImportError: needs torch_geometric, which is not installed"),
        "no-build": (tiny_plugin("no-build").replace("def build", "def make"),
                     "BROKEN: Tiny does not implement build(config, data)"),
        "future-api": (tiny_plugin("future-api", api="2.0"),
                       "BROKEN: incompatible plugin API: Tiny is written for plugin API 2.0"),
    }  # fmt: skip
    for name, (source, _) in variants.items():
        module = name.replace("-", "_")
        plant_plugin(site, f"{name}-dist", {name: f"{module}:Tiny"}, {module: source})
    for dist in ("twin-a", "twin-b"):
        module = dist.replace("-", "_")
        plant_plugin(site, dist, {"twin": f"{module}:Tiny"}, {module: tiny_plugin("twin")})
    env = {"PYTHONPATH": str(site)}

    lines = listed(tmp_path, env=env)
    for name, (_, reason) in variants.items():
        assert reason in lines[name] and f"{name}-dist 0.3.1" in lines[name]
    assert "BROKEN: duplicate plugin name 'twin' registered by twin-a (twin_a:Tiny) and " \
           "twin-b (twin_b:Tiny)" in lines["twin"]  # fmt: skip
    builtins = {"mlp", "bottleneck-mlp", "simple-cnn", "local-mi", "weight-feedback",
                "two-timescale"}  # fmt: skip
    assert all("BROKEN" not in lines[name] for name in builtins)

    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    ran = run_cli("run", "mlp", "--epochs", "1", "--set", "widths=16", "--probe-size", "256",
                  cwd=tmp_path, env={**env, "MLFLOW_TRACKING_URI": uri})  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    for name in [*variants, "twin"]:
        refused = run_cli("run", name, cwd=tmp_path, env={**env, "MLFLOW_TRACKING_URI": uri})
        assert refused.returncode == 2 and f"plugin '{name}' (" in refused.stderr
        assert "is broken:" in refused.stderr and len(refused.stderr.splitlines()) == 1


def test_an_explicit_class_with_autoload_off_runs_in_a_two_worker_study(tmp_path: Path) -> None:
    (tmp_path / "lab_rule.py").write_text(tiny_plugin("lab-rule"))  # in the working directory
    env = {"INFOFLOW_DISABLE_PLUGIN_AUTOLOAD": "1"}
    lines = listed(tmp_path, "--plugin", "lab_rule:Tiny", env=env)
    assert "lab-rule" in lines and "lab_rule unknown" in lines["lab-rule"]
    assert "(--plugin)" in lines["lab-rule"] and "mlp" not in lines

    spec = tmp_path / "lab.toml"
    spec.write_text('name = "lab"\nplugin = "lab-rule"\nn_trials = 2\n[settings]\nepochs = 1\n'
                    'probe_size = 256\n[search]\nlr = { type = "float", low = 1e-3, high = 0.1 }\n'
                    '[objective]\nmetric = "acc/test"\ndirection = "maximize"\n')  # fmt: skip
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    study = ["study", str(spec), "--workers", "2", "--tracking-uri", uri]
    proc = run_cli("--plugin", "lab_rule:Tiny", *study, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr
    _, children = runs_of(uri, "lab")  # the spawned workers found the class too
    assert sorted(c.data.tags["infoflow.trial_state"] for c in children) == ["COMPLETE"] * 2
    assert {c.data.tags["infoflow.plugin_class"] for c in children} == {"lab_rule:Tiny"}
    assert {c.data.tags["infoflow.plugin_version"] for c in children} == {"unknown"}

    without = run_cli(*study, "--name", "lab2", cwd=tmp_path, env=env)
    assert without.returncode == 2 and "unknown plugin 'lab-rule'" in without.stderr
    assert "--plugin MODULE:CLASS" in without.stderr


def test_disable_plugin_hides_a_plugin_and_bad_selections_are_refused(tmp_path: Path) -> None:
    lines = listed(tmp_path, "--disable-plugin", "local-mi", "--disable-plugin", "nope")
    assert "DISABLED" in lines["local-mi"] and "BROKEN" not in lines["mlp"]
    assert "disabled but not registered: nope" in "\n".join(lines.values())
    store = tmp_path / "store" / "mlflow.db"
    uri = f"sqlite:///{store}"
    cases = {
        ("--disable-plugin", "local-mi", "run", "local-mi"): "plugin 'local-mi' is disabled",
        ("--plugin", "no_colon", "run", "mlp"): "plugin class 'no_colon' (--plugin or",
        ("--disable-plugin", "Local_MI", "run", "mlp"): "plugin name 'Local_MI'",
    }
    for args, message in cases.items():
        proc = run_cli(*args, "--tracking-uri", uri, cwd=tmp_path)
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr
        assert len(proc.stderr.splitlines()) == 1
    assert file_digest(store) is None and not (tmp_path / "mlruns").exists()
