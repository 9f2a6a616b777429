"""Training throughput of the ``mlp`` plugin: infoflow's engine against the old notebook loader.

Both paths train the same MLP (built by the plugin, default widths 256,128,64, Adam lr 1e-3) on
the same training split of ``synthetic:size=N,shape=1x28x28,classes=10`` (MNIST-shaped), N
chosen so that the training split holds ``--train-size`` samples (default 60,000, as MNIST's
training set) after infoflow's 80/20 split, in one process:

- **infoflow, train()**: ``plan_run`` + ``engine.train`` without an MLflow sink. An epoch is
  timed from one listener call to the next, so it includes the per-epoch evaluation on train
  and test that every run pays.
- **infoflow, train only**: the engine's own ``fit_backprop`` loop over ``RunContext.batches``
  (a seeded ``randperm`` indexing tensors already on the device), with an epoch end that only
  reads the clock. This is the pure training cost of the infoflow path.
- **evaluate**: one ``engine.evaluate`` on train plus one on test, the evaluation part of an
  infoflow epoch.
- **notebook baseline, train only**: the same data as uint8 28x28 images in a
  ``torch.utils.data.Dataset`` whose ``__getitem__`` does what ``torchvision.datasets.MNIST``
  does (``PIL.Image.fromarray`` then ``Compose([ToTensor(), Normalize((0.1307,), (0.3081,))])``),
  batched by ``DataLoader(shuffle=True, num_workers=W)`` and moved to the device per batch,
  trained by the same ``fit_backprop`` loop.

The train-only paths are warmed up with a few batches on a throwaway copy of the model before
they are timed; ``train()`` runs after them in a warm process.
Times are wall-clock seconds (CUDA is synchronised at each epoch end); the table gives the
median over the timed epochs, and every epoch's time beside it.

Run from the repository root::

    .venv/bin/python benchmarks/train_throughput.py
    .venv/bin/python benchmarks/train_throughput.py --device cuda --epochs 5 --json out.json
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import itertools
import json
import os
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torchvision
from PIL import Image
from torch.utils.data import DataLoader
from torchvision import transforms

from infoflow_track.devices import describe_device
from infoflow_track.engine import build_model, evaluate, train
from infoflow_track.experiment import RunPlan, plan_run
from infoflow_track.plugin import RunContext, fit_backprop
from infoflow_track.settings import RunSettings

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081  # the notebooks' Normalize constants


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (auto)")
    p.add_argument("--epochs", type=int, default=3, help="timed epochs per infoflow path (3)")
    p.add_argument(
        "--baseline-epochs", type=int, default=None, help="timed baseline epochs (= --epochs)"
    )
    p.add_argument("--batch-size", type=int, default=64, help="samples per batch (64)")
    p.add_argument(
        "--train-size", type=int, default=60000, help="training samples per epoch (60000)"
    )
    p.add_argument("--workers", type=int, default=0, help="baseline DataLoader workers (0)")
    p.add_argument("--warmup-batches", type=int, default=20, help="warm-up batches per path (20)")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="torch CPU threads")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON here")
    return p.parse_args(argv)


class EpochClock:
    """Records the wall-clock seconds of each epoch: from ``start()`` or the previous tick."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.seconds: list[float] = []  # one entry per epoch, in seconds
        self._last = 0.0

    def _now(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def start(self) -> None:
        self._last = self._now()

    def tick(self, *_: object) -> dict[str, float]:
        """Close an epoch; usable as a RunContext epoch end or as an engine listener."""
        now = self._now()
        self.seconds.append(now - self._last)
        self._last = now
        return {}


@dataclass
class LoaderContext(RunContext):
    """A RunContext whose batches come from a DataLoader, moved to the device batch by batch."""

    loader: DataLoader | None = None

    def batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for x, y in self.loader:
            yield x.to(self.device), y.to(self.device)


class NotebookMNIST(torch.utils.data.Dataset):
    """uint8 images (N, 28, 28) and labels (N,), served like ``torchvision.datasets.MNIST``:
    each item becomes a PIL image, then goes through ``transform``."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform) -> None:
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        img = Image.fromarray(self.images[index])  # mode "L", as MNIST does
        return self.transform(img), int(self.labels[index])


def notebook_loader(plan: RunPlan, batch_size: int, workers: int) -> DataLoader:
    """The baseline's DataLoader over infoflow's training split, quantised to uint8 grey levels."""
    x = plan.data.x_train.cpu()  # (N, 1, 28, 28) float32
    grey = ((x - x.min()) / (x.max() - x.min()) * 255).round().to(torch.uint8)
    transform = transforms.Compose(
        [transforms.ToTensor(), transforms.Normalize((MNIST_MEAN,), (MNIST_STD,))]
    )
    dataset = NotebookMNIST(grey[:, 0].numpy(), plan.data.y_train.cpu().numpy(), transform)
    return DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers)


def make_context(
    plan: RunPlan, epochs: int, clock: EpochClock, loader: DataLoader | None = None
) -> RunContext:
    """A run context for ``epochs`` epochs whose epoch end only ticks ``clock`` (no evaluation)."""
    settings = dataclasses.replace(plan.settings, epochs=epochs)
    generator = torch.Generator(device=plan.device).manual_seed(settings.seed)
    args = (plan.config, plan.data, settings, plan.device, generator, clock.tick)
    return RunContext(*args) if loader is None else LoaderContext(*args, loader=loader)


def fresh_model(plan: RunPlan) -> torch.nn.Module:
    """The plugin's model, seeded as ``engine.train`` seeds it, on the run device."""
    return build_model(plan.plugin, plan.config, plan.data, plan.settings.seed)


def warm_up(plan: RunPlan, ctx: RunContext, model: torch.nn.Module, batches: int) -> None:
    """Train a throwaway copy of ``model`` on the first ``batches`` batches of ``ctx``."""
    model = copy.deepcopy(model)
    optimizer = plan.plugin.configure_optimizer(model, plan.config)
    for x, y in itertools.islice(ctx.batches(), batches):
        loss = plan.plugin.training_step(model, x, y, plan.config)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


def time_train_only(
    plan: RunPlan, epochs: int, warmup: int, loader: DataLoader | None = None
) -> list[float]:
    """Seconds per epoch of the engine's ``fit_backprop`` loop, without evaluation.

    Batches come from ``RunContext.batches`` (infoflow) or from ``loader`` (baseline).
    """
    clock = EpochClock(plan.device)
    model = fresh_model(plan)
    warm_up(plan, make_context(plan, 1, clock, loader), model, warmup)
    ctx = make_context(plan, epochs, clock, loader)
    clock.start()
    fit_backprop(plan.plugin, model, ctx)
    return clock.seconds


def time_engine_train(plan: RunPlan, epochs: int) -> list[float]:
    """Seconds per epoch of ``engine.train`` (training plus per-epoch evaluation), no sink."""
    clock = EpochClock(plan.device)
    settings = dataclasses.replace(plan.settings, epochs=epochs)
    model = fresh_model(plan)
    clock.start()
    train(plan.plugin, model, plan.config, plan.data, settings, listeners=[clock.tick])
    return clock.seconds


def time_evaluation(plan: RunPlan, repeats: int = 3) -> list[float]:
    """Seconds of one epoch's evaluation (``evaluate`` on train, then on test), per repeat."""
    model = fresh_model(plan)
    clock = EpochClock(plan.device)
    evaluate(model, plan.data.x_test, plan.data.y_test)  # warm-up
    clock.start()
    for _ in range(repeats):
        evaluate(model, plan.data.x_train, plan.data.y_train)
        evaluate(model, plan.data.x_test, plan.data.y_test)
        clock.tick()
    return clock.seconds


def summarise(name: str, seconds: list[float], samples: int) -> dict:
    """A result row: median seconds per epoch (or per call), robust to one disturbed epoch on a
    shared machine, and ``samples`` processed per second at that median."""
    median = statistics.median(seconds)
    return {
        "path": name,
        "epochs": len(seconds),
        "seconds": [round(s, 4) for s in seconds],
        "seconds_per_epoch": median,
        "samples_per_s": samples / median,
    }


def print_table(rows: list[dict]) -> None:
    print(f"{'path':<42} {'epochs':>6} {'median s/epoch':>14} {'samples/s':>11}  per-epoch seconds")
    for r in rows:
        per = ", ".join(f"{s:.2f}" for s in r["seconds"])
        print(
            f"{r['path']:<42} {r['epochs']:>6} {r['seconds_per_epoch']:>14.3f} "
            f"{r['samples_per_s']:>11,.0f}  [{per}]"
        )


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    settings = RunSettings(
        dataset=f"synthetic:size={round(args.train_size / (1 - RunSettings.test_fraction))},"
        "shape=1x28x28,classes=10",
        epochs=args.epochs,
        batch_size=args.batch_size,
        device=args.device,
    )
    plan = plan_run("mlp", {}, settings)
    n_train = plan.data.y_train.shape[0]
    baseline_epochs = args.baseline_epochs or args.epochs
    print(f"torch {torch.__version__}, torchvision {torchvision.__version__}")
    print(f"device {describe_device(plan.device)}, torch threads {torch.get_num_threads()}")
    print(f"cpu_count {os.cpu_count()}, DataLoader workers {args.workers}")
    print(f"dataset {settings.dataset}: {n_train} training samples, batch size {args.batch_size}")
    print(f"model {plan.config.widths} {plan.config.activation}, Adam lr {plan.config.lr}\n")

    loader = notebook_loader(plan, args.batch_size, args.workers)
    train_only = summarise(
        "infoflow engine loop, train only",
        time_train_only(plan, args.epochs, args.warmup_batches),
        n_train,
    )
    with_eval = summarise(
        "infoflow train(), train + per-epoch eval", time_engine_train(plan, args.epochs), n_train
    )
    n_all = n_train + plan.data.y_test.shape[0]
    evaluation = summarise("evaluate(train) + evaluate(test)", time_evaluation(plan), n_all)
    baseline = summarise(
        "notebook PIL+DataLoader, train only",
        time_train_only(plan, baseline_epochs, args.warmup_batches, loader),
        n_train,
    )
    rows = [train_only, with_eval, evaluation, baseline]
    print_table(rows)
    ratio = baseline["seconds_per_epoch"] / train_only["seconds_per_epoch"]
    ratio_eval = baseline["seconds_per_epoch"] / with_eval["seconds_per_epoch"]
    print(f"\nbaseline / infoflow (train only):       {ratio:.2f}x")
    print(f"baseline / infoflow train() (with eval): {ratio_eval:.2f}x")
    print("(evaluate row: seconds per call; its samples/s counts train + test samples)")

    if args.json:
        env = {
            "torch": torch.__version__,
            "torchvision": torchvision.__version__,
            "device": describe_device(plan.device),
            "threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(),
            "workers": args.workers,
            "batch_size": args.batch_size,
            "train_samples": n_train,
        }
        result = {
            "env": env,
            "rows": rows,
            "ratio_train_only": ratio,
            "ratio_with_eval": ratio_eval,
        }
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
