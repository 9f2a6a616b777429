"""Sources read through torchvision from the data directory: mnist, fashion-mnist, cifar10.

torchvision is imported only when files are read; checking which files are present is not.
Files are downloaded only when asked (``--download``). CIFAR-10's files are pickles: they are
read here by an unpickler that can build only the arrays, lists and strings the real files hold,
so a planted file cannot run code (torchvision's reader would run it).
"""

from __future__ import annotations

import functools
import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from infoflow_track.envflags import env_flag
from infoflow_track.errors import UserError, choices_text
from infoflow_track.rawdata import RawData, one_line, standardise, with_official_test

#: The data directory and whether to download, read from the environment so that spawned
#: study workers see what the command was given (``--data-dir``, ``--download``).
DATA_DIR_ENV = "INFOFLOW_DATA_DIR"
DOWNLOAD_ENV = "INFOFLOW_DOWNLOAD"


def data_dir() -> Path:
    """Where the torchvision sources' files lie (absolute): ``$INFOFLOW_DATA_DIR``, else
    ``$XDG_CACHE_HOME/infoflow/data``, else ``~/.cache/infoflow/data``. It need not exist yet;
    a file there (or above it) is a UserError."""
    given = os.environ.get(DATA_DIR_ENV, "")
    if given:
        path = Path(given).expanduser().resolve()
        named = f"--data-dir / ${DATA_DIR_ENV} {path}"
    else:
        cache = Path(os.environ.get("XDG_CACHE_HOME", ""))
        base = cache if cache.is_absolute() else Path.home() / ".cache"  # XDG: ignore relative
        path = (base / "infoflow" / "data").resolve()
        named = f"the default data directory {path}"
    existing = next(p for p in (path, *path.parents) if p.exists())  # the root exists
    if not existing.is_dir():
        where = "is a file" if existing == path else f"lies under {existing}, which is a file"
        raise UserError(f"{named} {where}, not a directory")
    return path


def download_requested() -> bool:
    """Whether missing files may be downloaded: ``$INFOFLOW_DOWNLOAD`` is on (1, as
    ``--download`` sets it, true, yes, on); a value that is no boolean word is a UserError
    (see :func:`~infoflow_track.envflags.env_flag`)."""
    return env_flag(DOWNLOAD_ENV)


VISION_SPLITS = ("official", "train", "test")


def split_parts(split: str) -> tuple[str, ...]:
    """The official parts a split reads: ``official`` both, ``train`` or ``test`` one."""
    return ("train", "test") if split == "official" else (split,)


@dataclass(frozen=True)
class VisionFiles:
    """Where torchvision keeps a dataset's files under the data directory, and which they are."""

    base: str  # the torchvision.datasets class that reads them
    folder: str  # torchvision's folder under the data directory
    parts: dict[str, tuple[str, ...]]  # "train" / "test" -> file names
    form: str  # what the files are, for messages
    channels_last: bool = False  # torchvision holds the images as (N, H, W, C), else (N, H, W)

    def missing(self, root: Path, split: str) -> list[str]:
        """The files that ``split`` (official: both parts) needs and ``root`` lacks."""
        needed = dict.fromkeys(name for part in split_parts(split) for name in self.parts[part])
        return [name for name in needed if not (root / self.folder / name).is_file()]


def _idx_files(base: str) -> VisionFiles:
    """MNIST's layout, which FashionMNIST shares under its own folder."""
    parts = {part: (f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte")
             for part, prefix in (("train", "train"), ("test", "t10k"))}  # fmt: skip
    return VisionFiles(base, f"{base}/raw", parts, "uncompressed IDX files: gunzip the .gz")


VISION = {
    "mnist": _idx_files("MNIST"),
    "fashion-mnist": _idx_files("FashionMNIST"),
    "cifar10": VisionFiles(
        "CIFAR10", "cifar-10-batches-py",
        {"train": (*(f"data_batch_{i}" for i in range(1, 6)), "batches.meta"),
         "test": ("test_batch", "batches.meta")},
        "the python version, cifar-10-python.tar.gz unpacked", channels_last=True,
    ),
}  # fmt: skip


class _Refused(pickle.UnpicklingError):
    """A pickle asked for a global that a CIFAR-10 file does not hold."""


def _latin1_encode(text: object, encoding: str = "latin1", errors: str = "strict") -> bytes:
    """``_codecs.encode`` as a protocol-2 pickle written by Python 3 uses it for bytes: latin-1
    text to bytes, and nothing else."""
    if not isinstance(text, str) or encoding.replace("-", "").lower() != "latin1":
        raise _Refused(f"_codecs.encode of {type(text).__name__} to {encoding!r}")
    return text.encode("latin1", "strict")


def _cifar_globals() -> dict[tuple[str, str], object]:
    """What a CIFAR-10 python batch may build: numpy arrays (rebuilt by ``_reconstruct``, or
    ``_frombuffer`` at protocol 5), their dtypes and scalars, under the module names of numpy
    1 (``numpy.core``) and numpy 2 (``numpy._core``), and latin-1 bytes."""
    reconstruct = np.ndarray((0,)).__reduce__()[0]  # the installed numpy's own rebuilders
    frombuffer = np.zeros(1).__reduce_ex__(5)[0]
    scalar = np.uint8(0).__reduce__()[0]
    allowed: dict[tuple[str, str], object] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _latin1_encode,
    }
    for core in ("numpy.core", "numpy._core"):
        allowed[f"{core}.multiarray", "_reconstruct"] = reconstruct
        allowed[f"{core}.multiarray", "scalar"] = scalar
        allowed[f"{core}.numeric", "_frombuffer"] = frombuffer
    return allowed


class _CifarUnpickler(pickle.Unpickler):
    """Builds only what a CIFAR-10 python file holds (dicts, lists, strings, numbers and uint8
    numpy arrays); any other global (a function to call, a class to build) is refused before
    it is looked up, so nothing in the file runs."""

    _allowed = _cifar_globals()

    def find_class(self, module: str, name: str) -> object:
        found = self._allowed.get((module, name))
        if found is None:
            raise _Refused(f"{module}.{name}")
        return found


def _load_cifar_file(path: Path, what: str) -> dict[str, object]:
    """The dict pickled in CIFAR-10 file ``path`` (``what`` it should be, for messages), its
    keys as text; Python 2's strings read as latin-1, as torchvision reads them."""
    try:
        with open(path, "rb") as file:
            loaded = _CifarUnpickler(file, encoding="latin1").load()
    except _Refused as exc:
        raise UserError(
            f"{path} is not {what}: it asks to build {exc}, which a CIFAR-10 file does not "
            "hold (refused, nothing of it was run)"
        ) from None
    except Exception as exc:  # a damaged pickle can fail in any way; nothing of it has run
        raise UserError(
            f"cannot read {path}: {type(exc).__name__}: {one_line(exc)} (a corrupt or "
            "truncated file?)"
        ) from None
    if not isinstance(loaded, dict):
        raise UserError(f"{path} is not {what}: it holds a {type(loaded).__name__}, not a dict")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in loaded.items()}


CIFAR_ROW = 3 * 32 * 32  # a row of a batch: 1024 red, 1024 green, 1024 blue bytes


def read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 python batch: uint8 images (n, 3, 32, 32) and int64 labels (n,) in 0..9.

    The official batches hold 10000 images each; a partial one is read too."""
    what = "a CIFAR-10 batch"
    entry = _load_cifar_file(path, what)
    data, labels = entry.get("data"), entry.get("labels")
    if not isinstance(data, np.ndarray):
        raise UserError(f"{path} is not {what}: no 'data' array (keys: {choices_text(entry)})")
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != CIFAR_ROW or not len(data):
        raise UserError(
            f"{path} is not {what}: its data is {data.dtype} of shape {data.shape}; expected "
            f"uint8 (n, {CIFAR_ROW})"
        )
    if not isinstance(labels, list | np.ndarray):
        raise UserError(f"{path} is not {what}: no 'labels' list (keys: {choices_text(entry)})")
    if not all(isinstance(v, int | np.integer) and not isinstance(v, bool) for v in labels):
        raise UserError(f"{path} is not {what}: its labels are not all integers")
    targets = np.asarray(labels, dtype=np.int64).reshape(-1)
    if len(targets) != len(data):
        raise UserError(f"{path} is not {what}: {len(targets)} labels for {len(data)} images")
    if targets.min() < 0 or targets.max() > 9:
        raise UserError(f"{path} is not {what}: labels outside 0..9 ({targets.max()})")
    return data.reshape(-1, 3, 32, 32), targets


def read_cifar_meta(path: Path) -> tuple[str, ...]:
    """The ten class names of CIFAR-10's batches.meta."""
    what = "CIFAR-10's batches.meta"
    names = _load_cifar_file(path, what).get("label_names")
    if not isinstance(names, list) or len(names) != 10:
        raise UserError(f"{path} is not {what}: no list of 10 'label_names'")
    if not all(isinstance(n, str | bytes) for n in names):
        raise UserError(f"{path} is not {what}: its label_names are not all text")
    return tuple(n.decode("latin1") if isinstance(n, bytes) else n for n in names)


class _PartFiles:
    """Mixed into a torchvision dataset class by :func:`_reader`: it looks only for the files of
    the requested part (train or test), and only for their presence, not their md5, so a
    re-packed or partial copy works; a corrupt file fails in torchvision's reader. It keeps the
    base class's folder (MNIST names its folder after the class) and makes a failed download a
    UserError."""

    files: VisionFiles
    root: str
    train: bool

    @property
    def raw_folder(self) -> str:  # MNIST's files
        return str(Path(self.root) / self.files.folder)

    def _check_exists(self) -> bool:  # MNIST's check
        return not self.files.missing(Path(self.root), "train" if self.train else "test")

    def _check_integrity(self) -> bool:  # CIFAR10's check
        return self._check_exists()

    def download(self) -> None:
        try:
            super().download()  # type: ignore[misc]
        except (RuntimeError, OSError) as exc:  # URLError is an OSError
            raise UserError(
                f"could not download {self.files.base} into {self.raw_folder}: {one_line(exc)}"
                "; without internet access put the files there yourself (`infoflow datasets` "
                "lists them)"
            ) from None


class _CifarPart(_PartFiles):
    """CIFAR10 with :class:`_PartFiles`, whose files are read by :func:`read_cifar_batch` and
    :func:`read_cifar_meta`, never by torchvision's ``pickle.load``: torchvision only downloads.
    Holds ``data`` (n, 32, 32, 3) uint8, ``targets`` and ``classes`` as torchvision does."""

    def __init__(self, root: str, train: bool = True, download: bool = False) -> None:
        self.root, self.train = root, train  # what download() and the checks use
        if download:
            self.download()
        part = "train" if train else "test"
        missing = self.files.missing(Path(root), part)
        if missing:
            raise RuntimeError(f"Dataset not found: {', '.join(missing)}")
        folder = Path(root) / self.files.folder
        names = [n for n in self.files.parts[part] if n != "batches.meta"]
        images, labels = zip(*(read_cifar_batch(folder / n) for n in names), strict=True)
        self.data = np.concatenate(images).transpose(0, 2, 3, 1)  # torchvision's (n, H, W, C)
        self.targets = np.concatenate(labels)
        self.classes = list(read_cifar_meta(folder / "batches.meta"))


@functools.cache
def _reader(name: str) -> type:
    """torchvision's class for source ``name`` with :class:`_PartFiles` (for CIFAR10
    :class:`_CifarPart`) mixed in."""
    from torchvision import datasets

    files = VISION[name]
    base = getattr(datasets, files.base)
    mixin = _CifarPart if name == "cifar10" else _PartFiles
    return type(f"{files.base}Part", (mixin, base), {"files": files})


def split_option(given: dict[str, str]) -> dict[str, str]:
    """``split=official`` (the default), ``train`` or ``test``."""
    split = given.get("split", "official").lower()
    if split not in VISION_SPLITS:
        valid = choices_text(VISION_SPLITS)
        raise UserError(f"invalid split={given['split']!r}: valid are {valid}")
    return {"split": split}


def vision_unavailable(name: str, options: dict[str, str]) -> str | None:
    """Which files to put where, if the split's files are missing and no download is asked."""
    files, root = VISION[name], data_dir()
    missing = files.missing(root, options["split"])
    if not missing or download_requested():
        return None
    return (
        f"put {', '.join(missing)} ({files.form}) into {root / files.folder}, "
        f"choose the data directory with --data-dir (or ${DATA_DIR_ENV}), or add --download"
    )


_READ_ERRORS = (RuntimeError, ValueError, AssertionError, EOFError, KeyError, OSError,
                pickle.UnpicklingError)  # fmt: skip


def _read_part(name: str, part: str) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """One official part ("train" or "test") of a torchvision source: uint8 images
    (n, C, H, W), int64 labels (n,) and the class names."""
    files = VISION[name]
    try:
        read = _reader(name)(str(data_dir()), train=part == "train", download=download_requested())
    except _READ_ERRORS as exc:  # torchvision's readers assert on bad headers
        raise UserError(
            f"cannot read the {name} files in {data_dir() / files.folder}: "
            f"{type(exc).__name__}: {one_line(exc)} (a corrupt or truncated file?)"
        ) from None
    images = np.asarray(read.data)
    images = images.transpose(0, 3, 1, 2) if files.channels_last else images[:, None]
    return images, np.asarray(read.targets, dtype=np.int64), tuple(read.classes)


def load_vision(name: str, split: str) -> RawData:
    """A torchvision source: pixels /255 as float32 (N, C, H, W), standardised by one affine map
    per channel over all the loaded images. ``official`` keeps the official test set apart."""
    parts = (_read_part(name, part) for part in split_parts(split))
    images, labels, classes = zip(*parts, strict=True)
    x = standardise(np.divide(np.concatenate(images), 255, dtype=np.float32), (0, 2, 3))
    n_train = len(labels[0]) if split == "official" else None
    return with_official_test(x, np.concatenate(labels), n_train, classes[0])
