"""Per-trial overhead of `infoflow study` against hand-written Optuna loops, in one process.

Every variant runs the same trivial trials (mlp with one hidden layer of 8 on digits, a
couple of epochs, a small probe set), samples the same space with the same seeded sampler on
its own fresh journal file and SQLite MLflow store, and logs the same per-epoch metrics:

- ``infoflow``: :func:`run_study` (spec, study lock, budget count, owner and heartbeat,
  child runs with trial tags, the probe's records ``cka/matrices.json`` and
  ``probe/planes.json`` per trial, and the figures of the best trial drawn at the end);
- ``optimize + execute_run``: ``study.optimize`` calling infoflow's ``execute_run`` as a child
  run (the logging of ``infoflow run``, figures of every run included; no study machinery);
- ``optimize + mlflow fluent``: ``study.optimize`` with ``mlflow.start_run(nested=True)`` and
  one ``mlflow.log_metrics`` per epoch of the same metrics (no artifacts): what a researcher
  would write by hand.

    .venv/bin/python benchmarks/study_overhead.py [--trials 20] [--epochs 2]
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import mlflow
import optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

from infoflow_track.engine import train
from infoflow_track.experiment import execute_run, plan_run
from infoflow_track.probe import LayerProbe
from infoflow_track.settings import RunSettings
from infoflow_track.study.runner import check_runnable, open_study, run_study
from infoflow_track.study.spec import load_spec
from infoflow_track.study.storage import resolve_storage
from infoflow_track.tracking import Tracker

SPEC = """
name = "overhead"
plugin = "mlp"
n_trials = {trials}
[settings]
dataset = "digits"
epochs = {epochs}
probe_size = 256
[fixed]
widths = [8]
[search]
lr = {{ type = "float", low = 1e-3, high = 3e-2, log = true }}
[sampler]
type = "random"
seed = 0
"""


def suggest(trial: optuna.Trial) -> dict:
    return {"widths": (8,), "lr": trial.suggest_float("lr", 1e-3, 3e-2, log=True)}


def bench_infoflow(root: Path, trials: int, epochs: int) -> float:
    (root / "overhead.toml").write_text(SPEC.format(trials=trials, epochs=epochs))
    spec = load_spec(str(root / "overhead.toml"))
    check_runnable(spec)
    tracker = Tracker(f"sqlite:///{root / 'store' / 'mlflow.db'}")
    ref = resolve_storage(None, root / "store")
    opened = open_study(spec, ref, tracker)
    start = time.perf_counter()
    run_study(spec, ref, tracker, opened, echo=lambda line: None)
    return time.perf_counter() - start


def _study(root: Path) -> optuna.Study:
    storage = JournalStorage(JournalFileBackend(str(root / "optuna.journal")))
    return optuna.create_study(storage=storage, sampler=optuna.samplers.RandomSampler(seed=0),
                               direction="maximize")  # fmt: skip


def bench_execute_run(root: Path, trials: int, settings: RunSettings) -> float:
    tracker = Tracker(f"sqlite:///{root / 'mlflow.db'}")
    parent = tracker.start_run("overhead", run_name="parent")
    study = _study(root)

    def objective(trial: optuna.Trial) -> float:
        plan = plan_run("mlp", suggest(trial), settings)
        result = execute_run(plan, tracker, experiment="overhead", parent_run_id=parent.run_id)
        return result.metrics["acc/test"]

    start = time.perf_counter()
    study.optimize(objective, n_trials=trials)
    elapsed = time.perf_counter() - start
    parent.end()
    return elapsed


def bench_fluent(root: Path, trials: int, settings: RunSettings) -> float:
    mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow.db'}")
    mlflow.set_experiment("overhead")
    study = _study(root)

    class Sink:
        def log_metrics(self, metrics: dict, step: int) -> None:
            mlflow.log_metrics(metrics, step=step)

    def objective(trial: optuna.Trial) -> float:
        plan = plan_run("mlp", suggest(trial), settings)
        with mlflow.start_run(nested=True):
            mlflow.log_params(plan.params())
            probe = LayerProbe(plan.model, plan.data, plan.estimators.estimators)
            result = train(plan.plugin, plan.model, plan.config, plan.data, settings,
                           sink=Sink(), hooks=[probe])  # fmt: skip
        return result.metrics["acc/test"]

    start = time.perf_counter()
    with mlflow.start_run(run_name="parent"):
        study.optimize(objective, n_trials=trials)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    settings = RunSettings(dataset="digits", epochs=args.epochs, probe_size=256)
    plan_run("mlp", {"widths": (8,)}, settings)  # load the data and warm up torch once
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, bench in (
            ("optimize + mlflow fluent", lambda r: bench_fluent(r, args.trials, settings)),
            ("optimize + execute_run", lambda r: bench_execute_run(r, args.trials, settings)),
            ("infoflow study", lambda r: bench_infoflow(r, args.trials, args.epochs)),
        ):
            root = Path(tmp) / name.replace(" ", "_").replace("+", "")
            root.mkdir()
            results[name] = bench(root) / args.trials
    base = results["optimize + mlflow fluent"]
    print(f"{args.trials} trials of {args.epochs} epochs (mlp 8 on digits, probe 256), "
          "seconds per trial:")  # fmt: skip
    for name, per_trial in results.items():
        print(f"  {name:<26} {per_trial:7.3f} s   {per_trial / base:5.2f}x   "
              f"overhead vs fluent {1000 * (per_trial - base):+7.1f} ms")  # fmt: skip


if __name__ == "__main__":
    main()
