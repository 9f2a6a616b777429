"""K replicates trained as one packed ensemble against K runs one after another.

The network is the information-plane classic: ``mlp`` with widths 10-7-5-4-3 and tanh on
``ib12`` (Adam, lr 3e-3, batch 256), every epoch evaluated on train and test and probed on all
4096 inputs with fixed-width binning (bin width 0.07) and linear CKA, as a run does.

- **sequential**: K single runs, seeds 0..K-1, each its own model, probe and ``engine.train``
  (what K ``infoflow run --seed k`` cost without process start and MLflow);
- **packed**: ``replicate_models`` packs the K models (seeds 0..K-1) into one
  ``PackedEnsemble`` (stacked parameters; the MLP's own ``forward_members`` for the loss,
  evaluation and probe; one fused optimizer step for all K), probed and evaluated for all K
  at once by the same ``engine.train``.

Both arms run in this process on one device, after a warm-up of both at K = 2 (so that each
has met its code paths once: at K = 1 nothing is packed, and packing's first use in a process
costs about 1.5 s of one-time set-up on the CPU, as a single run's first does); each time is
wall-clock seconds for all K replicates, model building included (data loading, shared, is
not). The table's last column checks that the arms trained the same networks: the largest
difference of a replicate's final test accuracy between them (0 up to float rounding).

Run from the repository root::

    .venv/bin/python benchmarks/packing.py
    .venv/bin/python benchmarks/packing.py --device cuda --ks 1,8,32,128 --json out.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time

import torch

from infoflow_track.devices import describe_device
from infoflow_track.engine import build_model, train
from infoflow_track.experiment import RunPlan, plan_run, replicate_models
from infoflow_track.probe import LayerProbe
from infoflow_track.replicates import seeds_of
from infoflow_track.settings import RunSettings

NETWORK = {"widths": (10, 7, 5, 4, 3), "activation": "tanh", "lr": 3e-3}
BINNING = {"binning": {"bin_width": 0.07}}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (cpu)")
    p.add_argument("--ks", default="1,8,32,128", help="replicate counts, comma-separated")
    p.add_argument("--epochs", type=int, default=50, help="epochs per replicate (50)")
    p.add_argument("--batch-size", type=int, default=256, help="samples per batch (256)")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="torch CPU threads")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON here")
    return p.parse_args(argv)


def plan_of(args: argparse.Namespace, k: int, epochs: int) -> RunPlan:
    settings = RunSettings(dataset="ib12", epochs=epochs, batch_size=args.batch_size,
                           probe_size=4096, mi=("binning",), device=args.device,
                           replicates=k, seed=0)  # fmt: skip
    return plan_run("mlp", NETWORK, settings, BINNING)


def sequential(plan: RunPlan) -> list[float]:
    """Train the plan's K seeds one run at a time; each replicate's final test accuracy."""
    final = []
    for seed in seeds_of(plan.settings.seed, plan.settings.replicates):
        model = build_model(plan.plugin, plan.config, plan.data, seed)
        probe = LayerProbe(model, plan.data, plan.estimators.estimators)
        alone = dataclasses.replace(plan.settings, seed=seed, replicates=1)
        result = train(plan.plugin, model, plan.config, plan.data, alone, hooks=[probe])
        final.append(result.history[-1].values["acc/test"][0])
    return final


def packed(plan: RunPlan) -> list[float]:
    """Train the plan's K seeds as one packed ensemble; each replicate's final accuracy."""
    ensemble = replicate_models(plan)
    if isinstance(ensemble, str):
        raise SystemExit(f"the network did not pack: {ensemble}")
    probe = LayerProbe(ensemble, plan.data, plan.estimators.estimators)
    result = train(plan.plugin, ensemble, plan.config, plan.data, plan.settings, hooks=[probe])
    return list(result.history[-1].values["acc/test"])


def timed(arm, plan: RunPlan) -> tuple[float, list[float]]:
    start = time.perf_counter()
    final = arm(plan)
    if plan.device.type == "cuda":
        torch.cuda.synchronize(plan.device)
    return time.perf_counter() - start, final


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    ks = [int(k) for k in args.ks.split(",")]
    warm = plan_of(args, 2, 2)
    timed(sequential, warm), timed(packed, warm)
    print(
        f"device: {describe_device(warm.device)}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads; {args.epochs} epochs, batch {args.batch_size}"
    )
    print(f"{'K':>5} {'sequential s':>13} {'packed s':>9} {'speed-up':>9} "
          f"{'packed ms/replicate-epoch':>26} {'max |acc diff|':>15}")  # fmt: skip
    rows = []
    for k in ks:
        plan = plan_of(args, k, args.epochs)
        seq_s, seq_acc = timed(sequential, plan)
        pack_s, pack_acc = timed(packed, plan)
        diff = max(abs(a - b) for a, b in zip(seq_acc, pack_acc, strict=True))
        row = {"k": k, "sequential_s": seq_s, "packed_s": pack_s, "speedup": seq_s / pack_s,
               "packed_ms_per_replicate_epoch": 1e3 * pack_s / (k * args.epochs),
               "max_final_acc_diff": diff}  # fmt: skip
        rows.append(row)
        print(
            f"{k:>5} {seq_s:>13.2f} {pack_s:>9.2f} {row['speedup']:>8.1f}x "
            f"{row['packed_ms_per_replicate_epoch']:>26.2f} {diff:>15.2g}",
            flush=True,
        )
    if args.json:
        meta = {"device": describe_device(warm.device), "torch": torch.__version__,
                "threads": torch.get_num_threads(), "epochs": args.epochs,
                "batch_size": args.batch_size}  # fmt: skip
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
