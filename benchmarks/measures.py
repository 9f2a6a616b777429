"""Per-epoch cost of every registered MI estimator, each against a plain numpy transcription.

What one epoch of the layer probe costs with each estimator, for a seeded, untrained ``mlp``
plugin model with hidden widths 512,256,128,64,32 (ReLU) on probe sets of N = 1,000, 4,000 and
10,000 samples (``--sizes``). An epoch is what :class:`~infoflow_track.probe.LayerProbe` does
per estimator: the forward pass over the probe set (``probe_activations``), then
``estimator.measure(t, y, x)`` of each of the 5 layers; ``estimator.prepare(x, y)`` runs once
before, untimed, as in a run. Every registered estimator is measured (``--estimators``,
default all that ``infoflow estimators list`` shows, plus ``per-unit``), with its default
options or those given as ``--set NAME.OPTION=VALUE``.

The probe set is the first N samples of the MNIST test split, read from the IDX files
(gzipped or not) in ``../shared/data/mnist`` beside the repository root, scaled to [0, 1] and
flattened to (N, 784); when that folder is missing, a seeded 10-class Gaussian mixture of the
same shape (the script says so).

Each estimator is checked against a numpy transcription of its published formula, written
here independently of our code and measured in the same run on the same float32 activations
(copied to the host), without the forward pass:

- **binning**: codes ``floor((t - min) / (max - min) * n_bins)`` over the layer's range
  (clipped to n_bins - 1; or ``floor(t / bin_width)``, or the fixed range), whole rows as
  symbols with ``np.unique(axis=0)``, I(X;T) = H(T) and I(T;Y) = H(T) - sum_c p(c) H(T|Y=c),
  as ibsgd's ``simplebinmi.py``. Must agree to 1e-6 bits.
- **adaptive-binning**: per unit (a Python loop over units), a value's code is
  floor(n_bins x (values of the unit below it) / N), counted with
  ``np.searchsorted(np.sort(col), col, side="left")``; then as binning. 1e-6 bits.
- **kde**: the full-matrix float32 transcription of Kolchinsky & Tracey's / Saxe et al.'s
  ``kde.py`` and ``computeMI`` (N x N squared distances, scipy ``logsumexp``, one entropy per
  class), upper and lower bound (both are our value and our extra ``lower``). 2e-3 bits.
- **renyi**: Gaussian Gram of the flattened samples, σ = scale x the median of the
  off-diagonal pairwise distances (``width=median``; σ = scale for ``fixed``), normalised by
  its trace; S_α = log2(sum λ^α) / (1 - α) from ``np.linalg.eigvalsh`` (float32, as ours);
  eigenvalues below 0 (rounding) count as 0; I(X;T) = S(A_X) + S(A_T) - S(A_X∘A_T) and I(T;Y)
  with the class-indicator kernel, the Hadamard products renormalised by their trace. S(A_X)
  and S(A_Y) are computed once per run (in prepare). 1e-3 bits.
- **per-unit** (``mi_per_unit``, a function kept for older studies, not an estimator): the
  notebooks' per-unit sklearn loop. Per unit, edges ``np.linspace(min, max, n_bins + 1)``,
  ``np.digitize(col, edges) - 1`` clipped to n_bins - 1 (so each unit's maximum falls in the
  last bin, as ours), ``sklearn.metrics.mutual_info_score`` of the codes with themselves
  (H(T_k)) and with the labels; nats to bits, averaged over units. 1e-3 bits.

Rényi measures only ``renyi.samples`` (default 1024) of the probe samples, evenly spread over
it (rows round(linspace(0, N - 1, samples))), since ``eigvalsh`` is O(N^3); its baseline
uses the same rows, and the table's ``samples`` column says how many were measured. At
N <= 1024 that is the whole probe set, so at the default sizes the row at N = 1,000 is Rényi
with samples = N. ``--renyi-full`` adds a row with ``renyi.samples`` = N at every larger size
(minutes per epoch at N = 10,000; its baseline is left out above 4,096 samples), to find the
probe size at which Rényi stays under 1 s per layer on the CPU (column ``ours s/layer``).

Every time is the median of ``--repeats`` wall-clock runs after one warm-up run, with CUDA
synchronised before and after each part; a case whose warm-up takes longer than
``--once-above`` seconds (default 5) is timed by that one run instead, so that the defaults
finish in a few minutes on 2 CPU cores (the full-matrix numpy KDE alone takes minutes per
epoch at N = 10,000); the ``runs`` column gives the timed runs of ours / numpy. ``ours
s/epoch`` includes the forward pass (``forward s``), ``numpy/ours`` compares the estimator
parts alone. Figures are taken with torch's default threads and numpy's BLAS defaults unless
``--threads`` sets both. Other processes on the machine disturb them, so the 1-minute load
average is printed at the start and end; on a loaded machine multi-threaded ``eigvalsh``
(Rényi, ours and numpy) can stall for seconds at its thread barriers, which ``--threads 1``
avoids. Values of ours and a baseline that disagree beyond the tolerance exit with status 1
after the report.

Run from the repository root::

    .venv/bin/python benchmarks/measures.py
    .venv/bin/python benchmarks/measures.py --device cuda --json measures.json
    .venv/bin/python benchmarks/measures.py --estimators renyi --sizes 1000,2000 --renyi-full
    .venv/bin/python benchmarks/measures.py --skip-baselines --set binning.n_bins=10
"""

from __future__ import annotations

import argparse
import dataclasses
import gzip
import json
import math
import os
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from infoflow_plugins.mlp import MLPConfig, MLPPlugin
from scipy.special import logsumexp
from sklearn.metrics import mutual_info_score
from threadpoolctl import threadpool_limits

from infoflow_track.devices import describe_device, resolve_device
from infoflow_track.errors import UserError
from infoflow_track.estimators import ESTIMATORS, Estimate, resolve_estimators, split_options
from infoflow_track.measures import mi_per_unit
from infoflow_track.probe import probe_activations
from infoflow_track.registry import discover

MNIST_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"
SEED, N_CLASSES, PER_UNIT_BINS = 0, 10, 30
WIDTHS = (512, 256, 128, 64, 32)
PER_UNIT = "per-unit"
TOLERANCE = {"binning": 1e-6, "adaptive-binning": 1e-6, "kde": 2e-3, "renyi": 1e-3,
             PER_UNIT: 1e-3}  # bits  # fmt: skip
RENYI_BASELINE_MAX = 4096  # samples; numpy eigvalsh beyond takes minutes per layer
LN2 = math.log(2.0)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ints = lambda s: tuple(int(v) for v in s.split(","))  # noqa: E731
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (cpu)")
    p.add_argument("--sizes", type=ints, default=(1000, 4000, 10000), help="probe sizes N")
    p.add_argument("--estimators", type=lambda s: tuple(s.split(",")),
                   help=f"comma-separated (all registered, then {PER_UNIT})")  # fmt: skip
    p.add_argument("--set", dest="options", action="append", default=[],
                   metavar="NAME.OPTION=VALUE", help="an estimator option, repeatable")  # fmt: skip
    p.add_argument("--repeats", type=int, default=3, help="timed runs after a warm-up (3)")
    p.add_argument("--once-above", type=float, default=5.0, metavar="S",
                   help="time a case by its warm-up alone above S seconds (5)")  # fmt: skip
    p.add_argument("--renyi-full", action="store_true",
                   help="also time renyi with samples = N where it measures fewer")  # fmt: skip
    p.add_argument("--threads", type=int, metavar="T",
                   help="torch, BLAS and OpenMP threads (the libraries' defaults)")  # fmt: skip
    p.add_argument("--skip-baselines", action="store_true", help="time ours only")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON here")
    return p.parse_args(argv)


# ---------------------------------------------------------------------------- probe set


def read_idx(path: Path) -> np.ndarray:
    """A uint8 IDX file: magic 0 0 8 ndim, ndim big-endian uint32 dims, then the data."""
    with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as f:
        raw = f.read()
    if raw[:3] != b"\0\0\x08":
        raise ValueError(f"{path} is not a uint8 IDX file")
    dims = np.frombuffer(raw, ">u4", count=raw[3], offset=4)
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * raw[3]).reshape(dims)


def load_probe(n: int) -> tuple[np.ndarray, np.ndarray, str]:
    """x (n, 784) float32 in [0, 1], y (n,) int64 and a description: MNIST test, else synthetic."""
    images, labels = (sorted(MNIST_DIR.glob(f"t10k-{kind}-idx*")) for kind in ("images", "labels"))
    if images and labels:
        x = read_idx(images[0])[:n].reshape(-1, 784).astype(np.float32) / 255
        return x, read_idx(labels[0])[:n].astype(np.int64), f"MNIST test split, {MNIST_DIR}"
    rng = np.random.default_rng(SEED)
    y = rng.integers(0, N_CLASSES, n)
    x = rng.random((N_CLASSES, 784))[y] + 0.3 * rng.standard_normal((n, 784))  # (n, 784)
    x = (x - x.min()) / (x.max() - x.min())
    return x.astype(np.float32), y, f"synthetic Gaussian mixture ({MNIST_DIR} not found)"


def build_model(device: torch.device) -> torch.nn.Module:
    """The seeded, untrained ``mlp`` plugin model 784 -> 512,256,128,64,32 (ReLU) -> 10."""
    torch.manual_seed(SEED)
    data = SimpleNamespace(input_shape=(784,), num_classes=N_CLASSES)  # what build reads
    return MLPPlugin().build(MLPConfig(widths=WIDTHS), data).to(device)


# ------------------------------------------------------------------- numpy transcriptions


def entropy_np(counts: np.ndarray) -> float:
    """Entropy in bits of the distribution given by counts (M,)."""
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log2(p)).sum())


def row_entropy(codes: np.ndarray) -> float:
    """H in bits of the rows of codes (N, D), each whole row one symbol."""
    return entropy_np(np.unique(codes, axis=0, return_counts=True)[1])


def binned_mi_np(codes: np.ndarray, y: np.ndarray) -> list[float]:
    """[H(T), H(T) - sum_c p(c) H(T|Y=c)] in bits of codes (N, D), as ibsgd's simplebinmi."""
    h_t = row_entropy(codes)
    h_t_given_y = sum(np.mean(y == c) * row_entropy(codes[y == c]) for c in np.unique(y))
    return [h_t, h_t - h_t_given_y]


class NumpyBaseline:
    """A numpy transcription of one estimator with its config; ``measure`` -> [I(X;T),
    I(T;Y), then each extra's pair] in bits, as floats."""

    def __init__(self, config: Any) -> None:
        self.c = config

    def prepare(self, x: np.ndarray, y: np.ndarray) -> None:
        """Once per run with the probe inputs x (N, 784) and labels y (N,)."""

    def measure(self, t: np.ndarray, y: np.ndarray) -> list[float]:
        raise NotImplementedError


class NumpyBinning(NumpyBaseline):
    def measure(self, t: np.ndarray, y: np.ndarray) -> list[float]:
        """Equal bins of the layer t (N, D), computed in float64."""
        c, t = self.c, t.reshape(len(t), -1).astype(np.float64)
        if c.bin_width is not None:
            return binned_mi_np(np.floor(t / c.bin_width).astype(np.int64), y)
        low, high = (t.min(), t.max()) if c.low is None else (c.low, c.high)
        if high == low:  # a constant layer: one bin
            return binned_mi_np(np.zeros(t.shape, np.int64), y)
        codes = np.clip(np.floor((t - low) / (high - low) * c.n_bins), 0, c.n_bins - 1)
        return binned_mi_np(codes.astype(np.int64), y)


class NumpyAdaptiveBinning(NumpyBaseline):
    def measure(self, t: np.ndarray, y: np.ndarray) -> list[float]:
        """Equal-mass bins of each unit of t (N, D): n_bins x the count of values below / N."""
        t = t.reshape(len(t), -1)
        n, n_bins = len(t), self.c.n_bins
        codes = np.empty(t.shape, np.int64)  # (N, D)
        for k in range(t.shape[1]):  # the baseline may loop over units
            below = np.searchsorted(np.sort(t[:, k]), t[:, k], side="left")
            codes[:, k] = below * n_bins // n
        return binned_mi_np(codes, y)


def entropy_estimator_kl(x: np.ndarray, var: float) -> float:
    """kde.py: KL upper bound (nats) on the entropy of the mixture of N(x_i, var I)."""
    n, dims = x.shape
    x2 = (x * x).sum(axis=1, keepdims=True)  # (N, 1)
    dists = x2 + x2.T - 2 * x @ x.T  # (N, N) squared distances
    normconst = (dims / 2.0) * np.log(2 * np.pi * var)
    lprobs = logsumexp(-dists / (2 * var), axis=1) - np.log(n) - normconst  # (N,)
    return dims / 2 + float(-lprobs.mean())


def entropy_estimator_bd(x: np.ndarray, var: float) -> float:
    """kde.py: Bhattacharyya lower bound (nats) on the same entropy."""
    return entropy_estimator_kl(x, 4 * var) + np.log(0.25) * x.shape[1] / 2


def kde_mi_np(t: np.ndarray, y: np.ndarray, var: float, bound: str) -> list[float]:
    """``computeMI`` of Saxe et al. for a layer t (N, D): [I(X;T), I(T;Y)] in bits."""
    entropy = entropy_estimator_kl if bound == "upper" else entropy_estimator_bd
    h = entropy(t, var)
    h_given_x = (t.shape[1] / 2.0) * (np.log(2 * np.pi * var) + 1)  # kde_condentropy
    h_given_y = 0.0
    for c in np.unique(y):  # one entropy per class, as the reference
        h_given_y += np.mean(y == c) * entropy(t[y == c], var)
    return [(h - h_given_x) / LN2, (h - h_given_y) / LN2]


class NumpyKDE(NumpyBaseline):
    def measure(self, t: np.ndarray, y: np.ndarray) -> list[float]:
        """[upper I(X;T), upper I(T;Y), lower I(X;T), lower I(T;Y)] of t (N, D)."""
        t = t.reshape(len(t), -1)
        return [v for b in ("upper", "lower") for v in kde_mi_np(t, y, self.c.noise_var, b)]


class NumpyRenyi(NumpyBaseline):
    def gram(self, s: np.ndarray) -> np.ndarray:
        """Gaussian Gram (M, M) float32 of samples s (M, ...), flattened."""
        flat = s.reshape(len(s), -1).astype(np.float32)
        norms = (flat * flat).sum(axis=1)
        sq = np.maximum(norms[:, None] + norms[None, :] - 2 * flat @ flat.T, 0)  # (M, M)
        sigma = self.c.scale
        if self.c.width == "median":
            median = np.median(np.sqrt(sq[~np.eye(len(flat), dtype=bool)]))
            sigma *= median if median > 0 else 1.0
        return np.exp(-sq / np.float32(2 * sigma**2))

    def entropy(self, k: np.ndarray) -> float:
        """S_α in bits of the Gram k (M, M) normalised by its trace."""
        lam = np.clip(np.linalg.eigvalsh(k / np.trace(k)), 0, None)
        alpha = self.c.alpha
        if alpha == 1.0:
            lam = lam[lam > 0]
            return float(-(lam * np.log2(lam)).sum())
        return float(np.log2((lam**alpha).sum()) / (1 - alpha))

    def prepare(self, x: np.ndarray, y: np.ndarray) -> None:
        n = len(x)  # the measured samples: `samples` of them evenly spread over the probe
        self.rows = np.round(np.linspace(0, n - 1, min(n, self.c.samples))).astype(np.int64)
        ys = y[self.rows]
        self.a_x, self.a_y = self.gram(x[self.rows]), (ys[:, None] == ys).astype(np.float32)
        self.s_x, self.s_y = self.entropy(self.a_x), self.entropy(self.a_y)

    def measure(self, t: np.ndarray, y: np.ndarray) -> list[float]:
        a_t = self.gram(t[self.rows])
        s_t = self.entropy(a_t)
        i_xt = self.s_x + s_t - self.entropy(self.a_x * a_t)
        return [i_xt, s_t + self.s_y - self.entropy(a_t * self.a_y)]


class SklearnPerUnit(NumpyBaseline):
    def measure(self, t: np.ndarray, y: np.ndarray) -> list[float]:
        """The notebooks' loop over the units of t (N, D): [mean I(X;T_k), mean I(T_k;Y)]."""
        n_bins, t = self.c.n_bins, t.reshape(len(t), -1)
        mi_xt, mi_ty = [], []
        for k in range(t.shape[1]):
            col = t[:, k]  # (N,) one unit
            edges = np.linspace(col.min(), col.max(), n_bins + 1)
            codes = np.clip(np.digitize(col, edges) - 1, 0, n_bins - 1)  # the clip: our change
            mi_xt.append(mutual_info_score(codes, codes))  # H(T_k), nats
            mi_ty.append(mutual_info_score(codes, y))
        return [float(np.mean(mi_xt)) / LN2, float(np.mean(mi_ty)) / LN2]


BASELINES: dict[str, type[NumpyBaseline]] = {
    "binning": NumpyBinning, "adaptive-binning": NumpyAdaptiveBinning, "kde": NumpyKDE,
    "renyi": NumpyRenyi, PER_UNIT: SklearnPerUnit,
}  # fmt: skip


class PerUnit:
    """``mi_per_unit`` (30 bins) in the estimator's shape, so it is timed as one."""

    name, extras = PER_UNIT, ()

    def __init__(self, config: Any = None) -> None:
        self.config = config or SimpleNamespace(n_bins=PER_UNIT_BINS)

    def prepare(self, x: torch.Tensor, y: torch.Tensor) -> None:
        pass

    def measure(self, t: torch.Tensor, y: torch.Tensor, x: torch.Tensor) -> Estimate:
        return Estimate(*mi_per_unit(t, y, n_bins=self.config.n_bins), math.nan, math.nan)

    def describe(self) -> str:
        return f"{PER_UNIT} (mi_per_unit, n_bins={PER_UNIT_BINS}; a function, not an estimator)"


# ------------------------------------------------------------------------------ timing


def now(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def timed_runs(
    fn: Callable[[], tuple[dict[str, float], Any]], repeats: int, once_above: float
) -> tuple[dict[str, float], int, Any]:
    """(median seconds by part, timed runs, last result) of ``fn() -> (seconds by part,
    result)``: ``repeats`` runs after a warm-up, or the warm-up alone when it took longer
    than ``once_above`` seconds."""
    parts, out = fn()
    runs = [parts]
    if sum(parts.values()) <= once_above:
        runs = []
        for _ in range(repeats):
            parts, out = fn()
            runs.append(parts)
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}, len(runs), out


def estimate_values(found: Estimate, extras: Sequence[str]) -> list[float]:
    """[I(X;T), I(T;Y), then each extra's pair] of one layer as floats (a host read)."""
    pairs = [(found.i_xt, found.i_ty), *(found.extra[e] for e in extras)]
    return [float(v) for pair in pairs for v in pair]


def ours_epoch(model, estimator, x: torch.Tensor, y: torch.Tensor, device: torch.device):
    """An epoch function: ({"forward", "measure"} seconds, (layers as numpy (N, w) each,
    values per layer)) of the probe's forward pass and ``estimator.measure`` of each layer."""

    def epoch() -> tuple[dict[str, float], tuple[list[np.ndarray], list[list[float]]]]:
        start = now(device)
        acts = list(probe_activations(model, x).values())  # 5 x (N, width)
        middle = now(device)
        found = [estimator.measure(t, y, x) for t in acts]
        end = now(device)
        values = [estimate_values(f, estimator.extras) for f in found]
        layers = [t.cpu().numpy() for t in acts]
        return {"forward": middle - start, "measure": end - middle}, (layers, values)

    return epoch


def baseline_epoch(baseline: NumpyBaseline, layers: list[np.ndarray], y: np.ndarray):
    """An epoch function: ({"measure"} seconds, values per layer) of the numpy baseline."""

    def epoch() -> tuple[dict[str, float], list[list[float]]]:
        start = time.perf_counter()
        values = [[float(v) for v in baseline.measure(t, y)] for t in layers]
        return {"measure": time.perf_counter() - start}, values

    return epoch


# ------------------------------------------------------------------------------- cases


def load_estimators(args: argparse.Namespace) -> list[Any]:
    """The configured estimators, loaded once at the start: ``--estimators`` (an unknown or
    broken one is an error), else every registered one that loads (others are named and
    skipped), then the per-unit stand-in."""
    plain, options = split_options(dict(o.split("=", 1) for o in args.options))
    if plain:
        raise SystemExit(f"--set takes NAME.OPTION=VALUE, got {sorted(plain)}")
    if options.pop(PER_UNIT, None):
        raise SystemExit(f"{PER_UNIT} takes no options")
    names = list(args.estimators or sorted(discover(ESTIMATORS)))
    registered = [n for n in names if n != PER_UNIT]
    if stray := sorted(set(options) - set(registered)):
        raise SystemExit(f"options of {stray[0]} given, but it is not measured")
    if args.estimators:
        chosen = list(resolve_estimators(registered, options).estimators)
    else:
        chosen = []
        for name in registered:
            try:
                chosen += resolve_estimators([name], {name: options.get(name, {})}).estimators
            except UserError as exc:
                print(f"left out: {exc}")
    return chosen + ([PerUnit()] if PER_UNIT in names or not args.estimators else [])


def cases(n: int, estimators: list[Any], renyi_full: bool) -> list[dict]:
    """The rows at probe size n: {"label", "estimator", "samples"} per estimator, plus renyi
    with samples = n under ``--renyi-full`` where its options measure fewer."""
    out = []
    for e in estimators:
        samples = min(n, e.config.samples) if e.name == "renyi" else n
        out.append({"label": e.name, "estimator": e, "samples": samples})
        if e.name == "renyi" and renyi_full and samples < n:
            full = type(e)(dataclasses.replace(e.config, samples=n))
            out.append({"label": f"renyi (samples={n})", "estimator": full, "samples": n})
    return out


def bench_case(case: dict, model, x_np, y_np, device, args) -> dict:
    """One table row: ours per epoch on ``device``, the numpy baseline, their difference."""
    proto = case["estimator"]
    estimator = type(proto)(proto.config)  # a fresh one, prepared once as in a run
    x, y = torch.from_numpy(x_np).to(device), torch.from_numpy(y_np).to(device)
    estimator.prepare(x, y)
    seconds, runs, (layers, values) = timed_runs(
        ours_epoch(model, estimator, x, y, device), args.repeats, args.once_above
    )
    row = {"estimator": estimator.name, "label": case["label"], "n": len(y_np),
           "samples": case["samples"], "describe": estimator.describe(), "ours_runs": runs,
           "forward_s": seconds["forward"], "measure_s": seconds["measure"],
           "ours_s": seconds["forward"] + seconds["measure"], "value": values}  # fmt: skip
    if args.skip_baselines or estimator.name not in BASELINES:
        return row
    if estimator.name == "renyi" and case["samples"] > RENYI_BASELINE_MAX:
        return row | {"baseline_note": f"left out above {RENYI_BASELINE_MAX} samples"}
    baseline = BASELINES[estimator.name](estimator.config)
    baseline.prepare(x_np, y_np)
    b_seconds, b_runs, b_values = timed_runs(
        baseline_epoch(baseline, layers, y_np), args.repeats, args.once_above
    )
    diff = max(abs(a - b) for va, vb in zip(values, b_values, strict=True)
               for a, b in zip(va, vb, strict=True))  # fmt: skip
    agree = bool(diff <= TOLERANCE[estimator.name])
    return row | {"baseline_s": b_seconds["measure"], "baseline_runs": b_runs,
                  "baseline_value": b_values, "ratio": b_seconds["measure"] / seconds["measure"],
                  "max_abs_diff": diff, "agree": agree}  # fmt: skip


# ------------------------------------------------------------------------------ report


HEADER = (
    "| estimator | N | samples | ours s/epoch | forward s | ours s/layer | numpy s/epoch "
    "| numpy/ours | max abs diff (bits) | agree | runs |\n"
    "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|"
)


def table_row(r: dict) -> str:
    """One Markdown row of a result of :func:`bench_case`."""
    if "baseline_s" in r:
        base = (f"{r['baseline_s']:.3f} | {r['ratio']:.2f}x | {r['max_abs_diff']:.2e} | "
                f"{'yes' if r['agree'] else '**NO**'}")  # fmt: skip
        runs = f"{r['ours_runs']}/{r['baseline_runs']}"
    else:
        base, runs = f"- ({r.get('baseline_note', 'skipped')}) | - | - | -", f"{r['ours_runs']}/-"
    per_layer = r["measure_s"] / len(WIDTHS)
    return (f"| {r['label']} | {r['n']:,} | {r['samples']:,} | {r['ours_s']:.3f} | "
            f"{r['forward_s']:.3f} | {per_layer:.3f} | {base} | {runs} |")  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    device = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
        threadpool_limits(args.threads)  # numpy's BLAS and OpenMP
    estimators = load_estimators(args)
    x_all, y_all, source = load_probe(max(args.sizes))  # (N, 784) float32, (N,) int64
    model = build_model(device)
    threads = f"{torch.get_num_threads()} ({'--threads' if args.threads else 'default'})"
    print(f"torch {torch.__version__}, numpy {np.__version__}, device {describe_device(device)}, "
          f"torch threads {threads}")  # fmt: skip
    print(f"probe set: {source}; model: mlp {','.join(map(str, WIDTHS))} (seeded, untrained)")
    print(f"timing: median of {args.repeats} runs after a warm-up, or the warm-up alone above "
          f"{args.once_above:g} s")  # fmt: skip
    print("estimators:", *(e.describe() for e in estimators), sep="\n- ")
    load = [os.getloadavg()[0]]  # other processes on the machine disturb the timings
    print(f"1-min load average at start {load[0]:.2f} (on {os.cpu_count()} CPUs)\n")
    print(HEADER, flush=True)
    rows = []
    for n in args.sizes:
        for case in cases(n, estimators, args.renyi_full):
            rows.append(bench_case(case, model, x_all[:n], y_all[:n], device, args))
            print(table_row(rows[-1]), flush=True)
    load.append(os.getloadavg()[0])
    print(f"\n1-min load average at end {load[1]:.2f}")
    if args.json:
        result = {"device": describe_device(device), "torch": torch.__version__,
                  "numpy": np.__version__, "threads": torch.get_num_threads(),
                  "data": source, "widths": WIDTHS, "repeats": args.repeats,
                  "once_above_s": args.once_above, "load_average": load, "rows": rows}  # fmt: skip
        Path(args.json).write_text(json.dumps(result, indent=2))
    disagree = [f"{r['label']} at N={r['n']:,}: {r['max_abs_diff']:.3g} bits"
                for r in rows if r.get("agree") is False]  # fmt: skip
    if disagree:
        raise SystemExit("values disagree with the baseline: " + "; ".join(disagree))


if __name__ == "__main__":
    main()
