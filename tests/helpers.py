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


def plant_plugin(site: Path, dist: str, entries: dict[str, str], modules: dict[str, str]) -> None:
    """Make ``site`` hold a real installed distribution: a ``.dist-info`` with entry points.

    ``entries`` maps plugin name -> "module:Class"; ``modules`` maps module name -> source.
    importlib.metadata finds it when ``site`` is on ``sys.path`` (``PYTHONPATH``).
    """
    info = site / f"{dist.replace('-', '_')}-0.3.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.3.1\n")
    lines = "\n".join(f"{name} = {target}" for name, target in entries.items())
    (info / "entry_points.txt").write_text(f"[infoflow.plugins]\n{lines}\n")
    for module, source in modules.items():
        (site / f"{module}.py").write_text(textwrap.dedent(source))


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
