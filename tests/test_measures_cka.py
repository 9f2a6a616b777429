"""CKA against invariances, analytic values and a plain numpy transcription of the published
formulas (Kornblith et al. 2019; Song et al. 2012; Nguyen et al. 2021) written here."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pytest

if TYPE_CHECKING:
    import torch


FORMS = [("linear", False), ("linear", True), ("rbf", False), ("rbf", True)]


def sample(seed: int, n: int = 120, d: int = 10) -> torch.Tensor:
    import torch

    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=torch.float64)


def related(seed: int, n: int = 120) -> tuple[torch.Tensor, torch.Tensor]:
    """Two representations that share structure: y is a noisy non-linear map of x."""
    import torch

    x = sample(seed, n)
    g = torch.Generator().manual_seed(seed + 100)
    y = torch.tanh(x @ torch.randn(10, 7, generator=g, dtype=torch.float64))
    return x, y + 0.3 * torch.randn(n, 7, generator=g, dtype=torch.float64)


def orthogonal(d: int, seed: int) -> torch.Tensor:
    import torch

    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    return q


# --- numpy reference ----------------------------------------------------------------------


def np_gram_linear(x: np.ndarray) -> np.ndarray:
    return x @ x.T


def np_gram_rbf(x: np.ndarray, threshold: float = 1.0) -> np.ndarray:
    """Kornblith et al.'s gram_rbf: bandwidth from the median squared distance."""
    dot = x @ x.T
    sq_norms = np.diag(dot)
    sq_dist = -2 * dot + sq_norms[:, None] + sq_norms[None, :]
    return np.exp(-sq_dist / (2 * threshold**2 * np.median(sq_dist)))


def np_hsic(k: np.ndarray, l: np.ndarray, unbiased: bool) -> float:  # noqa: E741
    n = k.shape[0]
    if not unbiased:  # tr(K H L H) / (n - 1)^2
        h = np.eye(n) - np.ones((n, n)) / n
        return np.trace(k @ h @ l @ h) / (n - 1) ** 2
    k, l = k - np.diag(np.diag(k)), l - np.diag(np.diag(l))  # noqa: E741
    one = np.ones(n)
    return (
        np.trace(k @ l)
        + (one @ k @ one) * (one @ l @ one) / ((n - 1) * (n - 2))
        - 2.0 / (n - 2) * (one @ k @ l @ one)
    ) / (n * (n - 3))


def np_cka(x: np.ndarray, y: np.ndarray, kernel: str, debiased: bool) -> float:
    gram = np_gram_linear if kernel == "linear" else np_gram_rbf
    k, l = gram(x), gram(y)  # noqa: E741
    return np_hsic(k, l, debiased) / np.sqrt(np_hsic(k, k, debiased) * np_hsic(l, l, debiased))


# --- analytic values and invariances ------------------------------------------------------


@pytest.mark.parametrize(("kernel", "debiased"), FORMS)
def test_cka_of_a_representation_with_itself_is_one(kernel: str, debiased: bool) -> None:
    from infoflow_track.measures import cka

    x = sample(0)
    assert cka(x, x, kernel=kernel, debiased=debiased).item() == pytest.approx(1.0)


@pytest.mark.parametrize(("kernel", "debiased"), FORMS)
def test_cka_is_symmetric(kernel: str, debiased: bool) -> None:
    from infoflow_track.measures import cka

    x, y = related(1)
    forward = cka(x, y, kernel=kernel, debiased=debiased).item()
    assert forward == pytest.approx(cka(y, x, kernel=kernel, debiased=debiased).item())


@pytest.mark.parametrize(("kernel", "debiased"), FORMS)
def test_cka_is_invariant_to_rotation_isotropic_scaling_and_translation(
    kernel: str, debiased: bool
) -> None:
    import torch

    from infoflow_track.measures import cka

    x, y = related(2)
    base = cka(x, y, kernel=kernel, debiased=debiased).item()
    moved = x @ orthogonal(10, 3) * 7.5 + torch.linspace(-4, 9, 10, dtype=torch.float64)
    assert cka(moved, y, kernel=kernel, debiased=debiased).item() == pytest.approx(base, abs=1e-9)


@pytest.mark.parametrize("debiased", [False, True])
def test_linear_cka_is_not_invariant_to_a_general_invertible_map(debiased: bool) -> None:
    import torch

    from infoflow_track.measures import cka

    x, y = related(4)
    g = torch.Generator().manual_seed(5)
    a = torch.randn(10, 10, generator=g, dtype=torch.float64) @ torch.diag(
        torch.logspace(-2, 1, 10, dtype=torch.float64)
    )
    assert torch.linalg.matrix_rank(a) == 10
    base = cka(x, y, debiased=debiased).item()
    assert abs(cka(x @ a, y, debiased=debiased).item() - base) > 0.05
    assert cka(x, x @ a, debiased=debiased).item() < 0.95


def test_debiased_cka_is_near_zero_for_independent_data_where_biased_is_not() -> None:
    from infoflow_track.measures import cka

    x, y = sample(6, n=64, d=256), sample(7, n=64, d=256)  # few samples, many features
    assert cka(x, y).item() > 0.5
    assert abs(cka(x, y, debiased=True).item()) < 0.05


def test_cka_of_a_constant_representation_is_undefined() -> None:
    import torch

    from infoflow_track.measures import cka

    assert torch.isnan(cka(sample(8), torch.ones(120, 3, dtype=torch.float64)))


# --- against the numpy transcription -------------------------------------------------------


@pytest.mark.parametrize(("kernel", "debiased"), FORMS)
@pytest.mark.parametrize(("n", "d"), [(120, 10), (40, 90)])  # feature and Gram paths
def test_cka_agrees_with_the_numpy_reference(kernel: str, debiased: bool, n: int, d: int) -> None:
    import torch

    from infoflow_track.measures import cka

    x, y = sample(9, n, d), torch.relu(sample(10, n, d)) + 0.2 * sample(9, n, d)
    ours = cka(x, y, kernel=kernel, debiased=debiased).item()
    assert ours == pytest.approx(np_cka(x.numpy(), y.numpy(), kernel, debiased), abs=1e-10)


def test_rbf_bandwidth_is_a_fraction_of_the_median_distance() -> None:
    from infoflow_track.measures import cka

    x, y = related(11)
    for frac in (0.5, 2.0):
        k, l = np_gram_rbf(x.numpy(), frac), np_gram_rbf(y.numpy(), frac)  # noqa: E741
        expected = np_hsic(k, l, False) / np.sqrt(np_hsic(k, k, False) * np_hsic(l, l, False))
        assert cka(x, y, kernel="rbf", sigma_frac=frac).item() == pytest.approx(expected)


@pytest.mark.parametrize(("kernel", "debiased"), FORMS)
def test_cka_agrees_in_float32_and_float64(kernel: str, debiased: bool) -> None:
    from infoflow_track.measures import cka

    x, y = related(12)
    wide = cka(x, y, kernel=kernel, debiased=debiased).item()
    assert cka(x.float(), y.float(), kernel=kernel, debiased=debiased).item() == pytest.approx(
        wide, abs=1e-4
    )


@pytest.mark.parametrize("half", ["float16", "bfloat16"])
def test_half_precision_is_computed_in_float32(half: str) -> None:
    import torch

    from infoflow_track.measures import MinibatchCKA, cka

    x, y = related(17, n=1000)
    dtype = getattr(torch, half)  # named: collecting imports no torch
    x, y = (x * 30).to(dtype), (y * 30).to(dtype)  # sums of squares overflow float16
    exact = [x.double(), y.double()]
    for kernel, debiased in FORMS:
        value = cka(x, y, kernel=kernel, debiased=debiased).item()
        assert value == pytest.approx(
            cka(*exact, kernel=kernel, debiased=debiased).item(), abs=1e-4
        )
    acc, reference = MinibatchCKA(), MinibatchCKA()
    acc.update([x], [y])
    reference.update(exact[:1], exact[1:])
    assert acc.compute().item() == pytest.approx(reference.compute().item(), abs=1e-4)


def test_minibatch_cka_in_float32_stays_accurate_for_offset_features() -> None:
    from infoflow_track.measures import MinibatchCKA

    x, y = related(18, n=512)
    x, y = x + 100.0, y + 100.0  # uncentred Gram matrices would cancel catastrophically
    wide, narrow = MinibatchCKA(), MinibatchCKA()
    for start in range(0, 512, 256):
        wide.update([x[start : start + 256]], [y[start : start + 256]])
        narrow.update([x[start : start + 256].float()], [y[start : start + 256].float()])
    assert narrow.compute().item() == pytest.approx(wide.compute().item(), abs=1e-4)


@pytest.mark.parametrize("debiased", [False, True])
def test_cka_matrix_is_every_pairwise_cka(debiased: bool) -> None:
    import torch

    from infoflow_track.measures import cka, cka_matrix

    x, y = related(13)
    wide = torch.cat([x, y, x * x, torch.relu(x) @ torch.ones(10, 150, dtype=x.dtype)], dim=1)
    layers = [x, y, torch.relu(y), x[:, :3], wide]  # wide: more features than samples
    matrix = cka_matrix(layers, debiased=debiased)
    for i, a in enumerate(layers):
        for j, b in enumerate(layers):
            assert matrix[i, j].item() == pytest.approx(cka(a, b, debiased=debiased).item())
    assert torch.equal(matrix, matrix.T)
    cross = cka_matrix(layers[:2], layers[2:], debiased=debiased)
    torch.testing.assert_close(cross, matrix[:2, 2:])


# --- minibatch CKA --------------------------------------------------------------------------


def test_minibatch_cka_of_one_batch_is_the_debiased_cka() -> None:
    from infoflow_track.measures import MinibatchCKA, cka

    x, y = related(14)
    acc = MinibatchCKA()
    acc.update([x, y])
    matrix = acc.compute()
    assert matrix[0, 1].item() == pytest.approx(cka(x, y, debiased=True).item())
    assert matrix.diagonal().tolist() == pytest.approx([1.0, 1.0])


def test_accumulating_k_batches_equals_the_one_shot_formula() -> None:
    from infoflow_track.measures import MinibatchCKA

    x, y = related(15, n=240)
    batches = [slice(i, i + 60) for i in range(0, 240, 60)]
    acc = MinibatchCKA()
    for b in batches:
        acc.update([x[b]], [y[b], x[b]])
    # Nguyen et al.: sum the unbiased HSIC over batches, normalise once
    xy = sum(
        np_hsic(np_gram_linear(x[b].numpy()), np_gram_linear(y[b].numpy()), True) for b in batches
    )
    xx = sum(
        np_hsic(np_gram_linear(x[b].numpy()), np_gram_linear(x[b].numpy()), True) for b in batches
    )
    yy = sum(
        np_hsic(np_gram_linear(y[b].numpy()), np_gram_linear(y[b].numpy()), True) for b in batches
    )
    matrix = acc.compute()
    assert acc.batches == 4 and matrix.shape == (1, 2)
    assert matrix[0, 0].item() == pytest.approx(xy / np.sqrt(xx * yy), abs=1e-10)
    assert matrix[0, 1].item() == pytest.approx(1.0)


def nguyen_minibatch_cka(x: np.ndarray, y: np.ndarray, batches: list[slice]) -> float:
    """efficient_CKA.py's accumulation, transcribed: per batch, the U-centred Gram matrices
    (Szekely & Rizzo 2014) as vectors, their inner products summed unnormalised."""

    def u_centred(a: np.ndarray) -> np.ndarray:
        gram = a @ a.T
        n = len(gram)
        np.fill_diagonal(gram, 0.0)
        means = gram.sum(0) / (n - 2)
        means -= means.sum() / (2 * (n - 1))
        gram = gram - means[:, None] - means[None, :]
        np.fill_diagonal(gram, 0.0)
        return gram.ravel()

    sums = np.zeros(3)
    for b in batches:
        gx, gy = u_centred(x[b]), u_centred(y[b])
        sums += [gx @ gy, gx @ gx, gy @ gy]
    return float(sums[0] / np.sqrt(sums[1] * sums[2]))


def test_minibatch_cka_weights_batches_once_or_by_their_pairs_as_nguyen_et_al() -> None:
    from infoflow_track.measures import MinibatchCKA

    x, y = related(21, n=300)
    batches = [slice(0, 128), slice(128, 256), slice(256, 300)]  # a smaller last batch
    per_batch, per_pair = MinibatchCKA(), MinibatchCKA(weighting="pairs")
    for b in batches:
        per_batch.update([x[b]], [y[b]])
        per_pair.update([x[b]], [y[b]])
    reference = nguyen_minibatch_cka(x.numpy(), y.numpy(), batches)
    assert per_pair.compute().item() == pytest.approx(reference, abs=1e-10)
    assert per_batch.compute().item() != pytest.approx(reference, abs=1e-6)  # they differ
    equal = [slice(0, 100), slice(100, 200), slice(200, 300)]
    once, pairs = MinibatchCKA(), MinibatchCKA(weighting="pairs")
    for b in equal:
        once.update([x[b]], [y[b]])
        pairs.update([x[b]], [y[b]])
    assert once.compute().item() == pytest.approx(pairs.compute().item(), abs=1e-12)
    with pytest.raises(ValueError, match="weighting must be one of"):
        MinibatchCKA(weighting="samples")


def test_minibatch_cka_tracks_the_debiased_full_data_value() -> None:
    from infoflow_track.measures import MinibatchCKA, cka

    x, y = related(16, n=4096)
    acc = MinibatchCKA()
    for start in range(0, 4096, 256):
        acc.update([x[start : start + 256]], [y[start : start + 256]])
    full = cka(x, y, debiased=True).item()
    assert acc.compute().item() == pytest.approx(full, abs=0.02)


def test_minibatch_cka_rejects_misuse() -> None:
    from infoflow_track.measures import MinibatchCKA

    with pytest.raises(RuntimeError, match="before any update"):
        MinibatchCKA().compute()
    with pytest.raises(ValueError, match=">= 4 samples"):
        MinibatchCKA().update([sample(0, n=3)])


def test_linear_features_keep_a_wide_layer_in_n_columns_with_the_same_cka() -> None:
    import torch

    from infoflow_track.measures import cka, linear_features

    x, y = sample(19, n=40, d=90), sample(20, n=40, d=5)
    compact = linear_features(x)
    assert compact.shape == (40, 40)
    centred = x - x.mean(dim=0)
    torch.testing.assert_close(compact @ compact.T, centred @ centred.T)
    for debiased in (False, True):
        expected = cka(x, y, debiased=debiased).item()
        assert cka(compact, y, debiased=debiased).item() == pytest.approx(expected, abs=1e-10)
