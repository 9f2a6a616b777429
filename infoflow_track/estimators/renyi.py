"""``renyi``: matrix-based Rényi α-entropy of Gram matrices (Giraldo, Rao & Príncipe 2015)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from infoflow_track.estimators import ESTIMATOR_API_VERSION, Estimate
from infoflow_track.estimators._common import MeasuresReplicates
from infoflow_track.hparams import HParams, hparam

#: Memory of the Gram matrices of one chunk of replicates measured together.
GRAM_BYTES = 256 * 2**20


@dataclass(frozen=True)
class RenyiOptions(HParams):
    kind = "option"

    alpha: float = hparam(
        1.01, low=0.1, high=10.0, help="order α of the entropy (1: von Neumann; Yu et al.: 1.01)"
    )
    width: str = hparam(
        "median", choices=("median", "fixed"),
        help="kernel width rule of inputs and layers: median (σ = scale x the median distance "
        "between probe samples, each epoch anew) or fixed (σ = scale)",
    )  # fmt: skip
    scale: float = hparam(
        0.5, low=1e-6, high=1e6,
        help="the width's factor (0.5 keeps MLP layers on digits and MNIST clear of the "
        "ceiling), or σ itself",
    )  # fmt: skip
    conv: str = hparam(
        "tensor", choices=("tensor", "channels"),
        help="conv maps (N, C, H, W): one tensor kernel of whole maps (Wickstrøm et al. 2019) "
        "or the product of per-channel kernels (Yu et al. 2019)",
    )  # fmt: skip
    samples: int = hparam(
        1024, low=2, high=10**6,
        help="probe samples measured, evenly spread over the probe set: eigvalsh is O(N^3), "
        "about 0.2 s per layer at 1024 and 1 s at 2048 on 2 CPU cores",
    )  # fmt: skip


class Renyi(MeasuresReplicates):
    """I(X;T) = S(A_X) + S(A_T) - S(A_X∘A_T) and I(T;Y) likewise with the label kernel, on
    trace-normalised Gram matrices. Inputs get a Gaussian kernel at the median width; labels
    the class-indicator kernel. Ceilings: S(A_X) and S(A_Y) (= the α-entropy of the classes).
    """

    name = "renyi"
    summary = "matrix-based Rényi α-entropy on Gram matrices (Giraldo et al.; Yu et al.)"
    api_version = ESTIMATOR_API_VERSION
    Config = RenyiOptions
    saturation_advice = (
        "the kernel is narrow against the distances between samples: widen it (renyi.scale > 1)"
    )

    def prepare(self, x: Any, y: Any) -> None:
        import torch

        from infoflow_track.measures import label_gram, layer_gram, renyi_entropy

        c = self.config
        n = x.shape[0]  # measured: `samples` of the probe, evenly spread over it
        self._rows = torch.linspace(0, n - 1, min(n, c.samples), device=x.device).round().long()
        x_gram = layer_gram(x[self._rows], rule=c.width, scale=c.scale)
        y_gram = label_gram(y[self._rows], x_gram.dtype)
        self._grams = (x_gram, y_gram)
        self._entropies = renyi_entropy(torch.stack(self._grams), c.alpha).unbind()  # ceilings

    def measure_replicates(self, t: Any, y: Any, x: Any) -> Estimate:
        import torch

        from infoflow_track.measures import mi_renyi
        from infoflow_track.measures.renyi import replicate_layer_grams

        c = self.config
        s_x, s_y = self._entropies
        n = len(self._rows)
        per_chunk = max(1, GRAM_BYTES // (3 * n * n * t.element_size()))  # K's Gram stacks
        found = []
        for part in t.split(per_chunk):
            t_grams = replicate_layer_grams(part[:, self._rows], rule=c.width, scale=c.scale,
                                            conv=c.conv)  # fmt: skip
            x_gram, y_gram = (g.to(t_grams.dtype) for g in self._grams)
            found.append(mi_renyi(t_grams, y_gram, x_gram, alpha=c.alpha, s_x=s_x, s_y=s_y)[:2])
        i_xt, i_ty = (torch.cat(v) for v in zip(*found, strict=True))
        return Estimate(i_xt, i_ty, s_x, s_y)
