"""Screenshots of what a researcher sees in the MLflow UI, taken with headless Chromium.

Runs a small study (mlp on digits, 6 trials, median pruning) into a fresh store, compares its
best trials (`infoflow compare --study`), serves the store with `infoflow ui` and photographs:

1. ``experiment.png``: the study's experiment as it opens (model training: the runs table);
2. ``runs_table.png``: the runs table as the printed link opens it (infoflow's saved view:
   objective, parameters and trial state in view, best first);
3. ``trial_metrics.png``: a trial's charts (MI, CKA and accuracy per epoch);
4. ``compare.png``: the cross-run information-plane figure on the parent run's artifacts.

Needs Chromium on PATH (Debian/Ubuntu: ``apt-get install chromium``). Run from the
repository root::

    .venv/bin/python benchmarks/ui_screenshots.py --out screenshots/
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

from infoflow_track.uiserver import rest, wait_until_serving

SPEC = """
name = "ui-tour"
description = "mlp on digits: learning rate and activation, for the UI screenshots"
plugin = "mlp"
n_trials = 6

[settings]
dataset = "digits"
epochs = 4
probe_size = 512

[fixed]
widths = [32, 16]

[search]
lr = { type = "float", low = 1e-4, high = 3e-2, log = true }
activation = { type = "categorical", choices = ["relu", "tanh"] }

[objective]
metric = "acc/test"
direction = "maximize"

[sampler]
type = "random"
seed = 1

[pruner]
type = "median"
n_startup_trials = 2
n_warmup_steps = 1
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def infoflow(*args: str, env: dict[str, str], cwd: Path) -> str:
    command = [str(Path(sys.executable).with_name("infoflow")), *args]
    done = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"infoflow {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def shoot(chromium: str, url: str, path: Path, profile: Path, height: int = 1000) -> None:
    """One screenshot, 1600 x ``height``, of ``url`` after its scripts ran (virtual time
    budget)."""
    subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         f"--user-data-dir={profile}", f"--window-size=1600,{height}",
         "--virtual-time-budget=60000", "--run-all-compositor-stages-before-draw",
         f"--screenshot={path}", url],
        check=True, capture_output=True, timeout=180,
    )  # fmt: skip
    print(f"  {path}  <- {url}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--out", type=Path, default=Path("screenshots"), help="folder for PNGs")
    args = parser.parse_args()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("needs Chromium on PATH (Debian/Ubuntu: apt-get install chromium)")
    args.out.mkdir(parents=True, exist_ok=True)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        uri = f"sqlite:///{root / 'store' / 'mlflow.db'}"
        env = {**os.environ, "INFOFLOW_UI_URL": base, "OMP_NUM_THREADS": "1"}
        env.pop("MLFLOW_TRACKING_URI", None)
        (root / "ui-tour.toml").write_text(SPEC)
        print(infoflow("study", "ui-tour.toml", "--tracking-uri", uri, env=env, cwd=root))
        print(infoflow("compare", "--study", "ui-tour", "--tracking-uri", uri, env=env, cwd=root))
        server = subprocess.Popen(
            [str(Path(sys.executable).with_name("infoflow")), "ui", "--port", str(port),
             "--tracking-uri", uri], env=env, cwd=root, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            print(f"UI ready after {wait_until_serving(server, base):.1f} s (1 worker)")
            experiment = rest(base, "experiments/get-by-name?experiment_name=ui-tour")
            exp_id = experiment["experiment"]["experiment_id"]
            runs = rest(base, "runs/search", {"experiment_ids": [exp_id]})["runs"]
            parent = next(r for r in runs if not any(
                t["key"] == "mlflow.parentRunId" for t in r["data"].get("tags", [])))  # fmt: skip
            trials = [r for r in runs if r is not parent and r["info"]["status"] == "FINISHED"]
            best = max(trials, key=lambda r: next(
                m["value"] for m in r["data"]["metrics"] if m["key"] == "acc/test"))  # fmt: skip
            view = "workflowType=machine_learning"
            profile = root / "chromium"
            shots = {  # as a link opens them: the plain experiment, then what we print
                "experiment.png": f"{base}/#/experiments/{exp_id}",
                "runs_table.png": f"{base}/#/experiments/{exp_id}/runs?{view}"
                "&viewStateShareKey=infoflow",
                "trial_metrics.png": f"{base}/#/experiments/{exp_id}/runs/"
                f"{best['info']['run_id']}/model-metrics?{view}",
                "compare.png": f"{base}/#/experiments/{exp_id}/runs/{parent['info']['run_id']}"
                f"/artifacts/compare/information_planes.png?{view}",
            }
            for name, url in shots.items():  # the metrics page tall enough for the MI charts
                shoot(chromium, url, args.out / name, profile, 4200 if "metrics" in name else 1000)
        finally:
            server.terminate()
            server.wait(timeout=60)


if __name__ == "__main__":
    main()
