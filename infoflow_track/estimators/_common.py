"""What the built-in estimators share: the probe set's entropies, computed once per run."""

from __future__ import annotations

import math
from typing import Any

from infoflow_track.estimators import Estimator


class WithProbeEntropies(Estimator):
    """An estimator that knows, from :meth:`prepare`, H(X) of the probe inputs (distinct rows:
    the ceiling of any I(X;T) of a deterministic layer) and H(Y) of its labels, in bits."""

    h_x: float = math.nan
    h_y: float = math.nan

    def prepare(self, x: Any, y: Any) -> None:
        from infoflow_track.measures import entropy_bits
        from infoflow_track.measures.binning import symbols

        rows = x.reshape(x.shape[0], -1)
        h_x, h_y = (entropy_bits(ids.bincount().double()) for ids in (symbols(rows), y.long()))
        self.h_x, self.h_y = h_x.item(), h_y.item()


def layer_width(t: Any) -> int:
    """D of a layer t (N, ...): its values per sample."""
    return math.prod(t.shape[1:])
