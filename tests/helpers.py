"""Helpers shared by the tests: paths, the real `infoflow` command, planted plugins."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
INFOFLOW = str(Path(sys.executable).with_name("infoflow"))


def cpu():
    """torch's CPU device. torch is imported when a test asks, never while pytest collects:
    collecting the suite imports none of torch, MLflow and Optuna."""
    import torch

    return torch.device("cpu")


def run_cli(
    *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run the installed ``infoflow`` console script in a subprocess."""
    full_env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    full_env.update(env or {})
    return subprocess.run(
        [INFOFLOW, *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout
    )


def file_digest(path: Path) -> str | None:
    """sha256 of a file, or None if it does not exist (to prove a store was not written)."""
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None


def pip(*args: str) -> subprocess.CompletedProcess[str]:
    """The test environment's own pip; offline: no index, no build isolation."""
    return subprocess.run([sys.executable, "-m", "pip", *args, "--quiet"],
                          capture_output=True, text=True, timeout=300)  # fmt: skip


def plant_plugin(
    site: Path, dist: str, entries: dict[str, str], modules: dict[str, str],
    group: str = "infoflow.plugins",
) -> None:  # fmt: skip
    """Make ``site`` hold a real installed distribution: a ``.dist-info`` with entry points.

    ``entries`` maps plugin (or, with ``group="infoflow.estimators"``, estimator) name ->
    "module:Class"; ``modules`` maps module name -> source. importlib.metadata finds it when
    ``site`` is on ``sys.path`` (``PYTHONPATH``).
    """
    info = site / f"{dist.replace('-', '_')}-0.3.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.3.1\n")
    lines = "\n".join(f"{name} = {target}" for name, target in entries.items())
    (info / "entry_points.txt").write_text(f"[{group}]\n{lines}\n")
    for module, source in modules.items():
        (site / f"{module}.py").write_text(textwrap.dedent(source))


#: A small working plugin as module source: ``Config`` (lr), ``Net`` (a hidden layer of 8
#: units) and the plugin class ``Tiny``; fill in ``name`` and ``api`` with :func:`tiny_plugin`.
TINY_PLUGIN = """
import math
from dataclasses import dataclass
from torch import nn
from infoflow_track import HParams, Plugin, hparam

@dataclass(frozen=True)
class Config(HParams):
    lr: float = hparam(0.01, low=1e-5, high=1.0)

class Net(nn.Module):
    def __init__(self, d, c):
        super().__init__()
        self.hidden, self.out = nn.Linear(d, 8), nn.Linear(8, c)
    def forward_intermediates(self, x):
        h = self.hidden(x.flatten(1)).relu()
        return self.out(h), {{"hidden": h}}
    def forward(self, x):
        return self.forward_intermediates(x)[0]

class Tiny(Plugin):
    name = "{name}"
    summary = "a tiny planted plugin"
    api_version = "{api}"
    Config = Config
    search_space = {{"lr": {{"type": "float", "low": 1e-3, "high": 0.1, "log": True}}}}

    def build(self, config, data):
        return Net(math.prod(data.input_shape), data.num_classes)
"""


def tiny_plugin(name: str, api: str = "1.0") -> str:
    """The source of :data:`TINY_PLUGIN` registering as ``name``, for plugin API ``api``."""
    return TINY_PLUGIN.format(name=name, api=api)


def run_in_process(spec_path: Path, uri: str, workers: int = 1, **overrides) -> object:
    """Run the study spec at ``spec_path`` as `infoflow study` does, in this process; the
    Optuna journal goes beside the SQLite store ``uri``. Returns the trial counts."""
    from infoflow_track.study.runner import check_runnable, open_study, run_study
    from infoflow_track.study.spec import load_spec
    from infoflow_track.study.storage import resolve_storage
    from infoflow_track.tracking import Tracker

    spec = load_spec(str(spec_path), **overrides)
    check_runnable(spec)
    tracker = Tracker(uri)
    ref = resolve_storage(None, Path(uri[len("sqlite:///") :]).parent)
    opened = open_study(spec, ref, tracker)
    return run_study(spec, ref, tracker, opened, workers=workers, echo=lambda line: None)


def runs_of(uri: str, name: str) -> tuple[object, list]:
    """(parent run, child runs) of study ``name`` in the MLflow store ``uri``."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name(name).experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    return parents[0], children
