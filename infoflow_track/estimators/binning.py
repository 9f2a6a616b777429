"""``binning``: layer-wise binning, each sample's whole binned vector one symbol."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from infoflow_track.errors import UserError
from infoflow_track.estimators import ESTIMATOR_API_VERSION, Estimate
from infoflow_track.estimators._common import WithProbeEntropies, replicate_width
from infoflow_track.hparams import HParams, hparam


@dataclass(frozen=True)
class BinningOptions(HParams):
    kind = "option"

    n_bins: int = hparam(30, low=1, high=2**15, help="equal bins over the range (no bin_width)")
    bin_width: float | None = hparam(
        None, none="none", low=1e-12, high=1e12,
        help="fixed bin width, edges at multiples of it (Saxe et al. 2018: 0.07 on ib12); "
        "none: n_bins over a range",
    )  # fmt: skip
    low: float | None = hparam(
        None, none="auto", help="fixed low end of the range, for every epoch (auto: the "
        "layer's minimum of each epoch)",
    )  # fmt: skip
    high: float | None = hparam(None, none="auto", help="fixed high end of the range (auto)")

    def __post_init__(self) -> None:
        super().__post_init__()
        if (self.low is None) != (self.high is None):
            raise UserError("options 'low' and 'high' of binning go together: give both or none")
        if self.low is not None and not self.low < self.high:
            raise UserError(f"option 'low' {self.low} of binning must be below 'high' {self.high}")
        if self.bin_width is not None and self.low is not None:
            raise UserError("binning takes bin_width or a range (low, high), not both")


class Binning(WithProbeEntropies):
    """I(X;T) = H(T) of the binned layer (a deterministic net: H(T|X) = 0) and I(T;Y).

    Bins: ``n_bins`` over the layer's range of each epoch (Shwartz-Ziv & Tishby 2017), over a
    range fixed for the run (``low``, ``high``), or of a fixed width anchored at 0 (Saxe et
    al. 2018). Ceilings: H(X) of the probe (log2 N for distinct inputs), at most
    D log2(n_bins) for ranges, and H(Y).
    """

    name = "binning"
    summary = "layer-wise binning: H(T) of the binned layer (Shwartz-Ziv & Tishby; Saxe et al.)"
    api_version = ESTIMATOR_API_VERSION
    Config = BinningOptions
    saturation_advice = (
        "every probe sample has its own bin vector: use fewer bins (binning.n_bins) or a "
        "wider binning.bin_width, or an estimator for wide layers (--mi renyi or adaptive-binning)"
    )

    def measure_replicates(self, t: Any, y: Any, x: Any) -> Estimate:
        from infoflow_track.measures.binning import replicate_mi_binned

        c = self.config
        value_range = None if c.low is None else (c.low, c.high)
        i_xt, i_ty = replicate_mi_binned(t, y, n_bins=c.n_bins, bin_width=c.bin_width,
                                         value_range=value_range)  # fmt: skip
        ceiling = self.h_x
        if c.bin_width is None:
            ceiling = min(ceiling, replicate_width(t) * math.log2(c.n_bins))
        return Estimate(i_xt, i_ty, ceiling, self.h_y)
