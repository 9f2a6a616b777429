"""``adaptive-binning``: per-unit equal-mass bins, each sample's binned vector one symbol."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from infoflow_track.estimators import ESTIMATOR_API_VERSION, Estimate
from infoflow_track.estimators._common import WithProbeEntropies, replicate_width
from infoflow_track.hparams import HParams, hparam


@dataclass(frozen=True)
class AdaptiveBinningOptions(HParams):
    kind = "option"

    n_bins: int = hparam(
        2, low=2, high=2**15, help="equal-mass bins per unit (edges at its quantiles)"
    )


class AdaptiveBinning(WithProbeEntropies):
    """Binning whose edges are each unit's quantiles on the probe set, every epoch anew
    (Chelombiev, Houghton & O'Donnell, ICLR 2019): H(T) and I(T;Y) of the binned layer,
    insensitive to the units' scale and to outliers. Ceilings: min(H(X), D log2 n_bins), H(Y).
    """

    name = "adaptive-binning"
    summary = "per-unit equal-mass (quantile) bins, whole vector one symbol (Chelombiev et al.)"
    api_version = ESTIMATOR_API_VERSION
    Config = AdaptiveBinningOptions
    saturation_advice = (
        "every probe sample has its own bin vector: use fewer bins (adaptive-binning.n_bins) "
        "or an estimator for wide layers (--mi renyi)"
    )

    def measure_replicates(self, t: Any, y: Any, x: Any) -> Estimate:
        from infoflow_track.measures.binning import replicate_mi_adaptive_binned

        n_bins = self.config.n_bins
        i_xt, i_ty = replicate_mi_adaptive_binned(t, y, n_bins=n_bins)
        ceiling = min(self.h_x, replicate_width(t) * math.log2(n_bins))
        return Estimate(i_xt, i_ty, ceiling, self.h_y)
