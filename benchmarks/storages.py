"""Trials per minute of `infoflow study` on one machine, by Optuna storage and worker count.

Tiny trials (mlp on digits, 1 epoch, one hidden layer of 16, probe 256; the suite's study
spec) run by the real
command with ``--workers W`` for W in 1, 2, 4, 6, against each storage set-up, all in one run
(a fresh study each):

- ``journal``: the default, the Optuna journal file beside a SQLite MLflow store;
- ``postgres``: a PostgreSQL Optuna storage (with the study lock as an advisory lock and
  Optuna's heartbeat), the same SQLite MLflow store;
- ``postgres+mlflow``: PostgreSQL for both Optuna and MLflow's backend store.

PostgreSQL is Debian's server, started here on loopback with its default durability (fsync
on). Throughput is finished trials over the time from the first trial's start to the last
one's end (start-up excluded); the command's wall time is shown beside it. Needs root (the
server runs as user postgres).

    .venv/bin/python benchmarks/storages.py [--trials 30] [--workers 1,2,4,6]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from cluster.servers import Postgres
from test_study import SPEC  # mlp on digits, widths [16], lr and activation searched

INFOFLOW = str(Path(sys.executable).parent / "infoflow")


def run_study(spec: Path, name: str, storage: str, tracking: str, workers: int) -> float:
    """Run the study to its end; the command's wall seconds."""
    started = time.perf_counter()
    subprocess.run([INFOFLOW, "study", str(spec), "--name", name, "--storage", storage,
                    "--tracking-uri", tracking, "--workers", str(workers)], check=True,
                   capture_output=True, env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip
    return time.perf_counter() - started


def trials_per_minute(name: str, storage: str) -> tuple[float, int]:
    """(finished trials per minute between the first start and the last end, trials)."""
    import optuna

    from infoflow_track.study.storage import resolve_storage

    opened = resolve_storage(storage, Path(".")).open()
    trials = optuna.load_study(study_name=name, storage=opened).get_trials(deepcopy=False)
    done = [t for t in trials if t.state.is_finished()]
    span = max(t.datetime_complete for t in done) - min(t.datetime_start for t in done)
    return 60 * len(done) / span.total_seconds(), len(done)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--workers", default="1,2,4,6")
    args = parser.parse_args(argv)
    counts = [int(w) for w in args.workers.split(",")]
    root = Path(tempfile.mkdtemp(prefix="infoflow-storages-"))
    spec = root / "bench.toml"
    spec.write_text(SPEC.format(name="bench", n_trials=args.trials, epochs=1))
    pg = Postgres(root, durable=True)
    try:
        pg.start(None, ("optuna", "mlflow"))
        sqlite = f"sqlite:///{root / 'mlflow.db'}"
        setups = {
            "journal": (f"journal:{root / 'optuna.journal'}", sqlite),
            "postgres": (pg.url("optuna"), sqlite),
            "postgres+mlflow": (pg.url("optuna"), pg.url("mlflow")),
        }
        print(f"{args.trials} trials each, {os.cpu_count()} CPUs; trials/min (command wall s)")
        print(f"{'workers':>8} " + " ".join(f"{s:>24}" for s in setups))
        for workers in counts:
            cells = []
            for label, (storage, tracking) in setups.items():
                name = f"bench-{label}-{workers}"
                wall = run_study(spec, name, storage, tracking, workers)
                rate, done = trials_per_minute(name, storage)
                assert done == args.trials, (label, workers, done)
                cells.append(f"{rate:14.1f} ({wall:5.1f} s)")
            print(f"{workers:>8} " + " ".join(f"{c:>24}" for c in cells), flush=True)
    finally:
        pg.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
