"""Datasets from files: mnist, fashion-mnist and cifar10 read through torchvision from a data
directory (tiny real-format files written here, and the real MNIST test set), users' .npz
arrays, and the `infoflow` command's --data-dir and --download."""

from __future__ import annotations

import gzip
import os
import pickle
import shutil
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from helpers import SHARED_DATA, cpu, file_digest, run_cli
from typer.testing import CliRunner

from infoflow_track import UserError
from infoflow_track.cli import app
from infoflow_track.data import canonical_spec, load_dataset, load_raw
from infoflow_track.settings import RunSettings
from infoflow_track.vision import DATA_DIR_ENV, DOWNLOAD_ENV

IDX_FOLDERS = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}
FIRST_CLASS = {"mnist": "0 - zero", "fashion-mnist": "T-shirt/top"}  # torchvision's names
CIFAR_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
               "truck"]  # fmt: skip
CIFAR_TRAIN = [f"data_batch_{i}" for i in range(1, 6)]


def write_idx(path: Path, array: np.ndarray) -> None:
    """An uncompressed IDX file: big-endian magic 0x000008NN (uint8, NN dims), dims, bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = struct.pack(f">I{array.ndim}I", 0x0800 | array.ndim, *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def write_mnist(root: Path, folder: str, sizes: dict[str, int], seed: int = 0) -> dict:
    """Random images (n, 28, 28) and labels of every class for each file prefix ("train",
    "t10k") in ``sizes``, in root/folder/raw: prefix -> (images, labels)."""
    rng = np.random.default_rng(seed)
    written = {}
    for prefix, n in sizes.items():
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.permutation(np.arange(n) % 10).astype(np.uint8)
        write_idx(root / folder / "raw" / f"{prefix}-images-idx3-ubyte", images)
        write_idx(root / folder / "raw" / f"{prefix}-labels-idx1-ubyte", labels)
        written[prefix] = images, labels
    return written


def write_cifar(root: Path, sizes: dict[str, int], seed: int = 0) -> dict:
    """CIFAR-10 python batches (rows of 1024 red, 1024 green, 1024 blue bytes) and batches.meta.

    Each channel has its own range, red 0..79, green 80..159, blue 160..239, so that a mixed-up
    channel order or a single map for all channels shows. Returns name -> (images CHW, labels).
    """
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    written = {}
    for name, n in sizes.items():
        offsets = np.array([0, 80, 160])[:, None, None]
        images = (rng.integers(0, 80, (n, 3, 32, 32)) + offsets).astype(np.uint8)
        labels = rng.integers(0, 10, n)
        batch = {"data": images.reshape(n, 3072), "labels": labels.tolist()}
        (folder / name).write_bytes(pickle.dumps(batch))
        written[name] = images, labels
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": CIFAR_NAMES}))
    return written


def undo(x: np.ndarray, pixels: np.ndarray) -> np.ndarray:
    """x (N, C, H, W) mapped back to [0, 1] with the per-channel mean and standard deviation of
    the written uint8 ``pixels`` (N, C, H, W), computed here independently."""
    values = pixels / 255.0
    axes = (0, 2, 3)
    return x * values.std(axis=axes, keepdims=True) + values.mean(axis=axes, keepdims=True)


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = (tmp_path / "data").resolve()
    monkeypatch.setenv(DATA_DIR_ENV, str(root))
    monkeypatch.delenv(DOWNLOAD_ENV, raising=False)
    return root


@pytest.mark.parametrize("name", sorted(IDX_FOLDERS))
def test_idx_sources_keep_the_official_split_and_the_file_values(name: str, data_dir) -> None:
    written = write_mnist(data_dir, IDX_FOLDERS[name], {"train": 50, "t10k": 20})
    raw = load_raw(name)
    assert raw.x.shape == (50, 1, 28, 28) and raw.x_test.shape == (20, 1, 28, 28)
    assert raw.x.dtype == np.float32 and raw.y.dtype == np.int64
    np.testing.assert_array_equal(raw.y, written["train"][1])
    np.testing.assert_array_equal(raw.y_test, written["t10k"][1])
    pixels = np.concatenate([written["train"][0], written["t10k"][0]])[:, None]
    x = np.concatenate([raw.x, raw.x_test])
    np.testing.assert_allclose(undo(x, pixels), pixels / 255, atol=1e-5)
    assert len(raw.class_names) == 10 and raw.class_names[0] == FIRST_CLASS[name]


def test_official_test_set_is_the_test_set_and_the_probe_spans_both(data_dir) -> None:
    import torch

    write_mnist(data_dir, "MNIST", {"train": 50, "t10k": 20})
    settings = RunSettings(dataset="mnist", test_fraction=0.5, probe_size=1000)
    data = load_dataset(settings, cpu())
    raw = load_raw("mnist")
    assert data.name == "mnist:split=official"
    assert (data.x_train.shape[0], data.x_test.shape[0]) == (50, 20)  # test_fraction unused
    np.testing.assert_array_equal(data.x_test.numpy(), raw.x_test)
    assert not np.shares_memory(data.x_train.numpy(), raw.x)  # the cache stays untouched
    probe = {row.tobytes() for row in data.x_probe.numpy()}
    assert probe == {row.tobytes() for row in np.concatenate([raw.x, raw.x_test])}
    for x, y, rows in ((data.x_train, data.y_train, data.probe_train),
                       (data.x_test, data.y_test, data.probe_test)):  # fmt: skip
        assert torch.equal(data.x_probe[rows], x) and torch.equal(data.y_probe[rows], y)
    some = load_dataset(RunSettings(dataset="mnist", probe_size=30, seed=5), cpu())
    again = load_dataset(RunSettings(dataset="mnist", probe_size=30, seed=6), cpu())
    assert torch.equal(some.x_probe, again.x_probe)  # fixed by split_seed alone
    assert some.probe_train is None and some.probe_test is None  # a part: evaluated apart


def test_cifar10_is_channels_first_with_one_map_per_channel(data_dir) -> None:
    sizes = dict.fromkeys(CIFAR_TRAIN, 4) | {"test_batch": 10}
    written = write_cifar(data_dir, sizes)
    raw = load_raw("cifar10")
    assert raw.x.shape == (20, 3, 32, 32) and raw.x_test.shape == (10, 3, 32, 32)
    assert raw.class_names == tuple(CIFAR_NAMES)
    pixels = np.concatenate([written[name][0] for name in sizes])
    x = np.concatenate([raw.x, raw.x_test])
    np.testing.assert_allclose(undo(x, pixels), pixels / 255, atol=1e-5)
    np.testing.assert_allclose(x.mean(axis=(0, 2, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(x.std(axis=(0, 2, 3)), 1, atol=1e-4)
    labels = np.concatenate([written[name][1] for name in sizes])
    np.testing.assert_array_equal(np.concatenate([raw.y, raw.y_test]), labels)


def test_split_test_needs_only_the_test_files_and_is_split_again(data_dir) -> None:
    write_mnist(data_dir, "MNIST", {"t10k": 40})
    write_cifar(data_dir, {"test_batch": 30})
    assert load_raw("mnist:split=test").x.shape == (40, 1, 28, 28)
    cifar = load_raw("cifar10:split=test")
    assert cifar.x.shape == (30, 3, 32, 32) and cifar.x_test is None
    data = load_dataset(RunSettings(dataset="mnist:split=test", test_fraction=0.25), cpu())
    assert (data.x_train.shape[0], data.x_test.shape[0]) == (30, 10)
    with pytest.raises(UserError) as caught:
        load_raw("mnist")  # the official split needs the train files too
    assert "put train-images-idx3-ubyte, train-labels-idx1-ubyte (" in str(caught.value)
    with pytest.raises(UserError, match=r"put data_batch_1, .*data_batch_5 \("):
        load_raw("cifar10:split=train")


def test_split_train_reads_only_the_train_files(data_dir) -> None:
    write_mnist(data_dir, "FashionMNIST", {"train": 50})
    data = load_dataset(RunSettings(dataset="fashion-mnist:split=train"), cpu())
    assert data.name == "fashion-mnist:split=train"
    assert (data.x_train.shape[0], data.x_test.shape[0]) == (40, 10)


def test_class_subset_applies_to_the_official_test_set_too(data_dir) -> None:
    written = write_mnist(data_dir, "MNIST", {"train": 50, "t10k": 20})
    data = load_dataset(RunSettings(dataset="mnist", classes=(7, 3)), cpu())
    assert data.class_names == ("7 - seven", "3 - three")
    for labels, kept in ((written["train"][1], data.y_train), (written["t10k"][1], data.y_test)):
        chosen = labels[(labels == 7) | (labels == 3)]
        np.testing.assert_array_equal(kept.numpy(), np.where(chosen == 7, 0, 1))


MISSING = {
    "mnist": ("MNIST/raw", "train-images-idx3-ubyte, train-labels-idx1-ubyte, "
              "t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte (uncompressed IDX"),
    "fashion-mnist:split=test": (
        "FashionMNIST/raw", "t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte ("
    ),
    "cifar10:split=test": ("cifar-10-batches-py", "test_batch, batches.meta (the python"),
}  # fmt: skip


@pytest.mark.parametrize("spec", sorted(MISSING))
def test_missing_files_are_a_user_error_saying_what_to_put_where(spec: str, data_dir) -> None:
    folder, files = MISSING[spec]
    with pytest.raises(UserError) as caught:
        load_raw(spec)
    message = str(caught.value)
    assert f"put {files}" in message and f"into {data_dir / folder}," in message
    assert "--data-dir" in message and "--download" in message and "\n" not in message


@pytest.mark.parametrize(
    ("damage", "reader_says"),
    [
        (lambda data: data[:1000], "RuntimeError"),  # fewer bytes than the header's dims
        (gzip.compress, "AssertionError"),  # still gzipped under the uncompressed name
    ],
)
def test_a_corrupt_file_is_a_user_error(damage: Callable, reader_says: str, data_dir) -> None:
    write_mnist(data_dir, "MNIST", {"t10k": 20})
    path = data_dir / "MNIST" / "raw" / "t10k-images-idx3-ubyte"
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(UserError, match=f"cannot read the mnist files in .*: {reader_says}"):
        load_raw("mnist:split=test")


def test_a_changed_data_directory_is_read_afresh(tmp_path: Path, monkeypatch) -> None:
    for seed, name in enumerate("ab"):
        write_mnist(tmp_path / name, "MNIST", {"t10k": 20}, seed=seed)
    loaded = {}
    for name in "aba":
        monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / name))
        loaded.setdefault(name, []).append(load_raw("mnist:split=test").x)
    assert not np.array_equal(loaded["a"][0], loaded["b"][0])
    np.testing.assert_array_equal(loaded["a"][0], loaded["a"][1])


def test_bad_split_option_is_a_user_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(DOWNLOAD_ENV, "1")  # available whatever the files: checks the option only
    with pytest.raises(UserError, match="invalid split='val': valid are official, train, test"):
        canonical_spec("mnist:split=val")
    assert canonical_spec("CIFAR10:split=Test") == "cifar10:split=test"


def test_real_mnist_test_split_holds_the_file_bytes(tmp_path: Path, monkeypatch) -> None:
    source = SHARED_DATA / "mnist"
    if not source.exists():
        if os.environ.get("CI"):  # CI always has shared/ beside the clone: never skip there
            pytest.fail(f"MNIST test files not found in {source}")
        pytest.skip(f"MNIST test files not found in {source}")
    raw_dir = tmp_path / "MNIST" / "raw"
    raw_dir.mkdir(parents=True)
    for name in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        with gzip.open(source / f"{name}.gz") as packed, open(raw_dir / name, "wb") as out:
            shutil.copyfileobj(packed, out)
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path))
    raw = load_raw("mnist:split=test")
    assert raw.x.shape == (10000, 1, 28, 28) and len(raw.class_names) == 10
    images = (raw_dir / "t10k-images-idx3-ubyte").read_bytes()
    assert struct.unpack(">4I", images[:16]) == (0x803, 10000, 28, 28)
    pixels = np.frombuffer(images, np.uint8, offset=16).reshape(10000, 1, 28, 28)
    np.testing.assert_array_equal(np.rint(undo(raw.x, pixels) * 255), pixels)
    labels = np.frombuffer((raw_dir / "t10k-labels-idx1-ubyte").read_bytes(), np.uint8, offset=8)
    np.testing.assert_array_equal(raw.y, labels)
    assert np.bincount(raw.y).min() > 800  # every digit, roughly balanced


def test_loading_builtin_data_imports_no_torchvision() -> None:
    code = (
        "import sys\nfrom infoflow_track.data import SOURCES, load_raw\nload_raw('ib12')\n"
        "[s.default_unavailable_reason() for s in SOURCES.values()]\n"
        "print('TORCHVISION', 'torchvision' in sys.modules)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert "TORCHVISION False" in proc.stdout, proc.stdout + proc.stderr


# --- npz:PATH ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "loaded"),
    [((40, 5), (40, 5)), ((40, 6, 6), (40, 1, 6, 6)), ((40, 2, 4, 4), (40, 2, 4, 4))],
)
def test_npz_arrays_with_any_integer_labels(shape, loaded, tmp_path: Path, monkeypatch) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 2.0, shape)
    y = rng.permutation(np.repeat([-1, 7, 100, 5], 10))
    np.savez(tmp_path / "mine.npz", x=x, y=y)
    monkeypatch.chdir(tmp_path)
    assert canonical_spec("npz:mine.npz") == f"npz:{(tmp_path / 'mine.npz').resolve()}"
    raw = load_raw("npz:mine.npz")
    assert raw.x.shape == loaded and raw.x.dtype == np.float32 and raw.x_test is None
    assert raw.class_names == ("-1", "5", "7", "100")
    np.testing.assert_array_equal(np.array([-1, 5, 7, 100])[raw.y], y)
    np.testing.assert_allclose(raw.x.reshape(shape) * x.std() + x.mean(), x, atol=1e-5)


def test_npz_official_test_set_and_integral_float_labels(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    x, x_test = rng.integers(0, 9, (30, 6, 6)), rng.integers(0, 9, (10, 6, 6))
    y, y_test = np.arange(30) % 3 * 2.0, np.arange(10) % 3 * 2.0 + 2  # 0, 2, 4 and 2, 4, 6
    path = tmp_path / "split.npz"
    np.savez(path, x=x, y=y, x_test=x_test, y_test=y_test)
    raw = load_raw(f"npz:{path}")
    assert raw.class_names == ("0", "2", "4", "6")
    assert raw.x.shape == (30, 1, 6, 6) and raw.x_test.shape == (10, 1, 6, 6)
    both = np.concatenate([x, x_test])  # one map for train and test together
    np.testing.assert_allclose(raw.x_test[:, 0] * both.std() + both.mean(), x_test, atol=1e-5)
    np.testing.assert_array_equal(raw.y_test, y_test // 2)
    data = load_dataset(RunSettings(dataset=f"npz:{path}", classes=(1, 2)), cpu())
    assert data.class_names == ("2", "4") and data.x_test.shape[0] == 7


X, Y = np.zeros((10, 3)), np.arange(10) % 2


def _savez(**arrays) -> Callable[[Path], None]:
    return lambda path: np.savez(path, **arrays)


def _npy(path: Path) -> None:
    with open(path, "wb") as out:
        np.save(out, X)


BAD_NPZ = {
    "missing file": (lambda path: None, None, "does not exist"),
    "not a zip": (lambda path: path.write_text("x,y\n1,0\n"), None, "is not a .npz file"),
    "one .npy array": (_npy, None, "holds one array, not a .npz file"),
    "no x": (_savez(y=Y), "x", "missing (the file holds y)"),
    "no y": (_savez(x=X, labels=Y), "y", "missing (the file holds x, labels)"),
    "x_test alone": (_savez(x=X, y=Y, x_test=X), "y_test", "give x_test and y_test both"),
    "y_test alone": (_savez(x=X, y=Y, y_test=Y), "x_test", "give y_test and x_test both"),
    "short y": (_savez(x=X, y=Y[:9]), "y", "has shape (9,); expected (10,)"),
    "short y_test": (_savez(x=X, y=Y, x_test=X, y_test=Y[:3]), "y_test", "expected (10,)"),
    "2-d y": (_savez(x=X, y=Y[:, None]), "y", "has shape (10, 1)"),
    "fractional labels": (_savez(x=X, y=Y / 2), "y", "non-integer labels (0.5)"),
    "nan label": (_savez(x=X, y=np.where(Y > 0, np.nan, 0)), "y", "NaN or infinite labels"),
    "text labels": (_savez(x=X, y=Y.astype(str)), "y", "; expected integer labels"),
    "infinite x": (_savez(x=np.where(X == 0, np.inf, 0), y=Y), "x", "NaN or infinite values"),
    "1-d x": (_savez(x=Y, y=Y), "x", "has shape (10,); expected (N, D)"),
    "5-d x": (_savez(x=np.zeros((10, 1, 1, 1, 1)), y=Y), "x", "has shape (10, 1, 1, 1, 1)"),
    "empty x": (_savez(x=X[:0], y=Y[:0]), "x", "has shape (0, 3)"),
    "zero-width x": (_savez(x=X[:, :0], y=Y), "x", "has shape (10, 0)"),
    "x_test of other shape": (
        _savez(x=X, y=Y, x_test=np.zeros((10, 4)), y_test=Y), "x_test", "(4,), x (3,)"
    ),
    "object array": (_savez(x=np.array([[1], "a"], dtype=object), y=Y[:2]), "x", "cannot be read"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(BAD_NPZ))
def test_bad_npz_is_a_user_error_naming_file_and_array(case: str, tmp_path: Path) -> None:
    write, key, problem = BAD_NPZ[case]
    path = tmp_path / "bad.npz"
    write(path)
    with pytest.raises(UserError) as caught:
        load_raw(f"npz:{path}")
    message = str(caught.value)
    assert str(path) in message and problem in message and "\n" not in message
    if key is not None:
        assert f"array '{key}'" in message


def test_npz_without_a_path_is_a_user_error() -> None:
    with pytest.raises(UserError, match="dataset npz needs a file: npz:PATH"):
        load_raw("npz: ")


# --- the command ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_mnist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data directory with MNIST's four files: 50 train and 200 test images."""
    root = tmp_path_factory.mktemp("tiny") / "data"
    write_mnist(root, "MNIST", {"train": 50, "t10k": 200})
    return root


@pytest.fixture(scope="module")
def mnist_run(tiny_mnist: Path, tmp_path_factory: pytest.TempPathFactory):
    """`infoflow run mlp --dataset mnist:split=test --data-dir D` into a fresh SQLite store."""
    cwd = tmp_path_factory.mktemp("run")
    uri = f"sqlite:///{cwd / 'store' / 'mlflow.db'}"
    proc = run_cli(
        "run", "mlp", "--dataset", "mnist:split=test", "--data-dir", str(tiny_mnist),
        "--epochs", "1", "--probe-size", "256", "--set", "widths=16", "--tracking-uri", uri,
        cwd=cwd,
    )  # fmt: skip
    return cwd, uri, proc


@pytest.mark.slow
@pytest.mark.e2e
def test_cli_run_reads_the_data_directory(mnist_run) -> None:
    from mlflow.tracking import MlflowClient

    _, uri, proc = mnist_run
    assert proc.returncode == 0, proc.stderr
    assert "mnist:split=test (160 train, 40 test, 10 classes)" in proc.stdout
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("mlp").experiment_id])
    params = run.data.params
    assert params["dataset"] == "mnist:split=test" and params["data.n_probe"] == "200"


@pytest.mark.slow
@pytest.mark.e2e
def test_cli_run_without_the_files_exits_2_and_writes_nothing(mnist_run, tmp_path: Path) -> None:
    cwd, uri, _ = mnist_run
    db = Path(uri.removeprefix("sqlite:///"))
    before = file_digest(db)
    empty = tmp_path / "empty"
    proc = run_cli("run", "mlp", "--dataset", "mnist", "--data-dir", str(empty),
                   "--tracking-uri", uri, cwd=cwd)  # fmt: skip
    assert proc.returncode == 2
    message = proc.stderr.strip()
    assert message.startswith("error: dataset mnist is not available here: put ")
    assert "\n" not in message and "t10k-labels-idx1-ubyte" in message
    assert f"into {empty.resolve() / 'MNIST' / 'raw'}," in message
    assert "--data-dir" in message and "--download" in message
    assert file_digest(db) == before and before is not None


@pytest.mark.slow
@pytest.mark.e2e
def test_cli_failed_download_is_one_line_and_writes_nothing(tmp_path: Path) -> None:
    # A proxy that refuses: no download anywhere, at once. In a subprocess, as urllib keeps
    # the proxies of its first request for the rest of the process.
    closed = "http://127.0.0.1:9"
    env = {"http_proxy": closed, "https_proxy": closed, "HTTP_PROXY": closed,
           "HTTPS_PROXY": closed, "no_proxy": "", "NO_PROXY": ""}  # fmt: skip
    proc = run_cli("run", "mlp", "--dataset", "mnist:split=test", "--data-dir", "data",
                   "--download", cwd=tmp_path, env=env)  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    message = proc.stderr.strip()
    assert message.startswith("error: could not download MNIST into ") and "\n" not in message
    assert str(tmp_path.resolve() / "data" / "MNIST" / "raw") in message
    assert "put the files there yourself" in message
    assert not (tmp_path / "mlruns").exists()


@pytest.mark.slow
@pytest.mark.e2e
def test_cli_datasets_shows_the_directory_and_what_to_put_where(tiny_mnist: Path) -> None:
    proc = run_cli("datasets", "--data-dir", str(tiny_mnist), cwd=tiny_mnist)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith(f"data directory: {tiny_mnist.resolve()} (--data-dir")
    rows = {line.split()[0]: line.split()[1] for line in lines[1:] if not line.startswith(" ")}
    assert rows == {"digits": "available", "ib12": "available", "synthetic": "available",
                    "mnist": "available", "fashion-mnist": "unavailable",
                    "cifar10": "unavailable", "npz": "available"}  # fmt: skip
    assert f"into {tiny_mnist.resolve() / 'FashionMNIST' / 'raw'}," in proc.stdout
    assert "mnist:split=...  official (default" in proc.stdout
    assert "npz:PATH  x (N, D)" in proc.stdout


def test_cli_data_options_go_to_the_environment_for_study_workers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(DATA_DIR_ENV, "")  # empty is unset; what the command sets is undone after
    monkeypatch.setenv(DOWNLOAD_ENV, "")
    result = CliRunner().invoke(app, ["datasets", "--data-dir", str(tmp_path), "--download"])
    assert result.exit_code == 0, result.output
    assert os.environ[DATA_DIR_ENV] == str(tmp_path.resolve()) and os.environ[DOWNLOAD_ENV] == "1"
    assert "missing files are downloaded on first use" in result.stdout
    assert "unavailable" not in result.stdout
