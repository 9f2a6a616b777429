"""The built-in MI estimators against values known without them: exact discrete cases, kernels
with known spectra, invariances, the data-processing bound, and numpy transcriptions of the
published formulas written here; plus the estimator contract and option resolution."""

from __future__ import annotations

import itertools
import math
from typing import TYPE_CHECKING

import numpy as np
import pytest

from infoflow_track.data import ib12_inputs, ib12_labels
from infoflow_track.errors import UserError
from infoflow_track.estimators import (
    ESTIMATORS,
    Estimator,
    check_estimator_contract,
    resolve_estimators,
)
from infoflow_track.registry import ContractError, discover

if TYPE_CHECKING:
    import torch

BUILTINS = ("binning", "adaptive-binning", "kde", "renyi")


def estimator(name: str, **options) -> Estimator:
    (found,) = resolve_estimators([name], {name: options} if options else {}).estimators
    return found


def measured(est: Estimator, t: torch.Tensor, y: torch.Tensor, x: torch.Tensor):
    """(I(X;T), I(T;Y), ceiling_xt, ceiling_ty) as floats, after preparing on (x, y)."""
    est.prepare(x, y)
    found = est.measure(t, y, x)
    return tuple(float(v) for v in found[:4])


def h_bits(labels) -> float:
    p = np.bincount(np.asarray(labels)) / len(labels)
    return float(-(p[p > 0] * np.log2(p[p > 0])).sum())


def renyi_h(p, alpha: float) -> float:
    p = np.asarray(p, dtype=float)
    return float(np.log2((p**alpha).sum()) / (1 - alpha))


@pytest.fixture(scope="module")
def ib12():
    import torch

    return torch.from_numpy(ib12_inputs()).float(), torch.from_numpy(ib12_labels()).long()


def random_layer(seed: int, n: int = 400, width: int = 6, classes: int = 3):
    import torch

    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, classes, (n,), generator=g)
    x = torch.randn(n, 10, generator=g, dtype=torch.float64) + y[:, None] * 0.7
    w = torch.randn(10, width, generator=g, dtype=torch.float64)
    return torch.tanh(x @ w), y, x


# --- registry and contract ---------------------------------------------------------------


def test_the_builtins_register_through_entry_points_like_any_third_party() -> None:
    found = discover(ESTIMATORS)
    for name in BUILTINS:
        assert found[name].package == "infoflow-track", name
        assert found[name].broken_reason() is None, name
        check_estimator_contract(found[name].load(), name)


def test_a_class_that_breaks_the_contract_is_refused_with_the_reason() -> None:
    class NoMeasure(Estimator):
        name, summary, api_version = "no-measure", "nothing", "1.0"
        Config = estimator("binning").Config

    with pytest.raises(ContractError, match="does not implement measure"):
        check_estimator_contract(NoMeasure, "no-measure")

    class Future(NoMeasure):
        api_version = "2.0"

    with pytest.raises(ContractError, match=r"estimator API 2\.0.*upgrade infoflow-track"):
        check_estimator_contract(Future, "no-measure")


@pytest.mark.parametrize(
    ("names", "options", "message"),
    [
        (["nosuch"], {}, "unknown estimator 'nosuch': registered are adaptive-binning"),
        (["kde"], {"kde": {"noise": "1"}}, "estimator kde: unknown option 'noise'"),
        (["kde"], {"kde": {"noise_var": "-1"}}, "option 'noise_var'"),
        (["renyi"], {"renyi": {"width": "silly"}}, "valid is one of median, fixed"),
        (["renyi"], {"kde": {"noise_var": "1"}}, "options of estimator 'kde' given"),
        (["binning"], {"binning": {"low": "0"}}, "'low' and 'high' of binning go together"),
        (["binning"], {"binning": {"low": "1", "high": "0"}}, "must be below 'high'"),
    ],
)
def test_bad_estimator_choices_are_user_errors_naming_the_input(names, options, message):
    with pytest.raises(UserError, match=message):
        resolve_estimators(names, options)


def test_options_are_typed_from_text_and_logged_as_params() -> None:
    choice = resolve_estimators(["renyi", "binning"], {"binning": {"bin_width": "0.07"}})
    params = choice.params()
    assert params["mi.binning.bin_width"] == "0.07" and params["mi.binning.low"] == "auto"
    assert params["mi.renyi.alpha"] == "1.01"
    assert choice.estimators[1].config.bin_width == 0.07


# --- binning and adaptive binning: exact discrete cases ---------------------------------


@pytest.mark.parametrize("name", ["binning", "adaptive-binning"])
def test_ib12_with_t_equal_to_x_carries_all_12_bits(ib12, name) -> None:
    x, y = ib12
    i_xt, i_ty, ceiling_xt, ceiling_ty = measured(estimator(name, n_bins=2), x, y, x)
    assert i_xt == pytest.approx(12.0) and ceiling_xt == pytest.approx(12.0)
    assert i_ty == pytest.approx(h_bits(y)) and ceiling_ty == pytest.approx(h_bits(y))


@pytest.mark.parametrize("name", BUILTINS)
def test_a_constant_layer_carries_nothing(name) -> None:
    import torch

    t, y, x = random_layer(0)
    i_xt, i_ty, _, _ = measured(estimator(name), torch.full_like(t, 0.3), y, x)
    assert i_xt == pytest.approx(0.0, abs=1e-6) and i_xt >= 0.0
    assert i_ty == pytest.approx(0.0, abs=1e-6) and i_ty >= 0.0


@pytest.mark.parametrize("name", BUILTINS)
def test_permuting_samples_units_and_labels_changes_nothing(name) -> None:
    import torch

    t, y, x = random_layer(1)
    g = torch.Generator().manual_seed(5)
    rows, cols = torch.randperm(t.shape[0], generator=g), torch.randperm(t.shape[1], generator=g)
    relabel = torch.tensor([2, 0, 1])
    reference = measured(estimator(name), t, y, x)
    moved = measured(estimator(name), t[rows][:, cols], relabel[y[rows]], x[rows])
    assert moved == pytest.approx(reference, abs=1e-4)


@pytest.mark.parametrize("name", ["binning", "adaptive-binning", "renyi"])
def test_a_layer_that_is_a_function_of_the_label_knows_exactly_the_label(name) -> None:
    import torch

    y = torch.arange(600) % 4  # balanced: H(Y) = 2 bits
    t = torch.nn.functional.one_hot(y, 4).double()
    x = torch.randn(600, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    options = {"width": "fixed", "scale": 0.1} if name == "renyi" else {"n_bins": 2}
    i_xt, i_ty, _, ceiling_ty = measured(estimator(name, **options), t, y, x)
    assert ceiling_ty == pytest.approx(2.0 if name != "renyi" else renyi_h([0.25] * 4, 1.01))
    assert i_ty == pytest.approx(ceiling_ty, abs=1e-4)  # T determines Y
    if name != "renyi":
        assert i_xt == pytest.approx(2.0)  # H(T) = H(Y)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("name", ["binning", "adaptive-binning"])
def test_binned_estimates_obey_the_data_processing_bound(seed, name) -> None:
    t, y, x = random_layer(seed)
    i_xt, i_ty, ceiling_xt, ceiling_ty = measured(estimator(name, n_bins=4), t, y, x)
    assert 0.0 <= i_ty <= min(i_xt, ceiling_ty) + 1e-9
    assert i_xt <= ceiling_xt + 1e-9 <= math.log2(t.shape[0]) + 2e-9


def test_fixed_bin_width_is_anchored_at_zero_as_saxe_et_al() -> None:
    # width 0.5: codes floor(t / 0.5) = -2, -1, 0, 0, 1, 3 -> symbols -2, -1, 0, 0, 1, 3
    import torch

    t = torch.tensor([[-0.9], [-0.2], [0.1], [0.4], [0.6], [1.6]], dtype=torch.float64)
    y = torch.tensor([0, 0, 0, 1, 1, 1])
    i_xt, i_ty, ceiling_xt, _ = measured(estimator("binning", bin_width=0.5), t, y, t)
    assert i_xt == pytest.approx(h_bits([0, 1, 2, 2, 3, 4]))
    assert ceiling_xt == pytest.approx(math.log2(6))  # no range: only H(X) bounds it
    h_t_given_y = 0.5 * h_bits([0, 1, 2]) + 0.5 * h_bits([0, 1, 2])  # each class: 3 symbols
    assert i_ty == pytest.approx(i_xt - h_t_given_y)


def test_a_range_fixed_for_the_run_does_not_follow_the_layer() -> None:
    # 4 bins over [-1, 1]: edges -0.5, 0, 0.5; the same values binned whatever else is there
    import torch

    t = torch.tensor([[-0.9], [-0.3], [0.3], [0.9]], dtype=torch.float64)
    y = torch.tensor([0, 1, 0, 1])
    fixed = estimator("binning", n_bins=4, low=-1.0, high=1.0)
    assert measured(fixed, t, y, t)[0] == pytest.approx(2.0)  # 4 distinct bins
    shrunk = t * 0.2  # inside (-0.5, 0.5): two bins under the fixed range, four under auto
    assert measured(fixed, shrunk, y, t)[0] == pytest.approx(1.0)
    assert measured(estimator("binning", n_bins=4), shrunk, y, t)[0] == pytest.approx(2.0)


def test_equal_mass_bins_of_a_grid_have_the_known_entropy() -> None:
    # two units on a 64 x 64 grid, 8 equal-mass bins each: 64 equally likely symbols, 6 bits
    import torch

    from infoflow_track.measures import mi_adaptive_binned

    i = torch.arange(4096)
    t = torch.stack([i // 64, i % 64], dim=1).double()
    y = (i % 2).long()
    i_xt, i_ty = mi_adaptive_binned(t, y, n_bins=8)
    assert i_xt.item() == pytest.approx(6.0)
    assert i_ty.item() == pytest.approx(0.0, abs=1e-9)  # parity is lost inside each bin of 8


def test_equal_mass_bins_ignore_any_increasing_transform_of_a_unit() -> None:
    import torch

    from infoflow_track.measures import equal_mass_codes, mi_adaptive_binned

    t, y, _ = random_layer(2, width=3)
    warped = torch.stack([t[:, 0].exp(), 5 * t[:, 1] - 2, t[:, 2] ** 3], dim=1)
    assert torch.equal(equal_mass_codes(t, 5), equal_mass_codes(warped, 5))
    assert [v.item() for v in mi_adaptive_binned(t, y, n_bins=5)] == pytest.approx(
        [v.item() for v in mi_adaptive_binned(warped, y, n_bins=5)]
    )


def test_equal_values_share_an_equal_mass_bin() -> None:
    import torch

    from infoflow_track.measures import equal_mass_codes, mi_adaptive_binned

    t = torch.tensor([[0.0]] * 6 + [[1.0]] * 2, dtype=torch.float64)  # 4 bins asked, 2 values
    codes = equal_mass_codes(t, 4)
    assert codes[:6].unique().tolist() == [0] and codes[6:].unique().tolist() == [3]
    relu = torch.tensor([[0.0]] * 7 + [[0.5], [1.0], [2.0]])  # 4 bins: zeros, then 2 and 3
    assert equal_mass_codes(relu, 4).flatten().tolist() == [0] * 7 + [2, 3, 3]
    i_xt, _ = mi_adaptive_binned(t, torch.zeros(8, dtype=torch.long), n_bins=4)
    assert i_xt.item() == pytest.approx(h_bits([0] * 6 + [1] * 2))


def numpy_adaptive_mi(t: np.ndarray, y: np.ndarray, n_bins: int) -> tuple[float, float]:
    """Equal-mass binning, transcribed: per unit, a value's bin is floor(n_bins x (values of
    the unit below it) / N), counted with np.sum; rows as symbols."""
    n = t.shape[0]
    below = [(col[None, :] < col[:, None]).sum(axis=1) for col in t.T]
    codes = np.stack([(b * n_bins) // n for b in below], axis=1)
    _, ids = np.unique(codes, axis=0, return_inverse=True)
    ids = ids.reshape(-1)
    h_t = h_bits(ids)
    h_t_given_y = sum(np.mean(y == c) * h_bits(ids[y == c]) for c in np.unique(y))
    return h_t, h_t - h_t_given_y


@pytest.mark.parametrize("n_bins", [2, 3, 7])
def test_adaptive_binning_agrees_with_a_numpy_transcription(n_bins) -> None:
    from infoflow_track.measures import mi_adaptive_binned

    t, y, _ = random_layer(3, n=500, width=4)
    ours = [v.item() for v in mi_adaptive_binned(t, y, n_bins=n_bins)]
    assert ours == pytest.approx(numpy_adaptive_mi(t.numpy(), y.numpy(), n_bins), abs=1e-9)


# --- KDE ---------------------------------------------------------------------------------


def test_kde_logs_both_bounds_with_the_lower_below_the_upper() -> None:
    t, y, x = random_layer(4)
    est = estimator("kde", noise_var=0.05)
    est.prepare(x, y)
    found = est.measure(t, y, x)
    low_xt, low_ty = (v.item() for v in found.extra["lower"])
    assert 0.0 <= low_xt <= found.i_xt.item() <= found.ceiling_xt
    assert found.ceiling_xt == pytest.approx(math.log2(t.shape[0]))
    assert low_ty >= 0.0


def test_kde_warns_when_the_noise_does_not_suit_the_layer() -> None:
    t, _, _ = random_layer(5)  # tanh units: variance about 0.5
    assert estimator("kde", noise_var=0.05).scale_warning("h", t) is None
    assert "raise it" in estimator("kde", noise_var=1e-6).scale_warning("h", t)
    assert "lower it" in estimator("kde", noise_var=50.0).scale_warning("h", t)


# --- matrix-based Rényi entropy -------------------------------------------------------------


@pytest.mark.parametrize("alpha", [1.0, 1.01, 2.0, 0.5])
def test_renyi_entropy_of_kernels_with_known_spectra(alpha) -> None:
    import torch

    from infoflow_track.measures import label_gram, renyi_entropy

    n = 64
    assert renyi_entropy(torch.eye(n, dtype=torch.float64), alpha).item() == pytest.approx(6.0)
    ones = torch.ones(n, n, dtype=torch.float64)  # rank one: every sample alike
    assert renyi_entropy(ones, alpha).item() == pytest.approx(0.0, abs=1e-9)
    y = torch.tensor([0] * 32 + [1] * 16 + [2] * 16)  # blocks: eigenvalues 1/2, 1/4, 1/4
    h = renyi_h([0.5, 0.25, 0.25], alpha) if alpha != 1.0 else 1.5
    assert renyi_entropy(label_gram(y, torch.float64), alpha).item() == pytest.approx(h)


def test_renyi_entropy_falls_as_the_kernel_widens() -> None:
    import torch

    from infoflow_track.measures import gaussian_gram, kernel_width, renyi_entropy

    t, _, _ = random_layer(6, n=300)
    widths = kernel_width(t) * torch.tensor([0.1, 0.3, 1.0, 3.0, 10.0], dtype=torch.float64)
    entropies = [renyi_entropy(gaussian_gram(t, s), 1.01).item() for s in widths]
    assert all(a > b for a, b in itertools.pairwise(entropies))
    assert entropies[0] < math.log2(300) and entropies[-1] > 0


@pytest.mark.parametrize("seed", range(3))
def test_renyi_mi_stays_within_its_ceilings_and_ignores_the_layers_scale(seed) -> None:
    t, y, x = random_layer(seed)
    est = estimator("renyi")
    i_xt, i_ty, ceiling_xt, ceiling_ty = measured(est, t, y, x)
    assert 0.0 < i_xt <= ceiling_xt <= math.log2(t.shape[0])
    assert 0.0 < i_ty <= ceiling_ty == pytest.approx(renyi_h(np.bincount(y) / len(y), 1.01))
    assert measured(est, 7.5 * t, y, x)[:2] == pytest.approx((i_xt, i_ty), abs=1e-5)


def numpy_renyi_mi(t, y, x, alpha: float, scale: float) -> tuple[float, float]:
    """Giraldo et al.'s matrix-based MI, transcribed: Gaussian Gram matrices at scale x the
    median distance, A = K / tr K, S = log2(sum eig^alpha) / (1 - alpha), Hadamard joints."""

    def gram(v):
        v = v.reshape(len(v), -1)
        d2 = ((v[:, None, :] - v[None, :, :]) ** 2).sum(-1)
        sigma = scale * np.sqrt(np.median(d2[~np.eye(len(v), dtype=bool)]))
        return np.exp(-d2 / (2 * sigma**2))

    def s(k):
        lam = np.clip(np.linalg.eigvalsh(k / np.trace(k)), 0, None)
        return np.log2((lam**alpha).sum()) / (1 - alpha)

    kt, kx, ky = gram(t), gram(x), (y[:, None] == y[None, :]).astype(float)
    return s(kx) + s(kt) - s(kx * kt), s(kt) + s(ky) - s(kt * ky)


@pytest.mark.parametrize(("alpha", "scale"), [(1.01, 0.5), (2.0, 1.0), (1.5, 0.3)])
def test_renyi_mi_agrees_with_a_numpy_transcription(alpha, scale) -> None:
    from infoflow_track.measures import mi_renyi_layer

    t, y, x = random_layer(7, n=200)
    ours = [v.item() for v in mi_renyi_layer(t, y, x, alpha=alpha, scale=scale)]
    assert ours == pytest.approx(numpy_renyi_mi(t.numpy(), y.numpy(), x.numpy(), alpha, scale),
                                 abs=1e-6)  # fmt: skip


def test_conv_maps_are_measured_as_tensors_or_by_channel() -> None:
    import torch

    from infoflow_track.measures import channel_gram, gaussian_gram, kernel_width, mi_renyi_layer

    g = torch.Generator().manual_seed(8)
    maps = torch.randn(50, 3, 4, 4, generator=g, dtype=torch.float64)
    # the tensor kernel is the Frobenius distance of whole maps
    sigma = kernel_width(maps).item()
    flat = maps.reshape(50, -1).numpy()
    d2 = ((flat[:, None] - flat[None]) ** 2).sum(-1)
    np.testing.assert_allclose(gaussian_gram(maps, sigma).numpy(), np.exp(-d2 / (2 * sigma**2)))
    # the multivariate kernel is the product of one Gram per channel, each at its own width
    product = np.ones((50, 50))
    for c in range(3):
        channel = maps[:, c]
        product *= gaussian_gram(channel, kernel_width(channel)).numpy()
    np.testing.assert_allclose(channel_gram(maps, chunk=2).numpy(), product, rtol=1e-9)
    y = torch.arange(50) % 2
    tensor, channels = (mi_renyi_layer(maps, y, maps, conv=c) for c in ("tensor", "channels"))
    assert tensor[0].item() != pytest.approx(channels[0].item(), abs=1e-3)
