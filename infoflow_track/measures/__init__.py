"""Information-flow measures: pure functions of tensors (device in, device out), in bits.

Mutual information of a layer T with the input X and the label Y:

- :func:`mi_binned` — layer-wise binning (each sample's binned vector is one symbol);
- :func:`mi_kde` — Kolchinsky & Tracey upper/lower bounds under Gaussian noise;
- :func:`mi_per_unit` — per-unit binning averaged over units (older studies only);
- :func:`mi_soft_per_unit` — differentiable per-unit I(T_k; Y) for learning rules.

Representational similarity: :func:`cka` (linear / RBF, biased / debiased),
:func:`cka_matrix` (every pair of layers) and :class:`MinibatchCKA` (streaming).
"""

from infoflow_track.measures.binning import bin_codes, entropy_bits, mi_binned, mi_per_unit
from infoflow_track.measures.kde import mi_kde
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
    "cka",
    "cka_matrix",
    "entropy_bits",
    "gram_hsic",
    "linear_features",
    "mi_binned",
    "mi_kde",
    "mi_per_unit",
    "mi_soft_per_unit",
    "rbf_gram",
]
