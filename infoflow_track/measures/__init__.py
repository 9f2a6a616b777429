"""Information-flow measures: pure functions of tensors (device in, device out), in bits.

Mutual information of a layer T with the input X and the label Y:

- :func:`mi_binned` — layer-wise binning (each sample's binned vector is one symbol);
- :func:`mi_adaptive_binned` — the same with per-unit equal-mass bins;
- :func:`mi_kde` — Kolchinsky & Tracey upper/lower bounds under Gaussian noise;
- :func:`mi_renyi` / :func:`mi_renyi_layer` — matrix-based Rényi α-entropy on Gram matrices;
- :func:`mi_per_unit` — per-unit binning averaged over units (older studies only);
- :func:`mi_soft_per_unit` — differentiable per-unit I(T_k; Y) for learning rules.

Representational similarity: :func:`cka` (linear / RBF, biased / debiased),
:func:`cka_matrix` (every pair of layers) and :class:`MinibatchCKA` (streaming).
"""

from infoflow_track.measures.binning import (
    bin_codes,
    entropy_bits,
    equal_mass_codes,
    mi_adaptive_binned,
    mi_binned,
    mi_per_unit,
)
from infoflow_track.measures.kde import mi_kde
from infoflow_track.measures.renyi import (
    channel_gram,
    gaussian_gram,
    kernel_width,
    label_gram,
    layer_gram,
    mi_renyi,
    mi_renyi_layer,
    renyi_entropy,
)
from infoflow_track.measures.similarity import (
    MinibatchCKA,
    cka,
    cka_matrix,
    gram_hsic,
    linear_features,
    rbf_gram,
)
from infoflow_track.measures.soft import mi_soft_per_unit

__all__ = [
    "MinibatchCKA",
    "bin_codes",
    "channel_gram",
    "cka",
    "cka_matrix",
    "entropy_bits",
    "equal_mass_codes",
    "gaussian_gram",
    "gram_hsic",
    "kernel_width",
    "label_gram",
    "layer_gram",
    "linear_features",
    "mi_adaptive_binned",
    "mi_binned",
    "mi_kde",
    "mi_per_unit",
    "mi_renyi",
    "mi_renyi_layer",
    "mi_soft_per_unit",
    "rbf_gram",
    "renyi_entropy",
]
