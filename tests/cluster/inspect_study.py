"""Print one JSON object describing a study as a worker host sees it: its trials from the
Optuna storage and each trial's MLflow run through the tracking server (status, per-epoch
test accuracy, and whether an artifact downloads). Run inside a host's namespace:
``python inspect_study.py STORAGE_URL TRACKING_URI STUDY``."""

from __future__ import annotations

import json
import sys
import tempfile


def main(storage_url: str, tracking_uri: str, name: str) -> None:
    import optuna
    from mlflow.tracking import MlflowClient

    study = optuna.load_study(study_name=name, storage=storage_url)
    client = MlflowClient(tracking_uri)
    trials, runs = [], {}
    for t in study.get_trials(deepcopy=False):
        run_id = t.user_attrs.get("mlflow_run_id")
        trials.append({
            "number": t.number, "state": t.state.name, "params": t.params,
            "failed_trial": t.system_attrs.get("failed_trial"),
            "owner": t.user_attrs.get("infoflow.owner", ""), "run_id": run_id,
            "start": t.datetime_start.timestamp() if t.datetime_start else None,
        })  # fmt: skip
    experiment = client.get_experiment_by_name(name)
    for run in client.search_runs([experiment.experiment_id]):
        if "mlflow.parentRunId" not in run.data.tags:
            continue
        history = client.get_metric_history(run.info.run_id, "acc/test")
        files = [a.path for a in client.list_artifacts(run.info.run_id) if not a.is_dir]
        folders = [a.path for a in client.list_artifacts(run.info.run_id) if a.is_dir]
        for folder in folders:
            files += [a.path for a in client.list_artifacts(run.info.run_id, folder)]
        readable = 0
        if files:
            with tempfile.TemporaryDirectory() as tmp:
                local = client.download_artifacts(run.info.run_id, files[0], tmp)
                with open(local, "rb") as handle:
                    readable = len(handle.read())
        runs[run.info.run_id] = {
            "status": run.info.status, "trial": run.data.tags.get("infoflow.trial_number"),
            "state_tag": run.data.tags.get("infoflow.trial_state"),
            "error": run.data.tags.get("infoflow.error", ""),
            "steps": [m.step for m in history], "artifacts": files, "read_bytes": readable,
            "artifact_uri": run.info.artifact_uri,
        }  # fmt: skip
    print(json.dumps({"trials": trials, "runs": runs}))


if __name__ == "__main__":
    main(*sys.argv[1:4])
