"""Mutual-information estimators against hand-worked values, ib12 ground truth, bounds,
invariances and independent references (numpy, scikit-learn) written here."""

from __future__ import annotations

import math
import subprocess
import sys
from typing import TYPE_CHECKING

import numpy as np
import pytest

from infoflow_track.data import ib12_inputs, ib12_labels

if TYPE_CHECKING:
    import torch

LN2 = math.log(2.0)


def h_bits(probabilities) -> float:
    """Entropy in bits, by the textbook formula."""
    return -sum(p * math.log2(p) for p in probabilities if p > 0)


def tensor(rows) -> torch.Tensor:
    import torch

    return torch.tensor(rows, dtype=torch.float64)


def random_layer(seed: int, n: int = 600, width: int = 8, classes: int = 4):
    """Activations of a random ReLU layer over inputs that depend on the labels."""
    import torch

    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, classes, (n,), generator=g)
    x = torch.randn(n, 16, generator=g) + y[:, None].double() * 0.5
    w = torch.randn(16, width, generator=g, dtype=torch.float64)
    return torch.relu(x.double() @ w), y


# --- entropies and binned MI of small distributions worked by hand ---------------------


@pytest.mark.parametrize(
    ("counts", "expected"),
    [([1, 1], 1.0), ([1, 1, 1, 1], 2.0), ([2, 1, 1], 1.5), ([7], 0.0), ([3, 1], 0.811278)],
)
def test_entropy_of_counts_matches_hand_values(counts, expected) -> None:
    from infoflow_track.measures import entropy_bits

    assert entropy_bits(tensor(counts)).item() == pytest.approx(expected, abs=1e-6)


def test_entropy_ignores_empty_bins_and_works_row_wise() -> None:
    from infoflow_track.measures import entropy_bits

    rows = entropy_bits(tensor([[1, 1, 0, 0], [1, 1, 1, 1]]))
    np.testing.assert_allclose(rows.numpy(), [1.0, 2.0])


def test_binned_mi_of_a_three_symbol_layer() -> None:
    # T takes values 0, 0, 1, 2 -> H(T) = 1.5; Y = 0, 0, 1, 1 -> H(T|Y) = 0.5 * 0 + 0.5 * 1
    import torch

    from infoflow_track.measures import mi_binned

    t, y = tensor([[0.0], [0.0], [1.0], [2.0]]), torch.tensor([0, 0, 1, 1])
    i_xt, i_ty = mi_binned(t, y, n_bins=3)
    assert i_xt.item() == pytest.approx(1.5)
    assert i_ty.item() == pytest.approx(1.0)


def test_binned_mi_treats_the_whole_vector_as_one_symbol() -> None:
    # per unit each column holds 2 values; as vectors there are 3 symbols with p = 1/2, 1/4, 1/4
    import torch

    from infoflow_track.measures import mi_binned

    t = tensor([[0, 1], [1, 0], [0, 1], [1, 1]])
    y = torch.tensor([0, 1, 0, 1])  # Y determines which of {(0,1)} vs {(1,0),(1,1)}
    i_xt, i_ty = mi_binned(t, y, n_bins=2)
    assert i_xt.item() == pytest.approx(1.5)
    assert i_ty.item() == pytest.approx(1.0)  # = H(Y): T determines Y


def test_binned_mi_of_a_label_independent_layer_is_zero() -> None:
    import torch

    from infoflow_track.measures import mi_binned

    t, y = tensor([[0.0], [1.0], [0.0], [1.0]]), torch.tensor([0, 0, 1, 1])
    i_xt, i_ty = mi_binned(t, y, n_bins=2)
    assert (i_xt.item(), i_ty.item()) == pytest.approx((1.0, 0.0))


def test_constant_layer_carries_no_information() -> None:
    import torch

    from infoflow_track.measures import mi_binned, mi_kde, mi_per_unit

    y = torch.arange(10) % 3
    for estimate in (mi_binned, mi_kde, mi_per_unit):
        i_xt, i_ty = estimate(torch.full((10, 5), 0.7), y)
        assert (i_xt.item(), i_ty.item()) == pytest.approx((0.0, 0.0), abs=1e-6), estimate


# --- ib12: the identity layer ------------------------------------------------------------


def test_ib12_identity_layer_has_12_bits_and_all_label_information() -> None:
    import torch

    from infoflow_track.measures import mi_binned

    x = torch.from_numpy(ib12_inputs()).double()
    y = torch.from_numpy(ib12_labels())
    p1 = y.double().mean().item()
    i_xt, i_ty = mi_binned(x, y)
    assert i_xt.item() == pytest.approx(12.0)
    assert i_ty.item() == pytest.approx(h_bits([p1, 1 - p1]))
    i_xt, i_ty = mi_binned(x, y, bin_width=0.5)
    assert (i_xt.item(), i_ty.item()) == pytest.approx((12.0, h_bits([p1, 1 - p1])))


def test_ib12_two_bins_of_one_unit_give_one_bit() -> None:
    import torch

    from infoflow_track.measures import mi_binned

    x = torch.from_numpy(ib12_inputs()).double()
    y = torch.from_numpy(ib12_labels())
    i_xt, _ = mi_binned(x[:, :1], y, n_bins=2)  # the first bit alone: half 0, half 1
    assert i_xt.item() == pytest.approx(1.0)


# --- bounds, invariances, references ------------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("n_bins", [2, 10, 30])
def test_binned_mi_respects_the_information_bounds(seed: int, n_bins: int) -> None:
    from infoflow_track.measures import mi_binned

    t, y = random_layer(seed)
    i_xt, i_ty = (v.item() for v in mi_binned(t, y, n_bins=n_bins))
    h_y = h_bits(np.bincount(y.numpy()) / len(y))
    assert 0.0 <= i_ty <= min(i_xt, h_y) + 1e-9
    assert i_xt <= math.log2(len(y)) + 1e-9


def test_range_binning_is_invariant_to_affine_maps_of_the_layer() -> None:
    import torch

    from infoflow_track.measures import mi_binned

    t = torch.randint(0, 7, (300, 4)).double()  # integer values: affine images stay exact
    y = torch.randint(0, 3, (300,))
    reference = mi_binned(t, y, n_bins=7)
    for mapped in (2.0 * t + 3.0, 0.5 * t - 10.0):
        assert [v.item() for v in mi_binned(mapped, y, n_bins=7)] == pytest.approx(
            [v.item() for v in reference]
        )


def numpy_binned_mi(t: np.ndarray, y: np.ndarray, n_bins: int) -> tuple[float, float]:
    """Reference: np.digitize on the layer's edges, np.unique rows, scikit-learn's MI."""
    from sklearn.metrics import mutual_info_score

    edges = np.linspace(t.min(), t.max(), n_bins + 1)
    codes = np.clip(np.digitize(t, edges) - 1, 0, n_bins - 1)
    _, ids = np.unique(codes, axis=0, return_inverse=True)
    ids = ids.reshape(-1)
    return mutual_info_score(ids, ids) / LN2, mutual_info_score(ids, y) / LN2


@pytest.mark.parametrize("seed", range(3))
def test_binned_mi_agrees_with_a_numpy_and_sklearn_reference(seed: int) -> None:
    from infoflow_track.measures import mi_binned

    t, y = random_layer(seed, width=3)
    ours = [v.item() for v in mi_binned(t, y, n_bins=12)]
    assert ours == pytest.approx(numpy_binned_mi(t.numpy(), y.numpy(), 12), abs=1e-9)


@pytest.mark.parametrize(
    ("kind", "width"),
    [("large ReLU", 500.0), ("tanh, half negative", 0.1)],
)
def test_fixed_width_bins_handle_unbounded_and_negative_activations(
    kind: str, width: float
) -> None:
    import torch
    from sklearn.metrics import mutual_info_score

    from infoflow_track.measures import bin_codes, mi_binned

    t, y = random_layer(0)
    t = t * 1e4 if kind == "large ReLU" else torch.tanh(t - t.mean())
    codes = bin_codes(t, bin_width=width)
    expected = np.floor(t.numpy() / width)  # edges at k * width
    np.testing.assert_array_equal(codes.long().numpy(), expected - expected.min())
    _, ids = np.unique(expected, axis=0, return_inverse=True)
    i_xt, i_ty = mi_binned(t, y, bin_width=width)
    assert i_xt.item() == pytest.approx(mutual_info_score(ids.ravel(), ids.ravel()) / LN2)
    assert i_ty.item() == pytest.approx(mutual_info_score(ids.ravel(), y.numpy()) / LN2)


def test_non_finite_activations_give_nan_not_a_number_that_looks_right() -> None:
    from infoflow_track.measures import mi_binned, mi_kde, mi_per_unit

    t, y = random_layer(10)
    for bad in (float("nan"), float("inf")):
        t[0, 0] = bad
        for estimate in (mi_binned, mi_per_unit, mi_kde):
            assert all(math.isnan(v.item()) for v in estimate(t, y)), (estimate, bad)


@pytest.mark.parametrize("half", ["float16", "bfloat16"])
def test_half_precision_activations_are_measured_in_float32(half: str) -> None:
    import torch

    from infoflow_track.measures import mi_binned, mi_kde, mi_per_unit, mi_soft_per_unit

    t, y = random_layer(11, width=4)
    dtype = getattr(torch, half)  # named: collecting imports no torch
    t = (t / t.max() * 3e-4).to(dtype)  # a span whose bin scale overflows float16
    exact = t.double()
    for estimate in (mi_binned, mi_per_unit):
        assert [v.item() for v in estimate(t, y)] == pytest.approx(
            [v.item() for v in estimate(t.float(), y)]
        )
        assert estimate(t, y)[0].item() > 2.0  # not the collapse to one bin
    kde = [v.item() for v in mi_kde(t * 1e3, y)]
    assert kde == pytest.approx([v.item() for v in mi_kde(exact * 1e3, y)], abs=1e-4)
    soft = mi_soft_per_unit(t, y)
    assert torch.isfinite(soft).all() and soft.dtype == torch.float32


def test_integer_labels_of_any_width_are_accepted() -> None:
    import torch

    from infoflow_track.measures import mi_binned, mi_kde, mi_soft_per_unit

    t, y = random_layer(12)
    expected = [v.item() for v in mi_kde(t, y)]
    for dtype in (torch.int32, torch.int16, torch.uint8):
        assert [v.item() for v in mi_kde(t, y.to(dtype))] == pytest.approx(expected)
        assert mi_soft_per_unit(t, y.to(dtype)).shape == (8,)
    with pytest.raises(ValueError, match="non-negative"):
        mi_binned(t, y - 1)


def test_binned_mi_agrees_in_float32_and_float64() -> None:
    from infoflow_track.measures import mi_binned

    t, y = random_layer(3)
    wide = [v.item() for v in mi_binned(t, y)]
    narrow = [v.item() for v in mi_binned(t.float(), y)]
    assert narrow == pytest.approx(wide, abs=0.02)


def test_per_unit_mi_is_the_notebooks_sklearn_loop_vectorised() -> None:
    from sklearn.metrics import mutual_info_score

    from infoflow_track.measures import mi_per_unit

    t, y = random_layer(1, width=6)
    n_bins = 10
    per_unit_xt, per_unit_ty = [], []
    for k in range(t.shape[1]):  # the older studies' loop, unit by unit
        col = t[:, k].numpy()
        edges = np.linspace(col.min(), col.max(), n_bins + 1)
        codes = np.clip(np.digitize(col, edges) - 1, 0, n_bins - 1)
        per_unit_xt.append(mutual_info_score(codes, codes) / LN2)
        per_unit_ty.append(mutual_info_score(codes, y.numpy()) / LN2)
    i_xt, i_ty = mi_per_unit(t, y, n_bins=n_bins)
    assert i_xt.item() == pytest.approx(np.mean(per_unit_xt), abs=1e-9)
    assert i_ty.item() == pytest.approx(np.mean(per_unit_ty), abs=1e-9)


def test_measures_reject_malformed_input_with_a_precise_error() -> None:
    import torch

    from infoflow_track.measures import mi_binned, mi_kde

    t, y = torch.zeros(4, 2), torch.zeros(4, dtype=torch.long)
    with pytest.raises(ValueError, match="labels must be an integer"):
        mi_binned(t, y[:3])
    with pytest.raises(ValueError, match="labels must be an integer"):
        mi_kde(t, y.float())
    with pytest.raises(ValueError, match="activations must be a floating"):
        mi_binned(t.long(), y)
    with pytest.raises(ValueError, match="bound must be one of"):
        mi_kde(t, y, bound="middle")
    with pytest.raises(ValueError, match="bin_width must be a positive"):
        mi_binned(t, y, bin_width=0.0)


# --- KDE bounds ---------------------------------------------------------------------------


def numpy_kde_mi(t: np.ndarray, y: np.ndarray, noise_var: float) -> tuple[float, float]:
    """Reference: Kolchinsky & Tracey's KL upper bound as in Saxe et al.'s kde.py, full
    matrix, entropies with their Gaussian constants, conditional entropy per class."""
    from scipy.special import logsumexp

    def entropy_kl(x: np.ndarray, var: float) -> float:
        n, dims = x.shape
        sq = (x * x).sum(1)
        dists = sq[:, None] + sq[None, :] - 2 * x @ x.T
        normconst = (dims / 2.0) * np.log(2 * np.pi * var)
        lprobs = logsumexp(-dists / (2 * var), axis=1) - np.log(n) - normconst
        return dims / 2 + -lprobs.mean()

    dims = t.shape[1]
    h_given_x = (dims / 2.0) * (np.log(2 * np.pi * noise_var) + 1)
    h = entropy_kl(t, noise_var)
    h_given_y = sum(np.mean(y == c) * entropy_kl(t[y == c], noise_var) for c in np.unique(y))
    return (h - h_given_x) / LN2, (h - h_given_y) / LN2


@pytest.mark.parametrize("noise_var", [0.01, 0.1, 1.0])
def test_kde_upper_bound_agrees_with_the_published_formulas(noise_var: float) -> None:
    from infoflow_track.measures import mi_kde

    t, y = random_layer(2, n=400, width=5)
    t = t / t.std()
    ours = [v.item() for v in mi_kde(t, y, noise_var=noise_var)]
    assert ours == pytest.approx(numpy_kde_mi(t.numpy(), y.numpy(), noise_var), abs=1e-9)


def test_kde_lower_bound_is_the_bhattacharyya_form() -> None:
    # Kolchinsky & Tracey: H_lower(v) = H_upper(4v) + (d/2) log(1/4), and the noise entropy
    # H(T|X)(4v) = H(T|X)(v) + (d/2) log 4, so I_lower(v) = I_upper(4v) (and so for I(T;Y)).
    from infoflow_track.measures import mi_kde

    t, y = random_layer(4, n=300, width=3)
    t = t / t.std()
    lower = [v.item() for v in mi_kde(t, y, noise_var=0.1, bound="lower")]
    assert lower == pytest.approx(numpy_kde_mi(t.numpy(), y.numpy(), 0.4), abs=1e-9)


@pytest.mark.parametrize("seed", range(4))
def test_kde_bounds_are_ordered_and_bounded(seed: int) -> None:
    from infoflow_track.measures import mi_kde

    t, y = random_layer(seed, n=500)
    t = t / t.std()
    n = len(y)
    h_y = h_bits(np.bincount(y.numpy()) / n)
    lower = [v.item() for v in mi_kde(t, y, bound="lower")]
    upper = [v.item() for v in mi_kde(t, y, bound="upper")]
    assert 0.0 <= lower[0] <= upper[0] <= math.log2(n) + 1e-9
    assert 0.0 <= lower[1] <= h_y + 1e-9 and 0.0 <= upper[1] <= h_y + 1e-9


def test_kde_of_distinct_far_apart_points_is_log2_n_and_all_label_information() -> None:
    import torch

    from infoflow_track.measures import mi_kde

    g = torch.Generator().manual_seed(0)
    t = torch.randn(256, 6, generator=g, dtype=torch.float64) * 1e3
    y = torch.randint(0, 5, (256,), generator=g)
    h_y = h_bits(np.bincount(y.numpy()) / 256)
    for bound in ("upper", "lower"):
        i_xt, i_ty = mi_kde(t, y, noise_var=0.1, bound=bound)
        assert i_xt.item() == pytest.approx(8.0, abs=1e-9)
        assert i_ty.item() == pytest.approx(h_y, abs=1e-9)


def test_kde_chunking_and_precision_do_not_change_the_value() -> None:
    from infoflow_track.measures import mi_kde

    t, y = random_layer(5, n=700, width=12)
    t = t / t.std()
    whole = [v.item() for v in mi_kde(t, y)]
    chunked = [v.item() for v in mi_kde(t, y, chunk_bytes=64 * 700 * 8)]  # 64-row chunks
    narrow = [v.item() for v in mi_kde(t.float(), y, chunk_bytes=1)]  # one row at a time
    assert chunked == pytest.approx(whole, abs=1e-10)
    assert narrow == pytest.approx(whole, abs=1e-3)


def test_kde_in_float32_stays_accurate_for_offset_activations() -> None:
    from infoflow_track.measures import mi_kde

    t, y = random_layer(13, n=500, width=10)
    t = t / t.std() + 300.0  # large norms, small distances
    exact = [v.item() for v in mi_kde(t, y)]
    assert [v.item() for v in mi_kde(t.float(), y)] == pytest.approx(exact, abs=1e-3)


@pytest.mark.slow
def test_kde_on_10000_samples_of_width_1024_stays_within_2_gib(tmp_path) -> None:
    script = """
import resource, torch
from infoflow_track.measures import mi_kde
torch.manual_seed(0)
t = torch.randn(10_000, 1024).relu_()
y = torch.randint(0, 10, (10_000,))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
i_xt, i_ty = mi_kde(t, y)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print((after - before) * 1024, i_xt.item(), i_ty.item())
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    extra_bytes, i_xt, _ = (float(v) for v in out.stdout.split())
    assert extra_bytes < 2 * 2**30
    assert 0.0 <= i_xt <= math.log2(10_000) + 1e-4


# --- the differentiable estimate ------------------------------------------------------------


def test_soft_mi_has_finite_non_zero_gradients_where_hard_binning_has_none() -> None:
    import torch

    from infoflow_track.measures import mi_binned, mi_soft_per_unit

    t, y = random_layer(6, n=256, width=10)
    t = t.float().requires_grad_()
    values = mi_soft_per_unit(t, y)
    assert values.shape == (10,)
    values.sum().backward()
    assert torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0
    hard = t.detach().clone().requires_grad_()
    assert not any(v.requires_grad for v in mi_binned(hard, y))  # a histogram has no gradient


def test_soft_mi_approaches_the_hard_per_unit_value_as_the_bandwidth_shrinks() -> None:
    from sklearn.metrics import mutual_info_score

    from infoflow_track.measures import mi_soft_per_unit

    t, y = random_layer(7, width=5)
    n_bins = 8
    expected = []
    for k in range(t.shape[1]):  # hard per-unit binning, scikit-learn MI
        col = t[:, k].numpy()
        edges = np.linspace(col.min(), col.max(), n_bins + 1)
        codes = np.clip(np.digitize(col, edges) - 1, 0, n_bins - 1)
        expected.append(mutual_info_score(codes, y.numpy()) / LN2)
    sharp = mi_soft_per_unit(t, y, n_bins=n_bins, bandwidth=0.01)
    np.testing.assert_allclose(sharp.numpy(), expected, atol=1e-3)
    soft = mi_soft_per_unit(t, y, n_bins=n_bins, bandwidth=1.0)
    assert (soft.detach().numpy() <= np.asarray(expected) + 1e-9).all()  # blurring loses info


def test_soft_mi_of_a_unit_that_is_the_label_is_the_label_entropy() -> None:
    import torch

    from infoflow_track.measures import mi_soft_per_unit

    y = torch.arange(300) % 3
    t = torch.stack([y.double(), torch.zeros(300, dtype=torch.float64)], dim=1)
    values = mi_soft_per_unit(t, y, n_bins=3, bandwidth=0.05)
    assert values.tolist() == pytest.approx([math.log2(3), 0.0], abs=1e-6)


def test_soft_mi_agrees_in_float32_and_float64() -> None:
    from infoflow_track.measures import mi_soft_per_unit

    t, y = random_layer(8, width=4)
    np.testing.assert_allclose(
        mi_soft_per_unit(t.float(), y).numpy(), mi_soft_per_unit(t, y).numpy(), atol=1e-4
    )
