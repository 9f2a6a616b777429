"""Bad data files and directories are refused in one line, before anything runs or is written:
planted pickles among the CIFAR-10 batches, a data directory that is a file, a one-class or
malformed .npz."""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from infoflow_track import UserError
from infoflow_track.cli import app
from infoflow_track.data import load_raw
from infoflow_track.vision import DATA_DIR_ENV, DOWNLOAD_ENV, data_dir

CIFAR_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
               "truck"]  # fmt: skip
CIFAR_FILES = [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The data directory, in $INFOFLOW_DATA_DIR (what a command sets there is undone after);
    the current directory is tmp_path, so a store written by mistake would show."""
    root = (tmp_path / "data").resolve()
    monkeypatch.setenv(DATA_DIR_ENV, str(root))
    monkeypatch.delenv(DOWNLOAD_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    return root


def py2_style_pickle(obj: object) -> bytes:
    """``obj`` pickled as the real CIFAR-10 files are: protocol 2, the array rebuilt by
    ``numpy.core.multiarray._reconstruct`` (the module's name before numpy 2)."""
    data = pickle.dumps(obj, protocol=2)
    return data.replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")


def cifar_batch(n: int, seed: int = 0, label: str = "testing batch 1 of 1") -> dict:
    rng = np.random.default_rng(seed)
    return {
        "batch_label": label,
        "labels": rng.integers(0, 10, n).tolist(),
        "data": rng.integers(0, 256, (n, 3072)).astype(np.uint8),
        "filenames": [f"img_{i}.png" for i in range(n)],
    }


def write_cifar(root: Path, n: int = 6) -> Path:
    """Genuine-format batches (all six) and batches.meta in root/cifar-10-batches-py."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    for seed, name in enumerate(CIFAR_FILES):
        (folder / name).write_bytes(py2_style_pickle(cifar_batch(n, seed, name)))
    meta = {"num_cases_per_batch": n, "label_names": CIFAR_NAMES, "num_vis": 3072}
    (folder / "batches.meta").write_bytes(py2_style_pickle(meta))
    return folder


class SystemPayload:
    """Unpickling this runs a shell command (pickled as ``posix.system``)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch '{self.marker}'",)


class ExecPayload:
    """Unpickling this runs Python code (pickled as ``builtins.exec``)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').write('ran')",)


def test_genuine_format_cifar_batches_load(root: Path) -> None:
    folder = write_cifar(root)
    raw = load_raw("cifar10")
    assert raw.x.shape == (30, 3, 32, 32) and raw.x_test.shape == (6, 3, 32, 32)
    assert raw.class_names == tuple(CIFAR_NAMES)
    first = pickle.loads((folder / "data_batch_1").read_bytes(), encoding="latin1")
    np.testing.assert_array_equal(raw.y[:6], first["labels"])


@pytest.mark.parametrize("payload", [SystemPayload, ExecPayload])
@pytest.mark.parametrize("planted", ["test_batch", "batches.meta"])
def test_a_planted_cifar_pickle_is_refused_unrun(
    planted: str, payload: type, root: Path, tmp_path: Path
) -> None:
    folder = write_cifar(root)
    marker = tmp_path / "payload-ran"
    # A batch whose array is the payload, as a planted file would look at first sight.
    (folder / planted).write_bytes(pickle.dumps({"data": payload(marker)}, protocol=2))
    with pytest.raises(UserError) as caught:
        load_raw("cifar10:split=test")
    message = str(caught.value)
    assert not marker.exists(), "the planted pickle's payload ran"
    assert str(folder / planted) in message and "\n" not in message
    assert "is not " in message and "CIFAR-10" in message
    assert "plugin" not in message


def test_a_planted_cifar_pickle_exits_2_through_the_command(root: Path, tmp_path: Path) -> None:
    folder = write_cifar(root)
    marker = tmp_path / "payload-ran"
    (folder / "test_batch").write_bytes(pickle.dumps(SystemPayload(marker), protocol=2))
    result = CliRunner().invoke(app, ["run", "mlp", "--dataset", "cifar10", "--data-dir",
                                      str(root), "--epochs", "1"])  # fmt: skip
    assert result.exit_code == 2, result.output
    assert not marker.exists(), "the planted pickle's payload ran"
    message = result.stderr.strip()
    assert message == (
        f"error: {folder / 'test_batch'} is not a CIFAR-10 batch: it asks to build "
        "posix.system, which a CIFAR-10 file does not hold (refused, nothing of it was run)"
    )
    assert not (tmp_path / "mlruns").exists()


@pytest.mark.parametrize(
    ("batch", "problem"),
    [
        ({"labels": [1]}, "no 'data'"),
        (cifar_batch(4) | {"data": np.zeros((4, 100), np.uint8)}, "shape (4, 100)"),
        (cifar_batch(4) | {"data": np.zeros((4, 3072), np.float32)}, "float32"),
        (cifar_batch(4) | {"labels": [0, 1, 2]}, "3 labels for 4 images"),
        (cifar_batch(4) | {"labels": [0, 1, 2, 10]}, "labels outside 0..9"),
        ([1, 2, 3], "not a dict"),
    ],
)
def test_a_cifar_batch_of_the_wrong_content_is_refused(batch, problem: str, root: Path) -> None:
    folder = write_cifar(root)
    (folder / "test_batch").write_bytes(py2_style_pickle(batch))
    with pytest.raises(UserError) as caught:
        load_raw("cifar10:split=test")
    message = str(caught.value)
    assert message.startswith(f"{folder / 'test_batch'} is not a CIFAR-10 batch: ")
    assert problem in message and "\n" not in message


def test_a_truncated_cifar_batch_is_one_line(root: Path) -> None:
    folder = write_cifar(root)
    path = folder / "test_batch"
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(UserError) as caught:
        load_raw("cifar10:split=test")
    message = str(caught.value)
    assert message.startswith(f"cannot read {path}: ") and "truncated" in message
    assert "\n" not in message


# --- the data directory -----------------------------------------------------------------------


def test_a_data_directory_that_is_a_file_is_a_user_error(
    root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    file = tmp_path / "data.txt"
    file.write_text("not a directory")
    monkeypatch.setenv(DATA_DIR_ENV, str(file))
    with pytest.raises(UserError) as caught:
        data_dir()
    assert str(caught.value) == (f"--data-dir / ${DATA_DIR_ENV} {file} is a file, not a directory")
    monkeypatch.setenv(DATA_DIR_ENV, str(file / "sub"))
    with pytest.raises(UserError, match=f"{file / 'sub'} lies under {file}, which is a file"):
        data_dir()
    monkeypatch.setenv(DATA_DIR_ENV, "")  # the default, under $XDG_CACHE_HOME
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    (tmp_path / "infoflow").write_text("a file")
    with pytest.raises(UserError, match=f"default data directory {tmp_path / 'infoflow'}/data"):
        data_dir()
    monkeypatch.setenv(DATA_DIR_ENV, str(root))  # a directory not yet made is fine
    assert data_dir() == root


@pytest.mark.parametrize("dataset", ["mnist", "cifar10:split=test"])
def test_a_data_dir_file_exits_2_through_the_command(
    dataset: str, root: Path, tmp_path: Path
) -> None:
    file = tmp_path / "data.txt"
    file.write_text("not a directory")
    args = ["run", "mlp", "--dataset", dataset, "--data-dir", str(file), "--epochs", "1"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert result.stderr.strip() == (
        f"error: --data-dir / ${DATA_DIR_ENV} {file} is a file, not a directory"
    )
    assert not (tmp_path / "mlruns").exists()


# --- npz --------------------------------------------------------------------------------------


def test_an_npz_of_one_class_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "one.npz"
    np.savez(path, x=np.zeros((10, 3)), y=np.full(10, 7))
    with pytest.raises(UserError) as caught:
        load_raw(f"npz:{path}")
    message = str(caught.value)
    assert message == (
        f"npz file {path}, array 'y': holds a single class (7); a classifier needs at least 2"
    )


def test_an_npz_of_one_class_exits_2_through_the_command(root: Path, tmp_path: Path) -> None:
    path = tmp_path / "one.npz"
    np.savez(path, x=np.zeros((10, 3)), y=np.full(10, 7))
    result = CliRunner().invoke(app, ["run", "mlp", "--dataset", f"npz:{path}", "--epochs", "1"])
    assert result.exit_code == 2, result.output
    assert result.stderr.strip().startswith(f"error: npz file {path}, array 'y': holds a single")
    assert not (tmp_path / "mlruns").exists()


def patch_npy_shape(path: Path, key: str, old: str, new: str) -> None:
    """Rewrite member ``key``.npy of the npz at ``path`` with its header's shape text ``old``
    replaced by ``new``, keeping the header's length (its padding absorbs the difference)."""
    with zipfile.ZipFile(path) as archive:
        members = {info.filename: archive.read(info) for info in archive.infolist()}
    data = members[f"{key}.npy"]
    header_len = int.from_bytes(data[8:10], "little")  # format version 1.0
    header = data[10 : 10 + header_len].decode("latin1")
    assert old in header
    patched = header.replace(old, new)
    patched = patched.rstrip(" \n")[: header_len - 1].ljust(header_len - 1) + "\n"
    assert len(patched) == header_len
    members[f"{key}.npy"] = data[:10] + patched.encode("latin1") + data[10 + header_len :]
    with zipfile.ZipFile(path, "w") as archive:
        for name, content in members.items():
            archive.writestr(name, content)


@pytest.mark.parametrize(
    ("shape", "says"),
    [
        ("(1000000000000, 3)", "header says shape (1000000000000, 3) of float64"),
        ("(20, 3)", "header says shape (20, 3) of float64"),
        ("(5, 3)", "header says shape (5, 3) of float64"),
    ],
)
def test_an_npz_with_a_malformed_header_is_one_line(shape: str, says: str, tmp_path: Path) -> None:
    path = tmp_path / "bad.npz"
    np.savez(path, x=np.zeros((10, 3)), y=np.arange(10) % 2)
    patch_npy_shape(path, "x", "(10, 3)", shape)
    with pytest.raises(UserError) as caught:
        load_raw(f"npz:{path}")
    message = str(caught.value)
    assert message.startswith(f"npz file {path}, array 'x': malformed or truncated: ")
    assert says in message and "240 bytes" in message and "\n" not in message
    assert "allocate" not in message


def test_an_npz_with_a_malformed_header_exits_2_through_the_command(
    root: Path, tmp_path: Path
) -> None:
    path = tmp_path / "bad.npz"
    np.savez(path, x=np.zeros((10, 3)), y=np.arange(10) % 2)
    patch_npy_shape(path, "x", "(10, 3)", "(1000000000000, 3)")
    result = CliRunner().invoke(app, ["run", "mlp", "--dataset", f"npz:{path}", "--epochs", "1"])
    assert result.exit_code == 2, result.output
    message = result.stderr.strip()
    assert message.startswith(f"error: npz file {path}, array 'x': malformed or truncated: ")
    assert "\n" not in message and not (tmp_path / "mlruns").exists()


def test_a_well_formed_npz_still_loads(tmp_path: Path) -> None:
    path = tmp_path / "good.npz"
    x, y = np.arange(30.0).reshape(10, 3), np.arange(10) % 3
    np.savez_compressed(path, x=x, y=y, x_test=x[:4], y_test=y[:4])
    raw = load_raw(f"npz:{path}")
    assert raw.x.shape == (10, 3) and raw.x_test.shape == (4, 3)
    np.testing.assert_array_equal(raw.y, y)


def test_an_npz_entry_claiming_more_bytes_than_it_stores_is_refused(tmp_path: Path) -> None:
    # Header and zip entry forged to agree on 2.4 GB that the file does not hold.
    path = tmp_path / "forged.npz"
    np.savez(path, x=np.zeros((10, 3)), y=np.arange(10) % 2)
    patch_npy_shape(path, "x", "(10, 3)", "(100000000, 3)")
    data = bytearray(path.read_bytes())
    entry = data.index(b"PK\x01\x02")  # the central directory's records
    while data[entry + 46 : entry + 46 + 5] != b"x.npy":
        entry = data.index(b"PK\x01\x02", entry + 4)
    data[entry + 24 : entry + 28] = (100_000_000 * 24 + 128).to_bytes(4, "little")
    path.write_bytes(bytes(data))
    with pytest.raises(UserError) as caught:
        load_raw(f"npz:{path}")
    message = str(caught.value)
    assert message.startswith(f"npz file {path}, array 'x': malformed or truncated: ")
    assert "its zip entry claims 2400000128 bytes from 368 stored" in message


def test_an_npz_member_that_is_not_npy_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "junk.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("x.npy", b"not an array at all")
        archive.writestr("y.npy", b"")
    with pytest.raises(UserError) as caught:
        load_raw(f"npz:{path}")
    message = str(caught.value)
    assert message.startswith(f"npz file {path}, array 'x': malformed or truncated: its .npy ")
    assert "\n" not in message
