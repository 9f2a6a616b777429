"""Replicates: K seeds of one configuration, summarised per epoch as mean and spread.

A run with ``replicates = K`` trains seeds ``seed, seed + 1, ..., seed + K - 1`` on the same
split and probe set. Every epoch each metric is logged as the replicates' mean under its own
key (``acc/test``, ``mi_xt/<layer>``, ...) and, for K >= 2, with two spread keys:

- ``sd/<key>``: the sample standard deviation over the replicates (ddof = 1);
- ``ci95/<key>``: the half-width of the 95% Student-t interval of the mean,
  t(0.975, n - 1) * sd / sqrt(n), so the interval is ``key`` +- ``ci95/key``.

A replicate dropped after diverging (setting ``drop_diverged``) is left out of both from the
epoch it diverged on; n counts the replicates kept. Every replicate's own values of every
epoch go to the artifact ``replicates/metrics.csv`` (a row per epoch and seed, a column per
metric: ``pandas.read_csv`` reads it).
"""

from __future__ import annotations

import csv
import functools
import io
import math
from collections.abc import Mapping, Sequence

import numpy as np

#: Prefixes of the spread keys: ``sd/acc/test``, ``ci95/mi_xt/h1``.
SPREAD_PREFIXES = ("sd/", "ci95/")
#: Artifact holding every replicate's values of every epoch.
TABLE_ARTIFACT = "replicates/metrics.csv"


def seeds_of(seed: int, replicates: int) -> list[int]:
    """The seeds of a run's replicates: ``seed, seed + 1, ...``."""
    return [seed + k for k in range(replicates)]


@functools.lru_cache(maxsize=256)
def t_quantile_975(dof: int) -> float:
    """The 0.975 quantile of Student's t with ``dof`` >= 1 degrees of freedom."""
    from scipy.stats import t  # scipy comes with scikit-learn

    return float(t.ppf(0.975, dof))


def summarise(values: Mapping[str, Sequence[float]], kept: Sequence[bool]) -> dict[str, float]:
    """Mean of each metric over the kept replicates and, with K >= 2 replicates in all, its
    ``sd/`` and ``ci95/`` keys (NaN while fewer than two are kept).

    ``values`` maps a key to its K per-replicate values (floats); ``kept`` (K,) says which
    replicates count.
    """
    keys = list(values)
    table = np.asarray([values[k] for k in keys], dtype=np.float64).reshape(len(keys), -1)
    chosen = table[:, np.asarray(kept, dtype=bool)]  # (M, n)
    n = chosen.shape[1]
    with np.errstate(invalid="ignore", over="ignore"):  # inf values: NaN spreads, honestly
        mean = chosen.mean(axis=1) if n else np.full(len(keys), np.nan)
        sd = chosen.std(axis=1, ddof=1) if n >= 2 else np.full(len(keys), np.nan)
    out = dict(zip(keys, mean.tolist(), strict=True))
    if len(kept) < 2:
        return out
    half = t_quantile_975(n - 1) / math.sqrt(n) if n >= 2 else math.nan
    for key, s, h in zip(keys, sd.tolist(), (half * sd).tolist(), strict=True):
        out[f"sd/{key}"] = s
        out[f"ci95/{key}"] = h
    return out


def ci95_half_width(values: Sequence[float]) -> float:
    """Half-width of the 95% t interval of the mean of the finite ``values`` (NaN if fewer
    than two)."""
    finite = np.asarray([v for v in values if math.isfinite(v)], dtype=np.float64)
    if finite.size < 2:
        return math.nan
    return t_quantile_975(finite.size - 1) * float(finite.std(ddof=1)) / math.sqrt(finite.size)


def bound(metrics: Mapping[str, float], key: str, statistic: str) -> float | None:
    """``key``'s mean (``statistic`` "mean"), or the low or high end of its 95% interval
    ("lower", "upper"); None if the run logged no such value."""
    mean = metrics.get(key)
    if statistic == "mean" or mean is None:
        return mean
    half = metrics.get(f"ci95/{key}")
    if half is None:
        return None
    return mean - half if statistic == "lower" else mean + half


class ReplicateTable:
    """Every replicate's values of every epoch, kept in memory and written as one CSV."""

    def __init__(self, seeds: Sequence[int]) -> None:
        self.seeds = list(seeds)
        self.keys: list[str] = []
        self.rows: list[tuple[int, int, bool, dict[str, float]]] = []

    def add(self, step: int, values: Mapping[str, Sequence[float]], kept: Sequence[bool]) -> None:
        """Record epoch ``step``: ``values`` {key: K values}, ``kept`` (K,)."""
        for key in values:
            if key not in self.keys:
                self.keys.append(key)
        for k, seed in enumerate(self.seeds):
            self.rows.append((step, seed, bool(kept[k]), {m: v[k] for m, v in values.items()}))

    def csv_text(self) -> str:
        """Columns ``epoch, seed, kept`` and one per metric key; empty cells for a metric an
        epoch did not log."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["epoch", "seed", "kept", *self.keys])
        for step, seed, kept, values in self.rows:
            cells = [repr(float(values[k])) if k in values else "" for k in self.keys]
            writer.writerow([step, seed, str(kept).lower(), *cells])
        return buffer.getvalue()
