"""Does the last hidden layer compress? Peak, its epoch and final I(X;T) over seeds, with 95% CIs.

Reads runs of ``mlp`` on ``ib12`` logged with ``--replicates K`` (one run per activation) from
an MLflow store: each run's per-replicate table ``replicates/metrics.csv``. For every seed and
estimator it takes the last hidden layer's I(X;T) series over epochs 1..E and reports, over the
seeds, the mean and 95% t interval of

- the peak value and the epoch where it is reached,
- the final value (last epoch),
- the compression, peak minus final (> 0 with an interval clear of 0: the layer compresses).

The runs are made with (the closing note of issue 15 quotes both commands)::

    for act in tanh relu; do
      infoflow run mlp --tracking-uri sqlite:///ib12.db --experiment ib12-classic \\
        --dataset ib12 --epochs 400 --batch-size 256 --probe-size 4096 --replicates 20 \\
        --mi binning,adaptive-binning --set binning.bin_width=0.07 \\
        --set widths=10,7,5,4,3 --set activation=$act --set lr=3e-3
    done
    .venv/bin/python benchmarks/ib12_compression.py --tracking-uri sqlite:///ib12.db
"""

from __future__ import annotations

import argparse
import io
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from mlflow.tracking import MlflowClient
from scipy import stats

from infoflow_track.replicates import TABLE_ARTIFACT


def interval(values: np.ndarray) -> str:
    """``mean [low, high]`` of the 95% t interval of the mean."""
    mean = values.mean()
    half = stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values))
    return f"{mean:7.3f} [{mean - half:7.3f}, {mean + half:7.3f}]"


def summary(table: pd.DataFrame, key: str) -> dict[str, np.ndarray]:
    """Per seed: peak, epoch of the peak, final value and peak - final of column ``key``."""
    series = table[table["epoch"] > 0].pivot(index="epoch", columns="seed", values=key)
    peak, final = series.max().to_numpy(), series.iloc[-1].to_numpy()
    epoch = series.idxmax().to_numpy().astype(float)
    return {"peak": peak, "peak epoch": epoch, "final": final, "peak - final": peak - final}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--tracking-uri", required=True)
    p.add_argument("--experiment", default="ib12-classic")
    p.add_argument("--layer", default="hidden5", help="the layer (hidden5: the last of 5)")
    args = p.parse_args()
    client = MlflowClient(args.tracking_uri)
    experiment = client.get_experiment_by_name(args.experiment)
    runs = client.search_runs([experiment.experiment_id], "attributes.status = 'FINISHED'")
    for run in sorted(runs, key=lambda r: r.data.params["activation"], reverse=True):
        params = run.data.params
        with tempfile.TemporaryDirectory() as tmp:
            text = Path(client.download_artifacts(run.info.run_id, TABLE_ARTIFACT, tmp)).read_text()
        table = pd.read_csv(io.StringIO(text))
        table = table[table["kept"]]
        seeds, epochs = table["seed"].nunique(), table["epoch"].max()
        print(f"\n{params['activation']}: {seeds} seeds, {epochs} epochs, layer {args.layer} "
              f"(run {run.info.run_id}); mean [95% interval] over seeds")  # fmt: skip
        estimators = params["mi"].split(",")
        for i, name in enumerate(estimators):
            key = f"mi_xt/{args.layer}" if i == 0 else f"mi_xt.{name}/{args.layer}"
            options = {k: v for k, v in params.items() if k.startswith(f"mi.{name}.")}
            print(f"  {name} {options}")
            for what, values in summary(table, key).items():
                share = ""
                if what == "peak - final":
                    share = (
                        f"   seeds with peak - final > 0.05 bits: {(values > 0.05).sum()}/{seeds}"
                    )
                print(f"    {what:<13} {interval(values)}{share}")


if __name__ == "__main__":
    main()
