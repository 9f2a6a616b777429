"""Datasets: the shipped ib12 task against the original file, subsets, splits, probe set."""

from __future__ import annotations

import os

import numpy as np
import pytest
from helpers import SHARED_DATA, cpu

from infoflow_track import UserError
from infoflow_track.data import (
    canonical_spec,
    ib12_inputs,
    ib12_labels,
    load_dataset,
    load_raw,
    select_classes,
)
from infoflow_track.settings import RunSettings


@pytest.fixture(scope="module")
def var_u() -> dict:
    import scipy.io

    path = SHARED_DATA / "ib12" / "var_u.mat"
    if not path.exists():
        if os.environ.get("CI"):  # CI always has shared/ beside the clone: never skip there
            pytest.fail(f"original ib12 file not found at {path}")
        pytest.skip(f"original ib12 file not found at {path}")
    return scipy.io.loadmat(path)


def test_ib12_inputs_are_all_12_bit_vectors_in_counting_order(var_u) -> None:
    x = ib12_inputs()
    assert x.shape == (4096, 12)
    np.testing.assert_array_equal(x, var_u["F"])
    weights = 2 ** np.arange(11, -1, -1)
    np.testing.assert_array_equal(x @ weights, np.arange(4096))  # MSB first, each code once


def test_ib12_labels_are_the_original_ones(var_u) -> None:
    np.testing.assert_array_equal(ib12_labels(), var_u["y"].ravel())


def test_digits_is_standardised_with_one_affine_map() -> None:
    from sklearn.datasets import load_digits

    raw = load_raw("digits")
    assert raw.x.shape == (1797, 1, 8, 8) and raw.x.dtype == np.float32
    assert abs(raw.x.mean()) < 1e-5 and abs(raw.x.std() - 1) < 1e-4
    grey = load_digits().images.ravel()  # one increasing affine map: correlation exactly 1
    np.testing.assert_allclose(np.corrcoef(raw.x.ravel(), grey)[0, 1], 1.0, rtol=1e-6)


def test_class_subset_keeps_and_relabels_in_given_order() -> None:
    raw = load_raw("digits")
    sub = select_classes(raw, (9, 8))
    assert sub.class_names == ("9", "8")
    assert len(sub.y) == int(((raw.y == 8) | (raw.y == 9)).sum())
    np.testing.assert_array_equal(sub.x[sub.y == 0], raw.x[raw.y == 9])
    with pytest.raises(UserError, match="42 is not a label"):
        select_classes(raw, (8, 42))


def test_split_is_seeded_stratified_disjoint_and_on_device() -> None:
    import torch

    settings = RunSettings(dataset="digits", test_fraction=0.25, split_seed=3)
    a, b = load_dataset(settings, cpu()), load_dataset(settings, cpu())
    assert torch.equal(a.x_test, b.x_test)
    assert a.x_train.shape[0] + a.x_test.shape[0] == 1797
    assert abs(a.x_test.shape[0] - 0.25 * 1797) <= 1
    train_rows = {tuple(r) for r in a.x_train.flatten(1).tolist()}
    test_rows = {tuple(r) for r in a.x_test.flatten(1).tolist()}
    # digits holds a few duplicated images; all but those must be on one side only
    assert len(train_rows & test_rows) <= 5
    share_train = torch.bincount(a.y_train) / a.y_train.numel()
    share_test = torch.bincount(a.y_test) / a.y_test.numel()
    assert (share_train - share_test).abs().max() < 0.02
    other = load_dataset(RunSettings(dataset="digits", test_fraction=0.25, split_seed=4), cpu())
    assert other.x_test.shape == a.x_test.shape
    assert not torch.equal(other.x_test, a.x_test)  # the split seed alone changes the split
    assert a.x_train.dtype == torch.float32 and a.y_train.dtype == torch.int64


def test_probe_set_is_fixed_by_the_split_seed_not_the_training_seed() -> None:
    import torch

    def probe(**kwargs):
        return load_dataset(RunSettings(dataset="ib12", probe_size=100, **kwargs), cpu()).x_probe

    assert probe(seed=1).shape == (100, 12)
    assert torch.equal(probe(seed=1), probe(seed=2))
    assert not torch.equal(probe(split_seed=0), probe(split_seed=1))
    codes = probe() @ (2 ** torch.arange(11, -1, -1)).float()
    assert codes.max() > 1000  # drawn from the whole task, not its first rows
    whole = load_dataset(RunSettings(dataset="ib12"), cpu())
    assert len({tuple(r) for r in whole.x_probe.tolist()}) == 4096  # by default: the whole task
    for x, y, rows in ((whole.x_train, whole.y_train, whole.probe_train),
                       (whole.x_test, whole.y_test, whole.probe_test)):  # fmt: skip
        assert torch.equal(whole.x_probe[rows], x) and torch.equal(whole.y_probe[rows], y)
    assert load_dataset(RunSettings(dataset="ib12", probe_size=100), cpu()).probe_train is None


def test_synthetic_options_shape_and_determinism() -> None:
    raw = load_raw("synthetic:size=500,shape=1x28x28,classes=3")
    assert raw.x.shape == (500, 1, 28, 28)
    assert set(np.unique(raw.y)) == {0, 1, 2}
    again = load_raw("synthetic:classes=3,shape=1x28x28,size=500")
    np.testing.assert_array_equal(raw.x, again.x)
    flat = load_raw("synthetic:size=300,dim=5")
    assert flat.x.shape == (300, 5)


def test_canonical_spec_spells_each_dataset_one_way() -> None:
    assert canonical_spec("DIGITS") == canonical_spec("digits:") == "digits"
    full = "synthetic:classes=3,seed=0,shape=32,size=500"
    for spelling in (
        "synthetic:size=500,classes=3",
        "synthetic:classes=3,size=0500",
        "synthetic: size = 500 , classes=3,dim=32",
        "synthetic:classes=3,size=500,shape=32,seed=+0",
    ):
        assert canonical_spec(spelling) == full, spelling
    assert canonical_spec("synthetic:shape=1X28X28").endswith("shape=1x28x28,size=10000")


def test_too_few_samples_for_a_stratified_split_is_a_user_error() -> None:
    settings = RunSettings(dataset="synthetic:size=10,classes=4")
    with pytest.raises(UserError, match="too few samples for a stratified split: 10 samples"):
        load_dataset(settings, cpu())


@pytest.mark.parametrize("dim", [5, 784])
def test_synthetic_task_is_learnable_but_not_trivial_in_any_dimension(dim: int) -> None:
    from sklearn.linear_model import LogisticRegression

    raw = load_raw(f"synthetic:size=4000,dim={dim}")
    classifier = LogisticRegression(max_iter=2000).fit(raw.x[:3000], raw.y[:3000])
    accuracy = classifier.score(raw.x[3000:], raw.y[3000:])
    assert 0.5 < accuracy < 0.97  # chance is 0.1


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("cifar100", "unknown dataset 'cifar100': valid are digits, ib12, synthetic"),
        ("digits:size=3", "invalid option 'size=3' for dataset digits"),
        ("synthetic:size=1", "invalid size='1'"),
        ("synthetic:dim=abc", "invalid dim='abc'"),
        ("synthetic:seed=99999999999999999999", "invalid seed="),
        ("synthetic:size=100,size=200", "option size given twice"),
        ("synthetic:size=10000000,dim=1000", "37 GiB of float32"),
        ("synthetic:dim=3,shape=3", "dim or shape, not both"),
        ("synthetic:shape=1xAx2", "invalid shape"),
        ("synthetic:colour=red", "options: size, dim, shape, classes, seed"),
    ],
)
def test_bad_dataset_specs_are_user_errors(spec: str, message: str) -> None:
    with pytest.raises(UserError, match=message):
        load_raw(spec)
