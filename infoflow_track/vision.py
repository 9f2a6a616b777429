"""Sources read through torchvision from the data directory: mnist, fashion-mnist, cifar10.

torchvision is imported only when files are read; checking which files are present is not.
Files are downloaded only when asked (``--download``).
"""

from __future__ import annotations

import functools
import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from infoflow_track.errors import UserError, choices_text
from infoflow_track.rawdata import RawData, one_line, standardise, with_official_test

#: The data directory and whether to download, read from the environment so that spawned
#: study workers see what the command was given (``--data-dir``, ``--download``).
DATA_DIR_ENV = "INFOFLOW_DATA_DIR"
DOWNLOAD_ENV = "INFOFLOW_DOWNLOAD"


def data_dir() -> Path:
    """Where the torchvision sources' files lie (absolute): ``$INFOFLOW_DATA_DIR``, else
    ``$XDG_CACHE_HOME/infoflow/data``, else ``~/.cache/infoflow/data``."""
    given = os.environ.get(DATA_DIR_ENV, "")
    if given:
        return Path(given).expanduser().resolve()
    cache = Path(os.environ.get("XDG_CACHE_HOME", ""))
    base = cache if cache.is_absolute() else Path.home() / ".cache"  # XDG: ignore relative
    return (base / "infoflow" / "data").resolve()


def download_requested() -> bool:
    """Whether missing files may be downloaded: ``$INFOFLOW_DOWNLOAD`` is 1 (``--download``),
    true or yes."""
    return os.environ.get(DOWNLOAD_ENV, "").strip().lower() in {"1", "true", "yes"}


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


@functools.cache
def _reader(name: str) -> type:
    """torchvision's class for source ``name`` with :class:`_PartFiles` mixed in."""
    from torchvision import datasets

    files = VISION[name]
    base = getattr(datasets, files.base)
    namespace: dict[str, object] = {"files": files}
    if hasattr(base, "meta"):  # CIFAR10 checks batches.meta's md5 when it reads it
        namespace["meta"] = {**base.meta, "md5": None}
    return type(f"{files.base}Part", (_PartFiles, base), namespace)


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
