"""The `infoflow` command end to end: a real run read back from MLflow, bad input, broken
plugins, the UI server, and a cheap `--help`."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import INFOFLOW, file_digest, plant_plugin, run_cli
from typer.testing import CliRunner

from infoflow_track.cli import app

EPOCHS = 5
METRICS = ("acc/train", "acc/test", "loss/train")


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory: pytest.TempPathFactory):
    """`infoflow run mlp --dataset digits --epochs 5` with default settings, default store."""
    from mlflow.tracking import MlflowClient

    cwd = tmp_path_factory.mktemp("run")
    proc = run_cli("run", "mlp", "--dataset", "digits", "--epochs", str(EPOCHS), cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    client = MlflowClient(f"sqlite:///{cwd / 'mlruns' / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("mlp").experiment_id])
    return cwd, proc, client, run


@pytest.mark.slow
@pytest.mark.e2e
def test_run_records_every_epoch_of_every_metric(digits_run) -> None:
    _, proc, client, run = digits_run
    assert run.info.status == "FINISHED"
    assert run.info.run_id in proc.stdout
    for key in METRICS:
        history = client.get_metric_history(run.info.run_id, key)
        assert sorted(m.step for m in history) == list(range(EPOCHS + 1)), key  # 0: init


@pytest.mark.slow
@pytest.mark.e2e
def test_run_records_all_params_and_identity_tags(digits_run) -> None:
    _, _, _, run = digits_run
    params = run.data.params
    assert params["widths"] == "256,128,64" and params["activation"] == "relu"
    assert params["lr"] == "0.001" and params["weight_decay"] == "0.0"
    assert params["dataset"] == "digits" and params["epochs"] == str(EPOCHS)
    assert params["classes"] == "all" and params["device"] == "cpu"
    assert params["data.n_train"] == "1437" and params["data.n_test"] == "360"
    assert params["data.n_probe"] == "1797" and params["data.num_classes"] == "10"
    for key in ("batch_size", "seed", "probe_size", "test_fraction", "split_seed"):
        assert key in params
    tags = run.data.tags
    assert tags["infoflow.plugin"] == "mlp"
    assert tags["infoflow.plugin_package"] == "infoflow-plugins"
    assert tags["infoflow.plugin_version"] == "0.1.0"
    assert tags["infoflow.device"] == "cpu"


@pytest.mark.slow
@pytest.mark.e2e
def test_run_measures_every_layer_every_epoch_and_logs_figures(digits_run) -> None:
    _, _, client, run = digits_run
    run_id = run.info.run_id
    kinds = ("mi_xt", "mi_ty", "ceiling_xt", "ceiling_ty", "cka_label", "cka_init")
    for layer in ("hidden1", "hidden2", "hidden3"):
        for kind in kinds:
            steps = sorted(m.step for m in client.get_metric_history(run_id, f"{kind}/{layer}"))
            assert steps == list(range(EPOCHS + 1)), (kind, layer)
    (record,) = client.list_artifacts(run_id, "cka")  # every epoch's matrix in one file
    assert record.path == "cka/matrices.json"
    assert [a.path for a in client.list_artifacts(run_id, "probe")] == ["probe/planes.json"]
    plots = sorted(a.path for a in client.list_artifacts(run_id, "plots"))
    assert plots == ["plots/cka_heatmap.png", "plots/information_plane.png"]
    params = run.data.params
    assert params["mi"] == "renyi" and params["mi.renyi.alpha"] == "1.01"
    assert params["mi.renyi.scale"] == "0.5" and "mi.binning.n_bins" not in params


@pytest.mark.slow
@pytest.mark.e2e
def test_the_default_estimator_keeps_wide_layers_off_their_ceiling(digits_run) -> None:
    _, proc, _, run = digits_run
    metrics = run.data.metrics
    for layer in ("hidden1", "hidden2", "hidden3"):  # 256, 128, 64 units
        assert metrics[f"mi_xt/{layer}"] < 0.95 * metrics[f"ceiling_xt/{layer}"]  # renyi
    assert run.data.tags["infoflow.saturated"] == "none" and "warning" not in proc.stderr


@pytest.mark.slow
def test_a_saturated_layer_ends_the_run_with_one_warning_line(tmp_path: Path, monkeypatch) -> None:
    from mlflow.tracking import MlflowClient

    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = ["run", "mlp", "--epochs", "1", "--probe-size", "256", "--set", "widths=64,3",
            "--mi", "renyi,binning", "--tracking-uri", uri]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    (warning,) = [line for line in result.stderr.splitlines() if line.startswith("warning")]
    assert "hidden1 under binning" in warning and "binning.n_bins" in warning
    assert "hidden2" not in warning  # 3 units stay below their ceiling
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("mlp").experiment_id])
    assert run.data.tags["infoflow.saturated"] == "hidden1 (binning)"
    assert {"mi_xt.binning/hidden1", "ceiling_xt.binning/hidden1"} <= set(run.data.metrics)


@pytest.mark.slow
@pytest.mark.e2e
def test_default_mlp_learns_digits(digits_run) -> None:
    _, _, client, run = digits_run
    final = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "acc/test")}
    assert final[EPOCHS] > 0.90
    assert final[EPOCHS] > final[1]


BAD_INPUTS = {
    "unknown plugin": (["run", "nope"], "unknown plugin 'nope'", "mlp"),
    "unknown dataset": (["run", "mlp", "--dataset", "imagenet"], "'imagenet'", "digits, ib12"),
    "unknown hyperparameter": (["run", "mlp", "--set", "depth=3"], "'depth'", "widths, activation"),
    "wrong type": (["run", "mlp", "--set", "lr=fast"], "'lr'", "1e-06 <= x <= 1"),
    "out of range": (["run", "mlp", "--set", "lr=5"], "'lr'", "1e-06 <= x <= 1"),
    "bad choice": (["run", "mlp", "--set", "activation=gelu"], "'activation'", "relu, tanh"),
    "malformed --set": (["run", "mlp", "--set", "lr"], "malformed --set 'lr'", "key=value"),
    "unavailable device": (["run", "mlp", "--device", "cuda:99"], "'cuda:99'", "auto, cpu"),
    "unknown device": (["run", "mlp", "--device", "tpu"], "'tpu'", "auto, cpu"),
    "absent class": (["run", "mlp", "--classes", "8,42"], "42", "0, 1, 2"),
    "zero epochs": (["run", "mlp", "--epochs", "0"], "setting 'epochs'", "1 <= x <= 10000000"),
    "unknown plugin to show": (["plugins", "show", "nope"], "'nope'", "mlp"),
    "seed too large": (["run", "mlp", "--seed", str(2**70)], "'seed'", "0 <= x <= 4294967295"),
    "split impossible": (
        ["run", "mlp", "--dataset", "synthetic:size=10,classes=4"],
        "too few samples",
        "--test-fraction",
    ),
    "file store": (["run", "mlp", "--tracking-uri", "/tmp/runs"], "'/tmp/runs'", "sqlite:///"),
    "two-slash sqlite": (
        ["run", "mlp", "--tracking-uri", "sqlite://x.db"],
        "'sqlite://x.db'",
        "sqlite:///PATH",
    ),
    "blank experiment": (["run", "mlp", "--experiment", " "], "experiment name ' '", "1 to 500"),
    "long experiment": (["run", "mlp", "--experiment", "e" * 501], "experiment name", "1 to 500"),
    "Default experiment": (["run", "mlp", "--experiment", "Default"], "'Default'", "another"),
    "unknown estimator": (["run", "mlp", "--mi", "knn"], "estimator 'knn'", "binning, kde"),
    "repeated estimator": (["run", "mlp", "--mi", "kde,kde"], "mi kde,kde", "repeated"),
    "zero bins": (
        ["run", "mlp", "--mi", "binning", "--set", "binning.n_bins=0"],
        "'n_bins'",
        "1 <= x <= 32768",
    ),
    "negative noise": (
        ["run", "mlp", "--mi", "kde", "--set", "kde.noise_var=-1"],
        "'noise_var'",
        "1e-12 <= x",
    ),
    "option of an unused estimator": (
        ["run", "mlp", "--set", "kde.noise_var=1"],
        "estimator 'kde'",
        "are renyi",
    ),
    "unknown estimator option": (["run", "mlp", "--set", "renyi.sigma=1"], "'sigma'", "alpha"),
    "bad renyi alpha": (["run", "mlp", "--set", "renyi.alpha=x"], "'alpha'", "float"),
    "setting given twice": (["run", "mlp", "--epochs", "2", "--set", "epochs=3"], "epochs", "once"),
}


@pytest.mark.slow
@pytest.mark.e2e
@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_exits_2_naming_it_and_writes_nothing(
    case: str, digits_run, monkeypatch: pytest.MonkeyPatch
) -> None:
    cwd = digits_run[0]
    db = cwd / "mlruns" / "mlflow.db"
    before = (file_digest(db), sorted(p.name for p in (cwd / "mlruns").iterdir()))
    monkeypatch.chdir(cwd)
    args, named, valid = BAD_INPUTS[case]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    message = result.stderr.strip()
    assert message.startswith("error: ") and "\n" not in message
    assert named in message and valid in message
    assert (file_digest(db), sorted(p.name for p in (cwd / "mlruns").iterdir())) == before


@pytest.mark.slow
@pytest.mark.e2e
def test_bad_input_in_a_fresh_directory_creates_no_store(tmp_path: Path) -> None:
    proc = run_cli("run", "mlp", "--set", "widths=0", cwd=tmp_path)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and proc.stderr.startswith("error: ")
    assert not (tmp_path / "mlruns").exists()


@pytest.mark.slow
@pytest.mark.e2e
def test_tracking_uri_from_the_environment_is_used(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'elsewhere' / 'runs.db'}"
    proc = run_cli(
        "run", "mlp", "--dataset", "ib12", "--epochs", "1", "--set", "widths=10,7,5,4,3",
        "--set", "activation=tanh", "--experiment", "ib12", "--probe-size", "256", cwd=tmp_path,
        env={"MLFLOW_TRACKING_URI": uri},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert not (tmp_path / "mlruns").exists()
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("ib12").experiment_id])
    assert run.data.params["widths"] == "10,7,5,4,3" and run.data.params["dataset"] == "ib12"


def test_plugins_show_lists_each_hyperparameter() -> None:
    result = CliRunner().invoke(app, ["plugins", "show", "mlp"])
    assert result.exit_code == 0
    section = result.stdout.split("default search space:")[0].splitlines()
    rows = {line.split()[0]: line for line in section if line.startswith("  ") and line.strip()}
    assert "list of int" in rows["widths"] and "256,128,64" in rows["widths"]
    assert "one of relu, tanh" in rows["activation"]
    assert "1e-06 <= x <= 1 (log scale)" in rows["lr"]
    assert "Adam learning rate" in result.stdout


def test_datasets_lists_what_is_available_and_the_options() -> None:
    result = CliRunner().invoke(app, ["datasets"])
    assert result.exit_code == 0
    for name in ("digits", "ib12", "synthetic"):
        assert any(
            line.startswith(name) and "available" in line for line in result.stdout.splitlines()
        )
    assert "synthetic:shape=...  input shape instead of dim, e.g. 1x28x28" in result.stdout
    assert "(" not in result.stdout.split("synthetic:size=...")[1].split("\n")[0].split()[0]


def test_help_imports_none_of_torch_mlflow_optuna() -> None:
    code = (
        "import sys\n"
        "from infoflow_track.cli import main\n"
        "sys.argv = ['infoflow', '--help']\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print('HEAVY', sorted(m for m in ('torch', 'mlflow', 'optuna') if m in sys.modules))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert "HEAVY []" in proc.stdout, proc.stdout + proc.stderr
    assert "run" in proc.stdout and "plugins" in proc.stdout


def test_ui_on_a_busy_port_is_a_user_error(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        result = CliRunner().invoke(app, ["ui", "--port", str(busy.getsockname()[1])])
    assert result.exit_code == 2 and "is not free on 127.0.0.1" in result.stderr


NAN_PLUGIN = """
from infoflow_plugins.mlp import MLPPlugin

class NanPlugin(MLPPlugin):
    name = "nan"

    def training_step(self, model, x, y, config):
        return super().training_step(model, x, y, config) * float("nan")
"""


@pytest.mark.slow
@pytest.mark.e2e
def test_diverged_run_exits_1_and_is_recorded_failed(tmp_path: Path, sqlite_uri: str) -> None:
    from mlflow.tracking import MlflowClient

    site = tmp_path / "site"
    plant_plugin(site, "nan-dist", {"nan": "nan_mod:NanPlugin"}, {"nan_mod": NAN_PLUGIN})
    proc = run_cli(
        "run", "nan", "--epochs", "3", "--probe-size", "256", "--tracking-uri", sqlite_uri,
        cwd=tmp_path, env={"PYTHONPATH": str(site)},
    )  # fmt: skip
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr and "training loss is nan at epoch 1" in proc.stderr
    client = MlflowClient(sqlite_uri)
    (run,) = client.search_runs([client.get_experiment_by_name("nan").experiment_id])
    assert run.info.status == "FAILED"
    assert run.data.tags["infoflow.error"].startswith("DivergedError")


@pytest.mark.slow
@pytest.mark.e2e
def test_ctrl_c_ends_the_run_as_killed(tmp_path: Path, sqlite_uri: str) -> None:
    from mlflow.tracking import MlflowClient

    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    proc = subprocess.Popen(
        [INFOFLOW, "run", "mlp", "--dataset", "synthetic:size=2000,dim=16", "--epochs", "100000",
         "--probe-size", "256", "--tracking-uri", sqlite_uri],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    for line in proc.stdout:  # wait until an epoch has been logged
        if line.startswith("epoch"):
            break
    try:
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130 and "Traceback" not in stderr
    assert "stopping after this epoch" in stderr  # not cut mid-write
    client = MlflowClient(sqlite_uri)
    (run,) = client.search_runs([client.get_experiment_by_name("mlp").experiment_id])
    assert run.info.status == "KILLED"
    assert client.get_metric_history(run.info.run_id, "acc/test")  # what was done is kept


@pytest.mark.slow
@pytest.mark.e2e
def test_concurrent_first_runs_create_one_sound_store(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    args = ["run", "mlp", "--epochs", "1", "--set", "widths=8", "--probe-size", "256"]
    procs = [
        subprocess.Popen([INFOFLOW, *args, "--seed", str(i)], cwd=tmp_path, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i in range(3)
    ]  # fmt: skip
    for proc in procs:
        _, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, stderr
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("mlp").experiment_id])
    assert sorted(r.data.params["seed"] for r in runs) == ["0", "1", "2"]


BAD_MODELS = {
    "build_rejects": (
        "raise UserError('this plugin needs exactly 2 classes: use --classes')",
        "needs exactly 2 classes",
    ),
    "no_intermediates": (
        "return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))",
        "breaks the model contract: Sequential has no forward_intermediates",
    ),
}


@pytest.mark.slow
@pytest.mark.e2e
@pytest.mark.parametrize("variant", sorted(BAD_MODELS))
def test_plugin_that_rejects_or_breaks_at_build_exits_2_before_any_run(
    variant: str, tmp_path: Path
) -> None:
    body, message = BAD_MODELS[variant]
    source = f"""
        import torch
        from infoflow_plugins.mlp import MLPPlugin
        from infoflow_track import UserError

        class Bad(MLPPlugin):
            name = "bad"

            def build(self, config, data):
                {body}
    """
    site = tmp_path / "site"
    plant_plugin(site, "bad-dist", {"bad": "bad_mod:Bad"}, {"bad_mod": source})
    proc = run_cli("run", "bad", cwd=tmp_path, env={"PYTHONPATH": str(site)})
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "mlruns").exists()
