"""``kde``: Kolchinsky & Tracey's pairwise-distance bounds under Gaussian noise."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from infoflow_track.estimators import ESTIMATOR_API_VERSION, Estimate
from infoflow_track.estimators._common import WithProbeEntropies
from infoflow_track.hparams import HParams, hparam

#: Noise variance against the layer's mean activation variance beyond which a warning is given.
SCALE_LIMITS = (1e-3, 1.0)


@dataclass(frozen=True)
class KDEOptions(HParams):
    kind = "option"

    noise_var: float = hparam(
        0.1, low=1e-12, high=1e12,
        help="variance of the added Gaussian noise, in squared activation units (ibsgd: 1e-3 "
        "for the 12-bit task, 0.1 for MNIST)",
    )  # fmt: skip


class KDE(WithProbeEntropies):
    """The layer read as T + N(0, noise_var I): upper (KL) bound as the value, lower
    (Bhattacharyya) bound as the extra ``lower`` (Kolchinsky & Tracey 2017; Saxe et al. 2018).
    Ceilings: log2 N and H(Y)."""

    name = "kde"
    summary = "Kolchinsky-Tracey KDE upper bound (and lower bound) under Gaussian noise"
    api_version = ESTIMATOR_API_VERSION
    Config = KDEOptions
    extras = ("lower",)
    saturation_advice = (
        "the noise is small against the distances between samples: raise kde.noise_var"
    )

    def measure_replicates(self, t: Any, y: Any, x: Any) -> Estimate:
        from infoflow_track.measures.kde import replicate_mi_kde

        noise = self.config.noise_var
        upper = replicate_mi_kde(t, y, noise_var=noise, bound="upper")
        lower = replicate_mi_kde(t, y, noise_var=noise, bound="lower")
        return Estimate(*upper, math.log2(t.shape[1]), self.h_y, {"lower": lower})

    def scale_warning(self, layer: str, t: Any) -> str | None:
        spread = t.reshape(t.shape[0], -1).double().var(dim=0).mean().item()
        ratio = self.config.noise_var / spread if spread > 0 else math.inf
        low, high = SCALE_LIMITS
        if low <= ratio <= high:
            return None
        where = f"kde.noise_var {self.config.noise_var:g} is {ratio:.2g} x the mean activation "
        where += f"variance of layer {layer} ({spread:.3g}) at initialisation"
        if ratio > high:
            return where + ": the noise hides the layer (estimates near 0); lower it"
        return where + ": every sample is its own mode (I(X;T) near log2 N); raise it"
