"""``npz:PATH``: users' own arrays ``x``, ``y`` and optionally ``x_test``, ``y_test``."""

from __future__ import annotations

import math
import zipfile
from pathlib import Path

import numpy as np
from numpy.lib import format as npy_format

from infoflow_track.errors import UserError, choices_text
from infoflow_track.rawdata import RawData, one_line, standardise, with_official_test

NPZ_KEYS = ("x", "y", "x_test", "y_test")


def npz_path(given: dict[str, str]) -> dict[str, str]:
    """The file of ``npz:PATH``, as an absolute path (one spelling per file)."""
    if not given.get("path"):
        raise UserError("dataset npz needs a file: npz:PATH")
    return {"path": str(Path(given["path"]).expanduser().resolve())}


def _npz_arrays(path: str) -> dict[str, np.ndarray]:
    """Those of x, y, x_test, y_test that the file holds (numbers only, no pickled objects)."""
    try:
        archive = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise UserError(f"npz file {path} does not exist") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise UserError(f"{path} is not a .npz file: {one_line(exc)}") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise UserError(f"{path} holds one array, not a .npz file: use np.savez(path, x=, y=)")
    with archive:
        arrays = {}
        for key in [k for k in NPZ_KEYS if k in archive.files]:
            _check_header(path, archive, key)
            try:
                arrays[key] = archive[key]
            except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
                raise _npz_error(path, key, f"cannot be read: {one_line(exc)}") from None
    _check_npz_keys(path, arrays, archive.files)
    return arrays


#: Deflate shrinks data at most 1032-fold, so a member's stated size beyond that is forged.
_MAX_DEFLATE_RATIO = 1032


def _check_header(path: str, archive: np.lib.npyio.NpzFile, key: str) -> None:
    """Before numpy allocates array ``key``: its .npy header must be readable and its shape x
    itemsize must be the bytes its member holds (a patched header would have numpy allocate
    terabytes), and the member's stated size must fit its compressed size."""
    member = f"{key}.npy" if f"{key}.npy" in archive.zip.namelist() else key
    info = archive.zip.getinfo(member)
    malformed = "malformed or truncated"
    forged = {
        zipfile.ZIP_STORED: info.file_size != info.compress_size,
        zipfile.ZIP_DEFLATED: info.file_size > _MAX_DEFLATE_RATIO * info.compress_size + 64,
    }.get(info.compress_type, False)
    if forged:
        claim = f"{info.file_size} bytes from {info.compress_size} stored"
        raise _npz_error(path, key, f"{malformed}: its zip entry claims {claim}")
    readers = {(1, 0): npy_format.read_array_header_1_0, (2, 0): npy_format.read_array_header_2_0}
    try:
        with archive.zip.open(info) as member_file:
            read = readers.get(npy_format.read_magic(member_file))
            if read is None:  # another .npy version: numpy's own reader checks it
                return
            shape, _, dtype = read(member_file)
            offset = member_file.tell()
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise _npz_error(path, key, f"{malformed}: its .npy header: {one_line(exc)}") from None
    if dtype.hasobject:  # pickled objects: refused when read (allow_pickle=False)
        return
    needed, held = math.prod(shape) * dtype.itemsize, info.file_size - offset
    if needed != held:
        says = f"its header says shape {shape} of {dtype} ({needed} bytes)"
        raise _npz_error(path, key, f"{malformed}: {says}, the file holds {held} bytes of data")


def _npz_error(path: str, key: str, problem: str) -> UserError:
    return UserError(f"npz file {path}, array '{key}': {problem}")


def _check_npz_keys(path: str, arrays: dict[str, np.ndarray], present: list[str]) -> None:
    for key in ("x", "y"):
        if key not in arrays:
            held = choices_text(present)
            raise _npz_error(path, key, f"missing (the file holds {held}); expected x, y")
    for key, other in (("x_test", "y_test"), ("y_test", "x_test")):
        if key in arrays and other not in arrays:
            raise _npz_error(path, other, f"missing: give {key} and {other} both or neither")


def _check_inputs(path: str, key: str, x: np.ndarray, like: np.ndarray | None = None) -> None:
    """x: numbers, (N, D), (N, H, W) or (N, C, H, W), N > 0, finite; samples shaped as like's."""
    if x.dtype.kind not in "biuf":
        raise _npz_error(path, key, f"holds {x.dtype}, not numbers")
    if x.ndim not in (2, 3, 4) or 0 in x.shape:
        raise _npz_error(path, key, f"has shape {x.shape}; expected (N, D), (N, H, W) or "
                                    "(N, C, H, W) with no empty axis")  # fmt: skip
    if like is not None and x.shape[1:] != like.shape[1:]:
        raise _npz_error(path, key, f"has samples of shape {x.shape[1:]}, x {like.shape[1:]}")
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        raise _npz_error(path, key, "holds NaN or infinite values")


def _check_labels(path: str, key: str, y: np.ndarray, n: int) -> None:
    """y: (n,) integer labels (integral floats too)."""
    if y.shape != (n,):
        raise _npz_error(path, key, f"has shape {y.shape}; expected ({n},): a label per sample")
    if y.dtype.kind not in "biuf":
        raise _npz_error(path, key, f"holds {y.dtype}; expected integer labels")
    if y.dtype.kind == "f" and not np.isfinite(y).all():
        raise _npz_error(path, key, "holds NaN or infinite labels")
    if y.dtype.kind == "f" and (y != np.round(y)).any():
        raise _npz_error(path, key, f"holds non-integer labels ({y[y != np.round(y)][0]})")


def load_npz(path: str) -> RawData:
    """Users' own arrays: ``x`` as float32 (N, D) or (N, C, H, W) (images (N, H, W) gain a
    channel) under one affine standardisation for all values, ``y`` of any integer values as
    class indices 0..k-1 named by the values; ``x_test``, ``y_test`` an official test set."""
    arrays = _npz_arrays(path)
    pairs = [("x", "y"), *([("x_test", "y_test")] if "x_test" in arrays else [])]
    for x_key, y_key in pairs:
        _check_inputs(path, x_key, arrays[x_key], None if x_key == "x" else arrays["x"])
        _check_labels(path, y_key, arrays[y_key], len(arrays[x_key]))
    present = np.unique(arrays["y"])
    if len(present) < 2:
        value = present[0].item()
        raise _npz_error(
            path, "y", f"holds a single class ({value}); a classifier needs at least 2"
        )
    x = np.concatenate([arrays[k] for k, _ in pairs]).astype(np.float32)
    x = standardise(x[:, None] if x.ndim == 3 else x)
    labels = np.concatenate([arrays[k] for _, k in pairs]).astype(np.int64)
    values, y = np.unique(labels, return_inverse=True)
    n_train = len(arrays["y"]) if len(pairs) == 2 else None
    return with_official_test(x, y.astype(np.int64), n_train, tuple(map(str, values.tolist())))
