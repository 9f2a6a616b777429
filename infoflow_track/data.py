"""Datasets: loaded once per process, split and subset, then held as tensors on the run device.

A dataset is named by a spec ``NAME`` or ``NAME:key=value,...`` (``synthetic:size=60000,
shape=1x28x28,classes=10``, ``mnist:split=test``), or ``npz:PATH``. Built in and available
offline: ``digits`` (scikit-learn's 8x8 digits), ``ib12`` (the 12-bit task of Shwartz-Ziv &
Tishby, shipped with the package) and ``synthetic`` (a seeded Gaussian mixture, for scale tests).
Read through torchvision from the data directory (:func:`data_dir`), downloaded only when
asked: ``mnist``, ``fashion-mnist``, ``cifar10``. Users' own arrays: ``npz:PATH``.

Inputs are float32 of shape (N, *input_shape); labels int64 of shape (N,) in 0..k-1.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from typing import TYPE_CHECKING

import numpy as np

from infoflow_track.errors import UserError, choices_text
from infoflow_track.npz import load_npz, npz_path
from infoflow_track.rawdata import RawData, standardise
from infoflow_track.settings import MAX_SEED, RunSettings
from infoflow_track.vision import (
    data_dir,
    load_vision,
    split_option,
    vision_unavailable,
)

if TYPE_CHECKING:  # torch is imported where tensors are made: listing datasets needs none
    import torch

MAX_SYNTHETIC_SIZE = 10_000_000
MAX_SYNTHETIC_VALUES = 2**30  # 4 GiB of float32


@dataclass(frozen=True)
class Dataset:
    """Train, test and probe tensors on one device. The probe set is fixed for a given split."""

    name: str  # canonical dataset spec
    x_train: torch.Tensor  # (N_train, *input_shape) float32
    y_train: torch.Tensor  # (N_train,) int64
    x_test: torch.Tensor  # (N_test, *input_shape)
    y_test: torch.Tensor  # (N_test,)
    x_probe: torch.Tensor  # (N_probe, *input_shape)
    y_probe: torch.Tensor  # (N_probe,)
    class_names: tuple[str, ...]  # original label of each class index
    # where the probe set holds every train and test sample: each one's row in it (int64)
    probe_train: torch.Tensor | None = None  # (N_train,)
    probe_test: torch.Tensor | None = None  # (N_test,)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def device(self) -> torch.device:
        return self.x_train.device


@dataclass(frozen=True)
class DatasetSource:
    """A named source: how to load it, its options, and whether it can be loaded here."""

    name: str
    summary: str
    load: Callable[..., RawData]  # called with the normalised options, by keyword
    options: dict[str, str] = field(default_factory=dict)  # option name -> help
    #: Validates the given options (text) and returns every option in canonical text form.
    normalize: Callable[[dict[str, str]], dict[str, str]] = lambda options: options
    #: Why the source cannot be loaded here with these (normalised) options; None if it can.
    unavailable_reason: Callable[[dict[str, str]], str | None] = lambda options: None
    #: The option that takes the whole text after ``NAME:`` (``npz:PATH``), if any.
    argument: str | None = None

    def default_unavailable_reason(self) -> str | None:
        """:attr:`unavailable_reason` with the default options (none for an argument)."""
        return None if self.argument else self.unavailable_reason(self.normalize({}))


def _load_digits() -> RawData:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = bunch.images[:, None].astype(np.float32)  # (1797, 1, 8, 8), grey levels 0..16
    # One affine map for the whole dataset, as MNIST's usual normalisation.
    return RawData(standardise(x), bunch.target.astype(np.int64), tuple(map(str, range(10))))


def ib12_inputs() -> np.ndarray:
    """All 4096 12-bit vectors in counting order, most significant bit first: (4096, 12)."""
    codes = np.arange(4096)[:, None]
    return ((codes >> np.arange(11, -1, -1)) & 1).astype(np.float32)


def ib12_labels() -> np.ndarray:
    """The 4096 binary labels of the original ``var_u.mat``, shipped bit-packed: (4096,)."""
    packed = resources.files("infoflow_track").joinpath("resources/ib12_labels.bin").read_bytes()
    return np.unpackbits(np.frombuffer(packed, dtype=np.uint8)).astype(np.int64)


def _load_ib12() -> RawData:
    return RawData(ib12_inputs(), ib12_labels(), ("0", "1"))


def _synthetic_options(given: dict[str, str]) -> dict[str, str]:
    """Check synthetic's options and spell them one way: ``dim=32`` is ``shape=32``."""
    if "dim" in given and "shape" in given:
        raise UserError("synthetic: give dim or shape, not both")
    if "shape" in given:
        dims = [_int_option("shape", p, 1, 65536) for p in given["shape"].lower().split("x")]
    else:
        dims = [_int_option("dim", given.get("dim", "32"), 1, 1 << 20)]
    size = _int_option("size", given.get("size", "10000"), 2, MAX_SYNTHETIC_SIZE)
    if size * math.prod(dims) > MAX_SYNTHETIC_VALUES:
        gib = size * math.prod(dims) * 4 / 2**30  # float32
        raise UserError(
            f"synthetic: size x shape is {gib:.0f} GiB of float32; the limit is "
            f"{MAX_SYNTHETIC_VALUES * 4 / 2**30:.0f} GiB"
        )
    return {
        "size": str(size),
        "shape": "x".join(map(str, dims)),
        "classes": str(_int_option("classes", given.get("classes", "10"), 2, 1000)),
        "seed": str(_int_option("seed", given.get("seed", "0"), 0, MAX_SEED)),
    }


def _load_synthetic(size: str, shape: str, classes: str, seed: str) -> RawData:
    """A seeded Gaussian mixture; options as normalised by :func:`_synthetic_options`."""
    import torch

    n, k = int(size), int(classes)
    dims = tuple(int(p) for p in shape.split("x"))
    d = math.prod(dims)
    g = torch.Generator().manual_seed(int(seed))
    # Class means of norm ~3 under unit isotropic noise: pairs of classes ~4.2 noise standard
    # deviations apart, so the Bayes error is small but not zero whatever the dimension.
    means = torch.randn(k, d, generator=g) * (3.0 / d**0.5)
    y = torch.randint(0, k, (n,), generator=g)
    x = means[y] + torch.randn(n, d, generator=g)
    return RawData(x.reshape(n, *dims).numpy(), y.numpy(), tuple(str(c) for c in range(k)))


def _int_option(name: str, text: str, low: int, high: int) -> int:
    try:
        value = int(text)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise UserError(f"synthetic: invalid {name}={text!r}, valid is an integer {low}..{high}")
    return value


SPLIT_HELP = (
    "official (default: the official train and test sets), or train or test: that part alone, "
    "split by --test-fraction"
)
SOURCES: dict[str, DatasetSource] = {
    s.name: s
    for s in [
        DatasetSource(
            "digits", "scikit-learn's 8x8 handwritten digits, 1797 images, 10 classes",
            _load_digits,
        ),
        DatasetSource(
            "ib12", "all 4096 12-bit inputs of Shwartz-Ziv & Tishby, 2 classes (shipped)",
            _load_ib12,
        ),
        DatasetSource(
            "synthetic", "seeded Gaussian mixture for scale tests",
            _load_synthetic,
            {"size": "samples (10000)", "dim": "flat input width (32)",
             "shape": "input shape instead of dim, e.g. 1x28x28",
             "classes": "number of classes (10)", "seed": "generator seed (0)"},
            _synthetic_options,
        ),
        *(
            DatasetSource(
                name, summary, functools.partial(load_vision, name), {"split": SPLIT_HELP},
                split_option, functools.partial(vision_unavailable, name),
            )
            for name, summary in [
                ("mnist", "MNIST handwritten digits, 28x28 grey, 60000 + 10000 test, 10 classes"),
                ("fashion-mnist", "Zalando's Fashion-MNIST, 28x28 grey, 60000 + 10000 test, "
                                  "10 classes"),
                ("cifar10", "CIFAR-10 photos, 32x32 colour, 50000 + 10000 test, 10 classes"),
            ]
        ),
        DatasetSource(
            "npz", "your own arrays: x, y and optionally x_test, y_test in a .npz file",
            load_npz,
            {"path": "x (N, D), (N, H, W) or (N, C, H, W); y (N,) integer labels"},
            npz_path, argument="path",
        ),
    ]
}  # fmt: skip


def parse_spec(spec: str) -> tuple[DatasetSource, dict[str, str]]:
    """Split ``NAME[:key=value,...]`` (or ``NAME:ARGUMENT``, as ``npz:PATH``) into its source
    and its options, normalised (defaults filled in, one spelling per value).

    Unknown names, unknown or repeated options and sources unavailable here are a UserError.
    """
    name, _, rest = spec.partition(":")
    source = SOURCES.get(name.strip().lower())
    if source is None:
        raise UserError(f"unknown dataset {name!r}: valid are {choices_text(SOURCES)}")
    given = {source.argument: rest.strip()} if source.argument else _key_values(source, rest)
    options = source.normalize(given)
    reason = source.unavailable_reason(options)
    if reason is not None:
        raise UserError(f"dataset {source.name} is not available here: {reason}")
    return source, options


def _key_values(source: DatasetSource, text: str) -> dict[str, str]:
    """``key=value,...`` -> ``{key: value}``, every key one of the source's options, once."""
    options: dict[str, str] = {}
    for item in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or key not in source.options:
            valid = choices_text(source.options) if source.options else "none"
            raise UserError(f"invalid option {item!r} for dataset {source.name}: options: {valid}")
        if key in options:
            raise UserError(f"dataset option {key} given twice in {source.name}:{text}")
        options[key] = value.strip()
    return options


def canonical_spec(spec: str) -> str:
    """One spelling per dataset: ``synthetic:size=0500`` -> ``synthetic:classes=10,...``,
    ``npz:data.npz`` -> ``npz:/absolute/path/data.npz``."""
    source, options = parse_spec(spec)
    if source.argument:
        return f"{source.name}:{options[source.argument]}"
    given = ",".join(f"{k}={v}" for k, v in sorted(options.items()))
    return f"{source.name}:{given}" if given else source.name


@functools.lru_cache(maxsize=2)
def _load_raw(canonical: str, root: str) -> RawData:
    """One entry per dataset and data directory ``root`` (a changed ``$INFOFLOW_DATA_DIR``
    must not be served the arrays read from the former one)."""
    source, options = parse_spec(canonical)
    return source.load(**options)


def load_raw(spec: str) -> RawData:
    """The host arrays of a dataset spec, loaded once per process."""
    return _load_raw(canonical_spec(spec), str(data_dir()))


def select_classes(raw: RawData, classes: tuple[int, ...] | None) -> RawData:
    """Keep only ``classes`` (original labels), relabelled 0..k-1 in the given order, in the
    official test set too."""
    if classes is None:
        return raw
    labels = raw.y if raw.y_test is None else np.concatenate([raw.y, raw.y_test])
    present = np.unique(labels)
    missing = [c for c in classes if c not in present]
    if missing:
        raise UserError(
            f"invalid --classes: {missing[0]} is not a label of this dataset: valid are "
            f"{choices_text(present.tolist())}"
        )
    lookup = np.full(int(labels.max()) + 1, -1, dtype=np.int64)
    lookup[list(classes)] = np.arange(len(classes))

    def keep(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        new_y = lookup[y]
        return x[new_y >= 0], new_y[new_y >= 0]

    names = tuple(raw.class_names[c] for c in classes)
    test = (None, None) if raw.x_test is None else keep(raw.x_test, raw.y_test)
    return RawData(*keep(raw.x, raw.y), names, *test)


def load_dataset(settings: RunSettings, device: torch.device) -> Dataset:
    """Load, subset, split and move to ``device``.

    A source's official test set is the test set (``test_fraction`` is then not used); any
    other dataset is split stratified by class, seeded by ``split_seed``. The probe set is
    ``probe_size`` samples (or all, if fewer) drawn without replacement from train and test
    together with ``split_seed``, so every run on the same split measures on the same samples
    whatever its training seed.
    """
    name = canonical_spec(settings.dataset)
    raw = select_classes(_load_raw(name, str(data_dir())), settings.classes)
    if raw.x_test is None:
        train_idx, test_idx = _stratified_split(name, raw, settings)
        train = _on_device(raw.x[train_idx], raw.y[train_idx], device)  # indexed on the host
        test = _on_device(raw.x[test_idx], raw.y[test_idx], device)
    else:
        _check_official_split(name, raw)
        train = _on_device(raw.x, raw.y, device, copy=True)
        test = _on_device(raw.x_test, raw.y_test, device, copy=True)
    n = len(raw.y) + (0 if raw.y_test is None else len(raw.y_test))
    rng = np.random.default_rng(settings.split_seed)
    probe = _probe_rows(raw, np.sort(rng.permutation(n)[: min(settings.probe_size, n)]))
    rows: tuple = ()  # a probe of every sample holds them in raw order: train rows, then test
    if settings.probe_size >= n:
        import torch

        split = (
            (train_idx, test_idx) if raw.x_test is None else np.split(np.arange(n), [len(raw.y)])
        )
        rows = tuple(torch.from_numpy(np.asarray(r, dtype=np.int64)).to(device) for r in split)
    return Dataset(name, *train, *test, *_on_device(*probe, device), raw.class_names, *rows)


def _on_device(
    x: np.ndarray, y: np.ndarray, device: torch.device, copy: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Host arrays as tensors on ``device``; ``copy`` for the cached arrays themselves, so that
    no run's tensors share memory with the cache, even on the CPU."""
    import torch

    return torch.from_numpy(x).to(device, copy=copy), torch.from_numpy(y).to(device, copy=copy)


def _stratified_split(
    name: str, raw: RawData, settings: RunSettings
) -> tuple[np.ndarray, np.ndarray]:
    """Train and test row indices, stratified by class, seeded by ``split_seed``."""
    from sklearn.model_selection import train_test_split

    n, k = raw.y.shape[0], len(raw.class_names)
    counts = np.bincount(raw.y, minlength=k)
    n_test = math.ceil(settings.test_fraction * n)  # as train_test_split rounds
    if counts.min() < 2 or n_test < k or n - n_test < k:
        raise UserError(
            f"dataset {name} has too few samples for a stratified split: {n} "
            f"samples, {counts.min()} in the smallest of {k} classes, --test-fraction "
            f"{settings.test_fraction}; each class needs a sample on both sides"
        )
    return train_test_split(
        np.arange(n), test_size=settings.test_fraction, random_state=settings.split_seed,
        stratify=raw.y,
    )  # fmt: skip


def _check_official_split(name: str, raw: RawData) -> None:
    """A run needs two training samples and one test sample (after --classes)."""
    if len(raw.y) < 2 or len(raw.y_test) < 1:
        raise UserError(
            f"dataset {name} keeps {len(raw.y)} train and {len(raw.y_test)} official test "
            "samples of the classes asked for: a run needs at least 2 and 1"
        )


def _probe_rows(raw: RawData, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows ``idx`` (sorted) of the train rows followed by the official test rows, if any."""
    if raw.x_test is None:
        return raw.x[idx], raw.y[idx]
    n = len(raw.y)
    train, test = idx[idx < n], idx[idx >= n] - n
    return (np.concatenate([raw.x[train], raw.x_test[test]]),
            np.concatenate([raw.y[train], raw.y_test[test]]))  # fmt: skip
