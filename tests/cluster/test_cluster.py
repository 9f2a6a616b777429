"""Three worker hosts on one study over real servers, one host cut off mid-trial.

A PostgreSQL server (the Optuna storage and MLflow's backend store) and an MLflow tracking
server proxying artifacts run in a namespace of their own; three hosts (network namespaces
with their own host names, joined to it by veth pairs) run ``infoflow study --workers 2``
on one study of 18 trials, opened first by the first host. The third host joins by the
study's name alone, without the spec file. Once it runs a trial, its link is cut and its
workers are killed. ``make test-cluster``
runs this (root, Debian's postgresql); the default suite leaves it out.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

import pytest
from test_study import SPEC  # mlp on digits, widths [16], lr and activation searched

from .servers import SERVER_ADDRESS, Lab, Postgres, kill_session, mlflow_server, query_json

pytestmark = pytest.mark.cluster

N_TRIALS = 18
HEARTBEAT_S = 2  # a silent trial is failed after 5 heartbeats: 10 s
INFOFLOW = str(Path(sys.executable).parent / "infoflow")
INSPECT = Path(__file__).with_name("inspect_study.py")


@pytest.fixture
def root():
    path = Path(tempfile.mkdtemp(prefix="infoflow-cluster-"))  # not under pytest's 0700 tmp:
    yield path  # the postgres user must reach its data directory
    shutil.rmtree(path, ignore_errors=True)


def trials_seen(storage) -> list:
    """The study's trials, read over the PostgreSQL socket from this (root) namespace."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        return optuna.load_study(study_name="cluster", storage=storage).get_trials(deepcopy=False)
    except KeyError:
        return []


def wait_for(condition, what: str, procs, timeout: float = 300):
    """Poll ``condition()`` until it returns something true; fail early if a host ends."""
    end = time.monotonic() + timeout
    while not (found := condition()):
        ended = [p.args for p in procs if p.poll() is not None]
        assert not ended and time.monotonic() < end, f"waiting for {what}: ended {ended}"
        time.sleep(0.1)
    return found


def test_three_hosts_share_one_study_and_a_cut_host_is_retried(root: Path) -> None:
    started = time.monotonic()
    (root / "spec").mkdir()
    (root / "elsewhere").mkdir()  # the third host's directory: no spec file there
    spec = root / "spec" / "cluster.toml"
    spec.write_text(SPEC.format(name="cluster", n_trials=N_TRIALS, epochs=2))
    env = {"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "MLFLOW_TRACKING_URI": ""}
    with Lab(root, hosts=3) as lab:
        pg = Postgres(root, host=SERVER_ADDRESS, durable=False)
        try:
            pg.start(lab, ("optuna", "mlflow"))
            tracking = mlflow_server(lab, pg.url("mlflow"), root / "artifacts")
            import optuna

            storage = pg.url("optuna")
            local = optuna.storages.RDBStorage(pg.socket_url("optuna"))  # one engine
            servers_up = time.monotonic() - started
            args = ["--storage", storage, "--tracking-uri", tracking, "--workers", "2",
                    "--heartbeat", str(HEARTBEAT_S)]  # fmt: skip

            def host(i: int, target: str, cwd: Path, *more: str):
                return lab.start(lab.hosts[i], [INFOFLOW, "study", target, *args, *more],
                                 root / f"host{i + 1}.log", hostname=f"host{i + 1}", env=env,
                                 cwd=cwd)  # fmt: skip

            # the first host opens the study (spec, budget, parent run) and starts no trial
            begun = host(0, str(spec), root / "spec", "--timeout", "0.001")
            assert begun.wait(timeout=300) == 0, (root / "host1.log").read_text()
            hosts = [host(0, str(spec), root / "spec"), host(1, str(spec), root / "spec"),
                     host(2, "cluster", root / "elsewhere")]  # fmt: skip

            def running_on_host3():
                return [t for t in trials_seen(local) if t.state.name == "RUNNING"
                        and t.user_attrs.get("infoflow.owner", "").startswith("host3:")
                        and "mlflow_run_id" in t.user_attrs]  # fmt: skip

            seen = wait_for(running_on_host3, "a trial running on host 3", hosts)
            cut_at = time.time()
            lab.cut(2)
            kill_session(hosts[2])
            for proc in hosts[:2]:
                proc.wait(timeout=600)
            logs = {i: (root / f"host{i + 1}.log").read_text(errors="replace") for i in range(3)}
            assert [p.returncode for p in hosts[:2]] == [0, 0], logs
            state = query_json(lab, lab.hosts[0], INSPECT, storage, tracking, "cluster")
        finally:
            pg.stop()
    elapsed = time.monotonic() - started
    victims = {t["number"] for t in state["trials"]
               if t["owner"].startswith("host3:") and t["state"] == "FAIL"}  # fmt: skip
    assert {t.number for t in seen} <= victims
    check_study(state, victims, cut_at, logs)
    for trial in seen:  # caught training: its run was closed as abandoned
        assert state["runs"][trial.user_attrs["mlflow_run_id"]]["status"] == "FAILED"
    retries = {t["failed_trial"]: t for t in state["trials"] if t["failed_trial"] is not None}
    to_retry = [retries[number]["start"] - cut_at for number in sorted(victims)]
    print(
        f"\ncluster test: {elapsed:.0f} s in all, servers up in {servers_up:.0f} s; "
        f"cut to retry start: {', '.join(f'{s:.1f} s' for s in to_retry)} "
        f"(heartbeat {HEARTBEAT_S} s, grace {5 * HEARTBEAT_S} s)"
    )


def check_study(state: dict, victims: set[int], cut_at: float, logs: dict) -> None:
    trials, runs = state["trials"], state["runs"]
    retried = {t["failed_trial"] for t in trials if t["failed_trial"] is not None}
    finished = [t for t in trials if t["state"] in ("COMPLETE", "PRUNED")
                or (t["state"] == "FAIL" and t["number"] not in retried)]  # fmt: skip
    assert len(finished) == N_TRIALS, [(t["number"], t["state"]) for t in trials]
    assert not [t for t in trials if t["state"] in ("RUNNING", "WAITING")]
    assert retried == victims  # the cut host's unfinished trials, and only those, were retried
    by_number = {t["number"]: t for t in trials}
    for number in victims:
        victim = by_number[number]
        (retry,) = [t for t in trials if t["failed_trial"] == number]
        assert victim["state"] == "FAIL" and victim["owner"].startswith("host3:")
        assert retry["params"] == victim["params"] and retry["state"] == "COMPLETE"
        assert not retry["owner"].startswith("host3:") and retry["start"] > cut_at
        for run in [r for r in runs.values() if r["trial"] == str(number)]:  # none if killed
            assert run["status"] == "FAILED" and run["state_tag"] == "FAIL"  # before it began
            assert "abandoned: " in run["error"]
    hosts = {t["owner"].split(":")[0] for t in finished}
    assert {"host1", "host2"} <= hosts, hosts
    for trial in finished:
        run = runs[trial["run_id"]]
        assert run["status"] == "FINISHED" and run["steps"] == [0, 1, 2], (
            trial,
            run,
        )  # epoch 0: before training
        assert run["artifact_uri"].startswith("mlflow-artifacts:") and run["read_bytes"] > 0
    counted = [r for r in runs.values() if r["status"] == "FINISHED"]
    assert sorted(int(r["trial"]) for r in counted) == sorted(t["number"] for t in finished)
    assert "done: 18/18 finished" in logs[0] + logs[1]
