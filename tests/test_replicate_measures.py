"""Estimators and CKA measure K replicates in one call: replicate k of the batched result is
the measure of replicate k alone, no value leaks between replicates (the batched binning
shares one row deduplication, KDE and Rényi one batched product), and a third-party
estimator that only implements ``measure`` gets the same through the default."""

from __future__ import annotations

import math

import numpy as np
import pytest

from infoflow_track.estimators import Estimate, resolve_estimators

K, N, D, CLASSES = 4, 300, 5, 3
BUILTIN = [
    ("binning", {"n_bins": 6}),
    ("binning", {"bin_width": 0.4}),
    ("binning", {"n_bins": 4, "low": -1.0, "high": 1.0}),
    ("adaptive-binning", {"n_bins": 3}),
    ("kde", {"noise_var": 0.05}),
    ("renyi", {"samples": 128}),
    ("renyi", {"samples": 128, "width": "fixed", "scale": 2.0}),
]


def replicates(seed: int = 0):
    """K replicates (K, N, D) of different scales and a shared input and label set."""
    import torch

    g = torch.Generator().manual_seed(seed)
    x = torch.randn(N, 10, generator=g)
    y = torch.randint(0, CLASSES, (N,), generator=g)
    scales = torch.tensor([0.3, 1.0, 2.0, 5.0])[:, None, None]
    t = torch.tanh(scales * torch.randn(K, N, D, generator=g) + y[None, :, None] * 0.5)
    return t, y, x


def values(estimate: Estimate, k: int) -> list[float]:
    """The Estimate's values as floats, broadcast to K replicates: (quantity, replicate)."""
    import torch

    fields = [*estimate[:4], *(v for pair in estimate.extra.values() for v in pair)]
    return [torch.as_tensor(v, dtype=torch.float64).expand(k).tolist() for v in fields]


@pytest.mark.parametrize(("name", "options"), BUILTIN)
def test_replicate_k_of_one_call_is_replicate_k_measured_alone(name, options) -> None:
    t, y, x = replicates()
    (estimator,) = resolve_estimators([name], {name: options}).estimators
    estimator.prepare(x, y)
    batched = values(estimator.measure_replicates(t, y, x), K)
    for k in range(K):
        alone = values(estimator.measure(t[k], y, x), 1)
        for quantity, (row, single) in enumerate(zip(batched, alone, strict=True)):
            assert row[k] == pytest.approx(single[0], rel=1e-5, abs=1e-6), (name, quantity, k)
    i_xt = batched[0]
    assert len(set(np.round(i_xt, 6))) > 1  # the replicates differ, so leaks would show


@pytest.mark.parametrize(("name", "options"), BUILTIN)
def test_permuting_replicates_permutes_their_values(name, options) -> None:
    import torch

    t, y, x = replicates(1)
    (estimator,) = resolve_estimators([name], {name: options}).estimators
    estimator.prepare(x, y)
    order = torch.tensor([2, 0, 3, 1])
    forward = values(estimator.measure_replicates(t, y, x), K)
    permuted = values(estimator.measure_replicates(t[order], y, x), K)
    for row, prow in zip(forward, permuted, strict=True):
        assert prow == pytest.approx([row[i] for i in order.tolist()], rel=1e-5, abs=1e-6)


def test_batched_binning_matches_a_numpy_count_of_each_replicates_bin_vectors() -> None:
    from scipy.stats import entropy

    from infoflow_track.measures.binning import replicate_mi_binned

    t, y, _ = replicates(2)
    width = 0.3
    i_xt, i_ty = replicate_mi_binned(t, y, bin_width=width)
    labels = y.numpy()
    for k in range(K):
        codes = np.floor(t[k].numpy() / width).astype(np.int64)
        _, ids = np.unique(codes, axis=0, return_inverse=True)
        ids = ids.reshape(-1)
        h_t = entropy(np.bincount(ids), base=2)
        h_joint = entropy(np.bincount(ids * CLASSES + labels), base=2)
        h_y = entropy(np.bincount(labels), base=2)
        assert i_xt[k].item() == pytest.approx(h_t, rel=1e-5)
        assert i_ty[k].item() == pytest.approx(h_t + h_y - h_joint, rel=1e-5, abs=1e-6)


@pytest.mark.parametrize(("units", "codes"), [(4, 30), (8, 128), (10, 128)])
def test_every_counting_path_matches_a_numpy_count_of_the_code_vectors(units, codes) -> None:
    """4 x 30 codes fit a float64 product, 8 x 128 (56 bits) an int64 one, 10 x 128 (70
    bits) neither: rows are deduplicated. All must count the same symbols."""
    import torch
    from scipy.stats import entropy

    from infoflow_track.measures.binning import replicate_mi_of_codes

    generator = torch.Generator().manual_seed(units)
    n = 600
    few = torch.randint(0, 3, (K, n, units), generator=generator)  # repeats: real counts
    table = torch.tensor([0, 1, codes - 1])[few].to(torch.int16)
    y = torch.randint(0, CLASSES, (n,), generator=generator)
    h_t, i_ty = replicate_mi_of_codes(table, y)
    labels = y.numpy()
    for k in range(K):
        _, ids = np.unique(table[k].numpy(), axis=0, return_inverse=True)
        ids = ids.reshape(-1)
        h_joint = entropy(np.bincount(ids * CLASSES + labels), base=2)
        h_y = entropy(np.bincount(labels), base=2)
        assert h_t[k].item() == pytest.approx(entropy(np.bincount(ids), base=2), rel=1e-9)
        assert i_ty[k].item() == pytest.approx(h_t[k].item() + h_y - h_joint, abs=1e-9)


def test_a_replicate_that_is_not_finite_measures_nan_alone() -> None:
    t, y, x = replicates(3)
    t[1, 7, 2] = math.inf
    for name, options in BUILTIN[:4]:
        (estimator,) = resolve_estimators([name], {name: options}).estimators
        estimator.prepare(x, y)
        i_xt = estimator.measure_replicates(t, y, x).i_xt.tolist()
        assert math.isnan(i_xt[1]) and all(math.isfinite(v) for v in i_xt[:1] + i_xt[2:]), name


def test_an_estimator_with_only_measure_gets_replicates_stacked_by_the_default() -> None:
    import torch

    from infoflow_track.estimators import Estimator
    from infoflow_track.hparams import HParams

    class Spread(Estimator):
        name, summary, api_version, Config = "spread", "std", "1.0", HParams
        extras = ("half",)

        def measure(self, t, y, x):
            value = t.std()
            return Estimate(value, value / 2, 10.0, t.new_tensor(1.0), {"half": (value, 0.5)})

    t, y, x = replicates(4)
    found = Spread().measure_replicates(t, y, x)
    stds = torch.stack([t[k].std() for k in range(K)]).double()
    assert torch.allclose(found.i_xt, stds) and torch.allclose(found.i_ty, stds / 2)
    assert found.ceiling_xt.tolist() == [10.0] * K and found.ceiling_ty.dtype == torch.float64
    assert found.extra["half"][1].tolist() == [0.5] * K


def test_batched_cka_matrices_match_each_replicates_own_matrix() -> None:
    import torch

    from infoflow_track.measures import cka_matrix, linear_features
    from infoflow_track.measures.similarity import feature_cka_matrix

    g = torch.Generator().manual_seed(5)
    layers = [torch.randn(K, 40, d, generator=g) for d in (3, 60, 7)]  # 60 > N: QR-reduced
    for debiased in (False, True):
        feats = [torch.vmap(linear_features)(t) for t in layers]
        batched = feature_cka_matrix(feats, debiased=debiased)
        cross = feature_cka_matrix(feats[:1], feats[1:], debiased=debiased)
        for k in range(K):
            own = cka_matrix([t[k] for t in layers], debiased=debiased)
            torch.testing.assert_close(batched[k], own, rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(cross[k], own[:1, 1:], rtol=1e-5, atol=1e-6)
