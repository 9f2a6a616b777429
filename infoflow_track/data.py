"""Datasets: loaded once per process, split and subset, then held as tensors on the run device.

A dataset is named by a spec ``NAME`` or ``NAME:key=value,...`` (``synthetic:size=60000,
shape=1x28x28,classes=10``). Built in and available offline: ``digits`` (scikit-learn's 8x8
digits), ``ib12`` (the 12-bit task of Shwartz-Ziv & Tishby, shipped with the package) and
``synthetic`` (a seeded Gaussian mixture, for scale tests).

Inputs are float32 of shape (N, *input_shape); labels int64 of shape (N,) in 0..k-1.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources

import numpy as np
import torch

from infoflow_track.errors import UserError, choices_text
from infoflow_track.settings import MAX_SEED, RunSettings

MAX_SYNTHETIC_SIZE = 10_000_000
MAX_SYNTHETIC_VALUES = 2**30  # 4 GiB of float32


@dataclass(frozen=True)
class RawData:
    """A dataset as its source gives it, on the host: x (N, *shape) float32, y (N,) int64."""

    x: np.ndarray
    y: np.ndarray
    class_names: tuple[str, ...]


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
    unavailable_reason: Callable[[], str | None] = lambda: None


def _load_digits() -> RawData:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = bunch.images[:, None]  # (1797, 1, 8, 8), grey levels 0..16
    # One fixed affine map for the whole dataset (zero mean, unit variance over all pixels),
    # as MNIST's usual normalisation: it speeds up training and leaves every MI unchanged.
    x = ((x - x.mean()) / x.std()).astype(np.float32)
    return RawData(x, bunch.target.astype(np.int64), tuple(str(c) for c in range(10)))


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
    ]
}  # fmt: skip


def parse_spec(spec: str) -> tuple[DatasetSource, dict[str, str]]:
    """Split ``NAME[:key=value,...]`` into its source and its options, normalised (defaults
    filled in, one spelling per value).

    Unknown names, unknown or repeated options and sources unavailable here are a UserError.
    """
    name, _, rest = spec.partition(":")
    source = SOURCES.get(name.strip().lower())
    if source is None:
        raise UserError(f"unknown dataset {name!r}: valid are {choices_text(SOURCES)}")
    options: dict[str, str] = {}
    for item in filter(None, (p.strip() for p in rest.split(","))):
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or key not in source.options:
            valid = choices_text(source.options) if source.options else "none"
            raise UserError(f"invalid option {item!r} for dataset {source.name}: options: {valid}")
        if key in options:
            raise UserError(f"dataset option {key} given twice in {spec!r}")
        options[key] = value.strip()
    options = source.normalize(options)
    reason = source.unavailable_reason()
    if reason is not None:
        raise UserError(f"dataset {source.name} is not available here: {reason}")
    return source, options


def canonical_spec(spec: str) -> str:
    """One spelling per dataset: ``synthetic:size=0500`` -> ``synthetic:classes=10,...``."""
    source, options = parse_spec(spec)
    given = ",".join(f"{k}={v}" for k, v in sorted(options.items()))
    return f"{source.name}:{given}" if given else source.name


@functools.lru_cache(maxsize=2)
def _load_raw(canonical: str) -> RawData:  # keyed by the canonical spec: one entry per dataset
    source, options = parse_spec(canonical)
    return source.load(**options)


def load_raw(spec: str) -> RawData:
    """The host arrays of a dataset spec, loaded once per process."""
    return _load_raw(canonical_spec(spec))


def select_classes(raw: RawData, classes: tuple[int, ...] | None) -> RawData:
    """Keep only ``classes`` (original labels), relabelled 0..k-1 in the given order."""
    if classes is None:
        return raw
    present = np.unique(raw.y)
    missing = [c for c in classes if c not in present]
    if missing:
        raise UserError(
            f"invalid --classes: {missing[0]} is not a label of this dataset: valid are "
            f"{choices_text(present.tolist())}"
        )
    lookup = np.full(int(raw.y.max()) + 1, -1, dtype=np.int64)
    lookup[list(classes)] = np.arange(len(classes))
    new_y = lookup[raw.y]
    keep = new_y >= 0
    names = tuple(raw.class_names[c] for c in classes)
    return RawData(raw.x[keep], new_y[keep], names)


def load_dataset(settings: RunSettings, device: torch.device) -> Dataset:
    """Load, subset, split (stratified, seeded by ``split_seed``) and move to ``device``.

    The probe set is ``probe_size`` samples (or all, if fewer) drawn without replacement from
    train and test together with ``split_seed``, so every run on the same split measures on
    the same samples whatever its training seed.
    """
    from sklearn.model_selection import train_test_split

    name = canonical_spec(settings.dataset)
    raw = select_classes(_load_raw(name), settings.classes)
    n, k = raw.y.shape[0], len(raw.class_names)
    counts = np.bincount(raw.y, minlength=k)
    n_test = math.ceil(settings.test_fraction * n)  # as train_test_split rounds
    if counts.min() < 2 or n_test < k or n - n_test < k:
        raise UserError(
            f"dataset {name} has too few samples for a stratified split: {n} "
            f"samples, {counts.min()} in the smallest of {k} classes, --test-fraction "
            f"{settings.test_fraction}; each class needs a sample on both sides"
        )
    train_idx, test_idx = train_test_split(
        np.arange(n), test_size=settings.test_fraction, random_state=settings.split_seed,
        stratify=raw.y,
    )  # fmt: skip
    rng = np.random.default_rng(settings.split_seed)
    probe_idx = np.sort(rng.permutation(n)[: min(settings.probe_size, n)])

    def take(idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:  # indexed on the host
        return torch.from_numpy(raw.x[idx]).to(device), torch.from_numpy(raw.y[idx]).to(device)

    (x_tr, y_tr), (x_te, y_te), (x_pr, y_pr) = take(train_idx), take(test_idx), take(probe_idx)
    return Dataset(name, x_tr, y_tr, x_te, y_te, x_pr, y_pr, raw.class_names)
