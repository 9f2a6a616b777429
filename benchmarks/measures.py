"""Speed of the information-flow measures against the research notebooks' estimators.

The probe set is N samples (``--n``, default 10,000) of the MNIST test split, read from the IDX
files (gzipped or not) in ``../shared/data/mnist`` beside the repository root, scaled to [0, 1]
and flattened to (N, 784); when that folder is missing, a seeded 10-class Gaussian mixture of
the same shape (the script says so). For each width w in ``--widths`` (default 20,256,1024) a
layer is t = relu(x W + b) with seeded W (784, w) ~ N(0, 1/784) and b ~ N(0, 0.01): the same
float32 activations for ours (on ``--device``) and for the baselines (numpy, on the CPU).
Per width the script times:

- **ours**: ``mi_binned`` (30 bins), ``mi_kde`` upper and lower (noise variance 0.1),
  ``mi_per_unit`` (30 bins), and linear ``cka``, biased and debiased, against a second seeded
  layer of the same width.
- **(a) per-unit sklearn loop of the notebooks**, against ``mi_per_unit``: per unit, bin edges
  ``np.linspace(min, max, n_bins + 1)`` over the unit's column, ``np.digitize(col, bins) - 1``,
  then ``sklearn.metrics.mutual_info_score`` of the codes with the labels (I(T_k;Y)) and with
  themselves (H(T_k) = I(X;T_k)), in a Python loop; nats to bits, averaged over units. The one
  change from the notebooks is a clip of the codes to n_bins - 1, so that each unit's maximum
  falls in the last bin (as ours) rather than in a bin of its own; the values then agree.
- **(b) full-matrix numpy KDE in the published reference style**, against ``mi_kde`` (both
  bounds): a float32 numpy transcription of Kolchinsky & Tracey's / Saxe et al.'s ``kde.py`` and
  ``computeMI`` (full N x N squared-distance matrix, scipy ``logsumexp``, one entropy per class).

Then one **epoch of the layer probe** on a seeded, untrained ``mlp`` plugin model with hidden
widths 512,256,128,64,32 (ReLU): the forward pass over the probe set (``probe_activations``),
``mi_binned`` and ``mi_kde`` (upper) of every layer, and linear CKA (``cka_matrix`` of the
layers and the one-hot labels, plus each layer against a second seeded model's, standing in
for the layers at initialisation), as ``LayerProbe`` does, with both MI estimators.

Every time is the median of ``--repeats`` wall-clock runs after one warm-up run, with CUDA
synchronised before and after each. Figures are taken with torch's default number of threads
(2 on the 2-core development machine; not set here) and numpy's BLAS defaults. The speed
targets are reported, never enforced (exit status 0); values of ours and a baseline that
disagree (per-unit by 1e-3 bits, KDE by 2e-3 bits) exit with status 1 after the report.

Run from the repository root::

    .venv/bin/python benchmarks/measures.py
    .venv/bin/python benchmarks/measures.py --device cuda --json measures.json
    .venv/bin/python benchmarks/measures.py --skip-baselines --widths 256 --repeats 1
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from infoflow_plugins.mlp import MLPConfig, MLPPlugin
from scipy.special import logsumexp
from sklearn.metrics import mutual_info_score

from infoflow_track.devices import describe_device, resolve_device
from infoflow_track.measures import cka, cka_matrix, mi_binned, mi_kde, mi_per_unit
from infoflow_track.probe import probe_activations

MNIST_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"
SEED, N_BINS, NOISE_VAR, N_CLASSES = 0, 30, 0.1, 10
EPOCH_WIDTHS = (512, 256, 128, 64, 32)
EPOCH_PARTS = ("forward", "binning", "kde", "cka", "total")
TOL_PER_UNIT, TOL_KDE = 1e-3, 2e-3  # bits
KDE_TARGET_RATIO, KDE_TARGET_WIDTH, EPOCH_TARGET_S = 5.0, 256, 2.0
LN2 = math.log(2.0)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (cpu)")
    p.add_argument("--n", type=int, default=10000, help="probe samples (10000)")
    p.add_argument(
        "--widths",
        type=lambda s: tuple(int(w) for w in s.split(",")),
        default=(20, 256, 1024),
        help="layer widths, comma-separated (20,256,1024)",
    )
    p.add_argument("--repeats", type=int, default=3, help="timed runs after a warm-up (3)")
    p.add_argument("--skip-baselines", action="store_true", help="time ours only")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON here")
    return p.parse_args(argv)


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


def random_layer(x: np.ndarray, width: int, seed: int) -> np.ndarray:
    """relu(x W + b): (N, 784) -> (N, width) float32, W ~ N(0, 1/784), b ~ N(0, 0.01)."""
    rng, d = np.random.default_rng([seed, width]), x.shape[1]
    w = rng.standard_normal((d, width), dtype=np.float32) / np.float32(math.sqrt(d))  # (d, w)
    b = 0.1 * rng.standard_normal(width, dtype=np.float32)
    return np.maximum(x @ w + b, 0)


def sklearn_per_unit(t: np.ndarray, y: np.ndarray, n_bins: int) -> tuple[float, float]:
    """Baseline (a), the notebooks' loop: (mean_k I(X;T_k), mean_k I(T_k;Y)) in bits."""
    mi_xt, mi_ty = [], []
    for i in range(t.shape[1]):
        col = t[:, i]  # (N,) one unit
        bins = np.linspace(col.min(), col.max(), n_bins + 1)
        codes = np.clip(np.digitize(col, bins) - 1, 0, n_bins - 1)  # the clip: our one change
        mi_xt.append(mutual_info_score(codes, codes))  # H(T_k), nats
        mi_ty.append(mutual_info_score(codes, y))
    return float(np.mean(mi_xt)) / LN2, float(np.mean(mi_ty)) / LN2


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


def numpy_kde_mi(t: np.ndarray, y: np.ndarray, var: float, bound: str) -> tuple[float, float]:
    """Baseline (b), ``computeMI`` of Saxe et al.: (I(X;T), I(T;Y)) in bits."""
    entropy = entropy_estimator_kl if bound == "upper" else entropy_estimator_bd
    h = entropy(t, var)
    h_given_x = (t.shape[1] / 2.0) * (np.log(2 * np.pi * var) + 1)  # kde_condentropy
    h_given_y = 0.0
    for c in np.unique(y):  # one entropy per class, as the reference
        h_given_y += np.mean(y == c) * entropy(t[y == c], var)
    return (h - h_given_x) / LN2, (h - h_given_y) / LN2


def now(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def timed(fn: Callable[[], Any], device: torch.device, repeats: int) -> tuple[float, Any]:
    """(median seconds of ``fn()`` over ``repeats`` runs after a warm-up, its last result)."""
    fn()
    runs = []
    for _ in range(repeats):
        start = now(device)
        out = fn()
        runs.append(now(device) - start)
    return statistics.median(runs), out


def floats(value: Any) -> list[float]:
    """A measure's result (a tensor or a tuple of numbers) as a list of floats."""
    return [float(v) for v in (value if isinstance(value, tuple) else (value,))]


def bench_width(x: np.ndarray, y_np: np.ndarray, width: int, device: torch.device, args) -> list:
    """One table row per measure at one layer width."""
    t_np, t2_np = (random_layer(x, width, seed) for seed in (SEED, SEED + 1))  # (N, w) each
    t, t2 = torch.from_numpy(t_np).to(device), torch.from_numpy(t2_np).to(device)
    y = torch.from_numpy(y_np).to(device)  # (N,)
    kde_b = {  # bound -> baseline (b)
        b: ("(b) numpy KDE", lambda b=b: numpy_kde_mi(t_np, y_np, NOISE_VAR, b), TOL_KDE)
        for b in ("upper", "lower")
    }
    per_unit_a = ("(a) sklearn loop", lambda: sklearn_per_unit(t_np, y_np, N_BINS), TOL_PER_UNIT)
    cases = [  # (measure, ours, baseline (label, fn, tolerance in bits) or None)
        ("mi_binned", lambda: mi_binned(t, y, n_bins=N_BINS), None),
        ("mi_kde upper", lambda: mi_kde(t, y, noise_var=NOISE_VAR), kde_b["upper"]),
        ("mi_kde lower", lambda: mi_kde(t, y, noise_var=NOISE_VAR, bound="lower"), kde_b["lower"]),
        ("mi_per_unit", lambda: mi_per_unit(t, y, n_bins=N_BINS), per_unit_a),
        ("cka linear", lambda: cka(t, t2), None),
        ("cka debiased", lambda: cka(t, t2, debiased=True), None),
    ]
    rows = []
    for measure, ours, baseline in cases:
        seconds, value = timed(ours, device, args.repeats)
        row = {"width": width, "measure": measure, "ours_s": seconds, "value": floats(value)}
        if baseline is not None and not args.skip_baselines:
            label, fn, tol = baseline
            b_seconds, b_value = timed(fn, torch.device("cpu"), args.repeats)
            b_value = floats(b_value)
            diff = max(abs(a - b) for a, b in zip(row["value"], b_value, strict=True))
            row |= {"baseline": label, "baseline_s": b_seconds, "baseline_value": b_value}
            row |= {"ratio": b_seconds / seconds, "max_abs_diff": diff, "agree": diff < tol}
        rows.append(row)
    return rows


def bench_epoch(x_np: np.ndarray, y_np: np.ndarray, device: torch.device, repeats: int) -> dict:
    """Median seconds of one probe epoch on a seeded, untrained 5-hidden-layer MLP, by part."""
    data = SimpleNamespace(input_shape=(x_np.shape[1],), num_classes=N_CLASSES)  # what build reads
    models = []
    for seed in (SEED, SEED + 1):  # the measured model, then the "initial" one
        torch.manual_seed(seed)
        models.append(MLPPlugin().build(MLPConfig(widths=EPOCH_WIDTHS), data).to(device))
    x, y = torch.from_numpy(x_np).to(device), torch.from_numpy(y_np).to(device)
    labels = F.one_hot(y, N_CLASSES).float()  # (N, C)
    initial = list(probe_activations(models[1], x).values())  # 5 x (N, width)

    def epoch() -> dict[str, float]:
        marks = [now(device)]  # a time stamp after each part
        acts = list(probe_activations(models[0], x).values())  # 5 x (N, width)
        marks.append(now(device))
        for t in acts:
            mi_binned(t, y, n_bins=N_BINS)
        marks.append(now(device))
        for t in acts:
            mi_kde(t, y, noise_var=NOISE_VAR)
        marks.append(now(device))
        cka_matrix([*acts, labels])  # (6, 6)
        for t, t0 in zip(acts, initial, strict=True):
            cka(t, t0)
        marks.append(now(device))
        seconds = np.diff(marks).tolist()
        return dict(zip(EPOCH_PARTS, [*seconds, sum(seconds)], strict=True))

    epoch()  # warm-up
    runs = [epoch() for _ in range(repeats)]
    return {part: statistics.median(r[part] for r in runs) for part in runs[0]} | {"runs": runs}


def print_tables(rows: list[dict], epoch: dict, n: int) -> None:
    fmt = lambda v: ", ".join(f"{x:.4f}" for x in v)  # noqa: E731
    print("| width | measure | ours s | value(s) | baseline | baseline s | baseline/ours "
          "| baseline value(s) | agree |\n|---:|---|---:|---|---|---:|---:|---|---|")  # fmt: skip
    for r in rows:
        base = (
            f"{r['baseline']} | {r['baseline_s']:.3f} | {r['ratio']:.1f}x | "
            f"{fmt(r['baseline_value'])} | {'yes' if r['agree'] else 'NO'}"
            if "baseline" in r
            else " | ".join(["-"] * 5)
        )
        print(f"| {r['width']} | {r['measure']} | {r['ours_s']:.4f} | {fmt(r['value'])} | {base} |")
    print(f"\n| epoch part (MLP {','.join(map(str, EPOCH_WIDTHS))}, N={n:,}) | median s |")
    print("|---|---:|")
    names = {"forward": "forward (probe_activations)", "binning": "binning (mi_binned)",
             "kde": "KDE (mi_kde upper)", "cka": "CKA (cka_matrix + cka vs initial)",
             "total": "**total per epoch**"}  # fmt: skip
    for part, name in names.items():
        print(f"| {name} | {epoch[part]:.3f} |")


def targets(rows: list[dict], epoch: dict, n: int) -> dict[str, dict]:
    """The two speed targets, each {"text", "passed", "figure"}; passed None if not measured."""
    kde = [r for r in rows if r["measure"] == "mi_kde upper" and r["width"] == KDE_TARGET_WIDTH]
    kde_ratio = kde[0].get("ratio") if kde else None
    return {
        "kde_vs_numpy": {
            "text": f"KDE at least {KDE_TARGET_RATIO:g}x faster than (b) at N={n:,}, width "
            f"{KDE_TARGET_WIDTH} (same value)",
            "passed": None
            if kde_ratio is None
            else kde_ratio >= KDE_TARGET_RATIO and kde[0]["agree"],
            "figure": None if kde_ratio is None else f"{kde_ratio:.1f}x",
        },
        "epoch": {
            "text": f"binning + KDE + linear CKA, 5-hidden-layer MLP, N={n:,} < "
            f"{EPOCH_TARGET_S:g} s/epoch",
            "passed": epoch["total"] < EPOCH_TARGET_S,
            "figure": f"{epoch['total']:.2f} s/epoch",
        },
    }


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    device = resolve_device(args.device)
    x, y, source = load_probe(args.n)  # (N, 784) float32, (N,) int64
    n = len(y)
    print(f"torch {torch.__version__}, numpy {np.__version__}, device {describe_device(device)}, "
          f"torch threads {torch.get_num_threads()} (default)")  # fmt: skip
    print(f"probe set: {source}, N={n:,}, {args.repeats} timed runs after a warm-up")
    load = [os.getloadavg()[0]]  # other processes on the machine disturb the timings
    print(f"1-min load average at start {load[0]:.2f} (on {os.cpu_count()} CPUs)\n")
    rows = [row for width in args.widths for row in bench_width(x, y, width, device, args)]
    epoch = bench_epoch(x, y, device, args.repeats)
    print_tables(rows, epoch, n)
    goals = targets(rows, epoch, n)
    load.append(os.getloadavg()[0])
    print(f"\n1-min load average at end {load[1]:.2f}")
    print("\nTargets:")
    for goal in goals.values():
        verdict = {True: "PASS", False: "FAIL", None: "NOT MEASURED"}[goal["passed"]]
        print(f"- {goal['text']}: {verdict}" + (f" ({goal['figure']})" if goal["figure"] else ""))
    if args.json:
        result = {"device": describe_device(device), "torch": torch.__version__,
                  "numpy": np.__version__, "threads": torch.get_num_threads(), "n": n,
                  "data": source, "repeats": args.repeats, "load_average": load, "rows": rows,
                  "epoch": {"widths": EPOCH_WIDTHS, **epoch}, "targets": goals}  # fmt: skip
        Path(args.json).write_text(json.dumps(result, indent=2))
    disagree = [r for r in rows if r.get("agree") is False]
    if disagree:
        raise SystemExit(f"values disagree with the baseline: {disagree}")


if __name__ == "__main__":
    main()
