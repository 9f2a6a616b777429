"""Third-party MI estimators end to end, through the real `infoflow` command and a real pip: a
package registering an estimator under ``infoflow.estimators`` installs, lists, shows its
option and measures every probed layer of a run (its values checked against the same
quantity computed here in numpy from the very activations it was given); bad option values
are refused before anything is written; broken, duplicate and disabled estimators are
reported with their reason while the built-in estimators keep working."""

from __future__ import annotations

import math
import subprocess
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from helpers import pip, plant_plugin, run_cli

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

NAME, DIST, MODULE, VERSION = "peak-bins", "infoflow-est-e2e", "infoflow_est_e2e", "0.4.2"
PROBE = 64  # probe samples of every run here: log2 64 = 6 bits is the I(X;T) ceiling
ESTIMATOR_ENV = ("INFOFLOW_DISABLE_ESTIMATOR_AUTOLOAD", "INFOFLOW_ESTIMATORS",
                 "INFOFLOW_DISABLE_ESTIMATORS")  # fmt: skip
BUILTINS = ("adaptive-binning", "binning", "kde", "renyi")

#: A real estimator: I(X;T) = H(T') of each sample's peak activation floored to ``decimals``
#: decimals (T' a deterministic function of X), I(T;Y) = I(T';Y) by plug-in; the extra
#: ``active`` the same of each sample's number of positive units; ceilings log2 N and H(Y).
#: With $E2E_DUMP set it also saves there every layer it is given. Like the built-ins it
#: imports torch only when measuring, so that listing estimators stays cheap.
ESTIMATOR_SOURCE = '''
import math
import os
from dataclasses import dataclass
from pathlib import Path

from infoflow_track.estimators import Estimate, Estimator
from infoflow_track.hparams import HParams, hparam


@dataclass(frozen=True)
class Options(HParams):
    kind = "option"

    decimals: int = hparam(2, low=0, high=6, help="peaks are floored to this many decimals")


def _entropy(ids):
    import torch

    counts = torch.bincount(ids).double()
    p = counts[counts > 0] / counts.sum()
    return -(p * p.log2()).sum()


def _mi(symbols, y):
    """(H(symbols), plug-in I(symbols; y)) in bits, of one symbol (N,) per sample."""
    import torch

    ids = torch.unique(symbols, return_inverse=True)[1]
    joint = ids * (int(y.max()) + 1) + y.long()
    h_t = _entropy(ids)
    return h_t, h_t + _entropy(y.long()) - _entropy(joint)


class PeakBins(Estimator):
    """I(X;T) = H of each sample's peak activation floored to ``decimals`` decimals (the layer
    is a deterministic function of X); I(T;Y) the plug-in mutual information with the labels."""

    name = "peak-bins"
    summary = "binned peak activation of each sample (an end-to-end test estimator)"
    api_version = "1.0"
    Config = Options
    extras = ("active",)
    saturation_advice = "use fewer decimals (peak-bins.decimals)"

    def prepare(self, x, y):
        self.h_y = _entropy(y.long()).item()
        self.calls = 0

    def measure(self, t, y, x):
        import numpy as np
        import torch

        rows = t.reshape(t.shape[0], -1)
        peaks = torch.floor(rows.amax(1).double() * 10**self.config.decimals)
        i_xt, i_ty = _mi(peaks, y)
        active = _mi((rows > 0).sum(1), y)
        dump = os.environ.get("E2E_DUMP")
        if dump:
            np.savez(Path(dump) / f"{self.calls:04d}.npz", t=t.cpu().numpy(),
                     y=y.cpu().numpy(), decimals=self.config.decimals)
            self.calls += 1
        return Estimate(i_xt, i_ty, math.log2(t.shape[0]), self.h_y, {"active": active})
'''


# -- what the estimator measures, computed here independently in numpy -----------------------


def entropy(ids: np.ndarray) -> float:
    p = np.unique(ids, return_counts=True)[1] / len(ids)
    return float(-(p * np.log2(p)).sum())


def mutual_information(symbols: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(H(symbols), plug-in I(symbols; y)) in bits."""
    joint = [f"{s}|{label}" for s, label in zip(symbols.tolist(), y.tolist(), strict=True)]
    return entropy(symbols), entropy(symbols) + entropy(y) - entropy(np.array(joint))


def expected(t: np.ndarray, y: np.ndarray, decimals: int) -> dict[str, float]:
    """Every value the estimator gives for layer ``t`` (N, ...) and labels ``y``, by key."""
    rows = t.reshape(len(t), -1)
    i_xt, i_ty = mutual_information(np.floor(rows.max(1).astype(np.float64) * 10.0**decimals), y)
    active_xt, active_ty = mutual_information((rows > 0).sum(1), y)
    return {"mi_xt": i_xt, "mi_ty": i_ty, "ceiling_xt": math.log2(len(t)), "ceiling_ty": entropy(y),
            "mi_xt.active": active_xt, "mi_ty.active": active_ty}  # fmt: skip


GROUP = "infoflow.estimators"

# -- packages ---------------------------------------------------------------------------------


def estimator_source(name: str, api: str = "1.0") -> str:
    """The test estimator's module source, registering as ``name`` for estimator API ``api``."""
    return ESTIMATOR_SOURCE.replace('"peak-bins"', f'"{name}"').replace(
        'api_version = "1.0"', f'api_version = "{api}"'
    )


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory):
    """The estimator package pip-installed; uninstalled afterwards, whatever happens."""
    pip("uninstall", "--yes", DIST)  # the leftover of an interrupted run, if any
    package = tmp_path_factory.mktemp("estimator-package")
    (package / "pyproject.toml").write_text(textwrap.dedent(f"""\
        [build-system]
        requires = ["setuptools>=64"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "{DIST}"
        version = "{VERSION}"
        dependencies = ["infoflow-track"]

        [project.entry-points."infoflow.estimators"]
        {NAME} = "{MODULE}.est:PeakBins"
    """))  # fmt: skip
    source = package / "src" / MODULE
    source.mkdir(parents=True)
    (source / "__init__.py").write_text("")
    (source / "est.py").write_text(ESTIMATOR_SOURCE)
    try:
        done = pip("install", "--no-index", "--no-build-isolation", str(package))
        assert done.returncode == 0, done.stderr
        yield package
    finally:
        pip("uninstall", "--yes", DIST)


@pytest.fixture(autouse=True)
def _no_ambient_estimator_selection(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in ESTIMATOR_ENV:
        monkeypatch.setenv(variable, "")


def listed(cwd: Path, env: dict[str, str] | None = None) -> dict[str, str]:
    """`infoflow estimators list` as {first word: line}."""
    proc = run_cli("estimators", "list", cwd=cwd, env=env)
    assert proc.returncode == 0, proc.stderr
    return {line.split()[0]: line for line in proc.stdout.splitlines() if line.strip()}


def in_parallel(
    cwd: Path, *calls: tuple[list[str], dict[str, str]]
) -> list[subprocess.CompletedProcess[str]]:
    """`infoflow ARGS` for each (ARGS, environment), two at a time (this machine's cores):
    each command pays for importing torch."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        return list(pool.map(lambda call: run_cli(*call[0], cwd=cwd, env=call[1]), calls))


def only_run(uri: str) -> object:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("mlp").experiment_id])
    assert run.info.status == "FINISHED"
    return run


def check_measured(uri: str, dump: Path, decimals: int, qualifier: str) -> None:
    """The run in ``uri`` logged, at steps 0 (initialisation) and 1, the estimator's values of
    every layer under ``mi_xt<qualifier>/<layer>`` etc., equal to those computed here from the
    layers it was given (saved in ``dump``, in the probe's order: per step, layer by layer)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    run = only_run(uri)
    layers = sorted(k.partition("/")[2] for k in run.data.metrics if k.startswith("cka_init/"))
    assert layers == [f"hidden{i}" for i in range(1, len(layers) + 1)] and layers  # mlp's order
    saved = sorted(dump.glob("*.npz"))
    assert len(saved) == 2 * len(layers)  # every layer at both steps, nothing more
    logged = []
    for step in (0, 1):
        for layer, path in zip(layers, saved[step * len(layers) :], strict=False):
            with np.load(path) as given:
                t, y = given["t"], given["y"]
                assert int(given["decimals"]) == decimals  # the option reached the estimator
            assert t.shape[0] == PROBE
            for quantity, value in expected(t, y, decimals).items():
                base, _, extra = quantity.partition(".")
                key = f"{base}{qualifier}{'.' + extra if extra else ''}/{layer}"
                history = {m.step: m.value for m in client.get_metric_history(run.info.run_id, key)}
                assert sorted(history) == [0, 1], key
                assert history[step] == pytest.approx(value, rel=1e-9, abs=1e-12), (key, step)
                if base == "mi_xt" and not extra:
                    logged.append(history[step])
    # the values tell layers and steps apart, so a mix-up of either would have shown above
    assert len(set(logged)) > 1 and min(logged) < math.log2(PROBE) - 0.5, logged


# -- the tests --------------------------------------------------------------------------------


def test_an_installed_estimator_lists_shows_refuses_bad_options_and_measures(
    installed: Path, tmp_path: Path
) -> None:
    lines = listed(tmp_path)
    assert f"{DIST} {VERSION}" in lines[NAME] and "BROKEN" not in lines[NAME]
    assert "binned peak activation of each sample" in lines[NAME]
    assert all("infoflow-track" in lines[name] and "BROKEN" not in lines[name]
               for name in BUILTINS)  # fmt: skip

    shown = run_cli("estimators", "show", NAME, cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert f"package: {DIST} {VERSION}, class {MODULE}.est:PeakBins" in shown.stdout
    (row,) = [line.split() for line in shown.stdout.splitlines() if line.startswith("  decimals")]
    assert row == ["decimals", "int", "default", "2", "0", "<=", "x", "<=", "6"]
    assert "peaks are floored to this many decimals" in shown.stdout
    assert f"also logs: active (mi_xt.active/<layer> when primary, else mi_xt.{NAME}.active" \
           in shown.stdout  # fmt: skip

    # three commands, two at a time: a bad option value; beside renyi; alone (so primary)
    new, second, alone = (tmp_path / d / "mlflow.db" for d in ("new", "second", "alone"))
    dumps = {"second": tmp_path / "dump-second", "alone": tmp_path / "dump-alone"}
    for dump in dumps.values():
        dump.mkdir()
    run = ["run", "mlp", "--epochs", "1", "--probe-size", str(PROBE), "--tracking-uri"]
    refused, ran, ran_alone = in_parallel(
        tmp_path,
        ([*run, f"sqlite:///{new}", "--mi", f"renyi,{NAME}", "--set", f"{NAME}.decimals=999"], {}),
        ([*run, f"sqlite:///{second}", "--mi", f"renyi,{NAME}", "--set", f"{NAME}.decimals=1"],
         {"E2E_DUMP": str(dumps["second"])}),
        ([*run, f"sqlite:///{alone}", "--mi", NAME], {"E2E_DUMP": str(dumps["alone"])}),
    )  # fmt: skip

    assert refused.returncode == 2, refused.stderr
    assert len(refused.stderr.splitlines()) == 1 and "decimals" in refused.stderr
    assert NAME in refused.stderr and "999" in refused.stderr
    assert not new.parent.exists() and not (tmp_path / "mlruns").exists()

    assert ran.returncode == 0, ran.stderr
    assert f"{NAME} (decimals=1)" in ran.stdout  # how the run describes its estimators
    uri = f"sqlite:///{second}"
    found = only_run(uri)
    assert found.data.params["mi"] == f"renyi,{NAME}"
    assert found.data.params[f"mi.{NAME}.decimals"] == "1"
    assert found.data.params["mi.renyi.alpha"] == "1.01"
    assert found.data.tags["infoflow.mi"] == f"renyi,{NAME}"
    check_measured(uri, dumps["second"], decimals=1, qualifier=f".{NAME}")
    metrics = set(found.data.metrics)
    layers = [k.partition("/")[2] for k in metrics if k.startswith(f"mi_xt.{NAME}/")]
    for layer in layers:  # renyi is primary: it alone writes the unqualified keys
        assert {f"mi_xt/{layer}", f"ceiling_xt/{layer}"} <= metrics
        assert not {f"mi_xt.active/{layer}", f"mi_xt.renyi/{layer}"} & metrics

    assert ran_alone.returncode == 0, ran_alone.stderr
    uri = f"sqlite:///{alone}"
    found = only_run(uri)
    assert found.data.params["mi"] == NAME and found.data.params[f"mi.{NAME}.decimals"] == "2"
    assert found.data.tags["infoflow.mi"] == NAME
    assert not any(k.startswith("mi.renyi.") for k in found.data.params)
    check_measured(uri, dumps["alone"], decimals=2, qualifier="")
    assert not any(f".{NAME}" in key for key in found.data.metrics)


def broken_site(site: Path) -> dict[str, str]:
    """Plant broken estimator packages and a working one in ``site``; {name: the reason
    `estimators list` must give}."""
    variants = {  # name -> (module source, the reason it is broken)
        "needs-import": ("raise ImportError('needs faiss, which is not installed')",
                         "ImportError: needs faiss, which is not installed"),
        "no-measure": (estimator_source("no-measure").replace("def measure", "def estimate"),
                       "PeakBins does not implement measure(t, y, x)"),
        "future-api": (estimator_source("future-api", api="2.0"),
                       "incompatible estimator API: PeakBins is written for estimator API "
                       "2.0"),
    }  # fmt: skip
    for name, (source, _) in variants.items():
        module = name.replace("-", "_")
        plant_plugin(site, f"{name}-dist", {name: f"{module}:PeakBins"}, {module: source}, GROUP)
    for dist in ("twin-a", "twin-b"):
        module = dist.replace("-", "_")
        plant_plugin(site, dist, {"twin": f"{module}:PeakBins"},
                     {module: estimator_source("twin")}, GROUP)  # fmt: skip
    plant_plugin(site, "planted-dist", {"planted": "planted:PeakBins"},
                 {"planted": estimator_source("planted")}, GROUP)  # fmt: skip
    reasons = {name: reason for name, (_, reason) in variants.items()}
    reasons["twin"] = ("duplicate estimator name 'twin' registered by twin-a (twin_a:PeakBins) "
                       "and twin-b (twin_b:PeakBins)")  # fmt: skip
    return reasons


def test_broken_estimators_are_listed_and_refused_while_the_builtins_run(tmp_path: Path) -> None:
    reasons = broken_site(tmp_path / "site")
    env = {"PYTHONPATH": str(tmp_path / "site")}
    lines = listed(tmp_path, env=env)
    for name, reason in reasons.items():
        assert f"BROKEN: {reason}" in lines[name], lines[name]
    for name in ("needs-import", "no-measure", "future-api"):
        assert f"{name}-dist 0.3.1" in lines[name]
    assert all("BROKEN" not in lines[name] for name in (*BUILTINS, "planted"))
    assert "planted-dist 0.3.1" in lines["planted"]

    # the default estimators run while every broken one is refused, two commands at a time
    refused_store, store = tmp_path / "refused" / "mlflow.db", tmp_path / "store" / "mlflow.db"
    uri = f"sqlite:///{store}"
    ran, *refusals = in_parallel(
        tmp_path,
        (["run", "mlp", "--epochs", "1", "--probe-size", str(PROBE), "--tracking-uri", uri], env),
        *((["run", "mlp", "--mi", f"renyi,{name}", "--tracking-uri", f"sqlite:///{refused_store}"],
           env) for name in reasons),
    )  # fmt: skip
    for (name, reason), refused in zip(reasons.items(), refusals, strict=True):
        assert refused.returncode == 2, (name, refused.stderr)
        assert len(refused.stderr.splitlines()) == 1, refused.stderr
        assert f"estimator '{name}' (" in refused.stderr and "is broken" in refused.stderr
        assert reason in refused.stderr, refused.stderr
    assert not refused_store.parent.exists() and not (tmp_path / "mlruns").exists()

    assert ran.returncode == 0, ran.stderr
    run = only_run(uri)
    assert run.data.params["mi"] == "renyi"
    assert {"mi_xt/hidden1", "ceiling_xt/hidden1"} <= set(run.data.metrics)


def test_disabled_and_explicit_estimators(tmp_path: Path) -> None:
    broken_site(tmp_path / "site")
    site = {"PYTHONPATH": str(tmp_path / "site")}
    env = {**site, "INFOFLOW_DISABLE_ESTIMATORS": "planted,needs-import"}
    lines = listed(tmp_path, env=env)
    assert "DISABLED" in lines["planted"] and "planted-dist 0.3.1" in lines["planted"]
    # a disabled estimator is never imported: its ImportError does not show
    assert "DISABLED" in lines["needs-import"] and "BROKEN" not in lines["needs-import"]
    assert "BROKEN" in lines["no-measure"] and "DISABLED" not in lines["renyi"]
    assert "DISABLED" not in listed(tmp_path, env=site)["planted"]

    store = tmp_path / "store" / "mlflow.db"
    names = ("planted", "needs-import")
    calls = [(["run", "mlp", "--mi", name, "--tracking-uri", f"sqlite:///{store}"], env)
             for name in names]  # fmt: skip
    for name, refused in zip(names, in_parallel(tmp_path, *calls), strict=True):
        assert refused.returncode == 2, refused.stderr
        assert len(refused.stderr.splitlines()) == 1
        assert f"estimator '{name}' is disabled" in refused.stderr, refused.stderr
        assert "INFOFLOW_DISABLE_ESTIMATORS" in refused.stderr
    assert not store.exists()

    # no entry points: only the class named in $INFOFLOW_ESTIMATORS, built-ins included gone
    explicit = {**site, "INFOFLOW_DISABLE_ESTIMATOR_AUTOLOAD": "1",
                "INFOFLOW_ESTIMATORS": "planted:PeakBins"}  # fmt: skip
    lines = listed(tmp_path, env=explicit)
    assert "planted" in lines and "BROKEN" not in lines["planted"]
    assert not {*BUILTINS, "twin", "no-measure"} & set(lines)
