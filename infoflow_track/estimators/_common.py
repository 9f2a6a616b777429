"""What the built-in estimators share: the probe set's entropies, computed once per run."""

from __future__ import annotations

import math
from typing import Any

from infoflow_track.estimators import Estimate, Estimator


class MeasuresReplicates(Estimator):
    """An estimator whose math batches over replicates: :meth:`measure_replicates` is its
    implementation and :meth:`measure` the case K = 1, so the two cannot disagree."""

    def measure(self, t: Any, y: Any, x: Any) -> Estimate:
        found = self.measure_replicates(t[None], y, x)
        extra = {name: (_first(a), _first(b)) for name, (a, b) in found.extra.items()}
        return Estimate(*(_first(v) for v in found[:4]), extra)


def _first(value: Any) -> Any:
    """Replicate 0 of a (K,) tensor; a value shared by all replicates as it is."""
    return value[0] if getattr(value, "ndim", 0) else value


class WithProbeEntropies(MeasuresReplicates):
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


def replicate_width(t: Any) -> int:
    """D of K replicates of a layer t (K, N, ...): its values per sample."""
    return math.prod(t.shape[2:])
