"""Every study in studies/ runs from a clean checkout on the data available by default."""

from __future__ import annotations

import pytest
from helpers import REPO, run_in_process
from mlflow.tracking import MlflowClient

from infoflow_track.study.spec import load_spec

STUDIES = sorted(p.stem for p in (REPO / "studies").glob("*.toml"))


def test_the_issue_studies_are_shipped() -> None:
    expected = {"bottleneck-sweep", "depth", "local-mi-lambda", "weight-feedback", "lr-ratio",
                "ib12-tanh-vs-relu"}  # fmt: skip
    assert expected <= set(STUDIES)


@pytest.fixture(scope="module")
def store_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('store') / 'mlflow.db'}"


@pytest.mark.parametrize("name", STUDIES)
def test_study_runs_a_trial_end_to_end(
    name: str, store_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(REPO)  # `infoflow study NAME` in a clean checkout
    spec = load_spec(name)
    assert spec.path.resolve() == (REPO / "studies" / f"{name}.toml").resolve()
    assert spec.description
    counts = run_in_process(spec.path, store_uri, n_trials=1, overrides={"epochs": "1"})
    assert counts.complete == 1, counts
    client = MlflowClient(store_uri)
    runs = client.search_runs([client.get_experiment_by_name(name).experiment_id])
    child = next(r for r in runs if "mlflow.parentRunId" in r.data.tags)
    for objective in spec.objectives:
        assert objective.metric in child.data.metrics


def test_the_lr_ratio_study_optimises_the_notebooks_question() -> None:
    spec = load_spec(str(REPO / "studies" / "lr-ratio.toml"))
    assert [o.metric for o in spec.objectives] == ["cka_label/hidden"]
    assert spec.settings.classes == (8, 9) and spec.fixed["width"] == 2000
