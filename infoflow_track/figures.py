"""A run's figures, drawn from the records it logged: when the run ends, or later.

A run logs what its figures are drawn from as artifacts — ``probe/planes.json`` (each
estimator's per-layer I(X;T), I(T;Y), ceilings and 95% bands over replicates), the CKA matrices
``cka/matrices.json`` and, with replicates, ``replicates/metrics.csv`` — so the PNGs can be
drawn at the run's end (``infoflow run``) or only for the runs someone will look at: a study
draws them for its best trials once its trials are done (see :func:`draw_logged_figures`).
"""

from __future__ import annotations

import csv
import io
import json
import math
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from infoflow_track.replicates import TABLE_ARTIFACT, ci95_half_width

#: Every measured epoch's information-plane series, written by the probe at the run's end.
PLANES_ARTIFACT = "probe/planes.json"
#: Every epoch's layer x layer CKA matrix, one artifact per run written at its end.
CKA_ARTIFACT = "cka/matrices.json"
PLANE_FIGURE = "plots/information_plane.png"
HEATMAP_FIGURE = "plots/cka_heatmap.png"
ACCURACY_FIGURE = "plots/accuracy.png"
ACCURACY_KEYS = ("acc/train", "acc/test")


def draw_probe_figures(planes: Mapping[str, Any], cka: Mapping[str, Any], sink: Any) -> None:
    """Log the information planes (with bands over replicates) and the last CKA heatmap
    drawn from the probe's records ``planes`` and ``cka`` (as logged) on ``sink``."""
    from infoflow_track.plots import cka_heatmap, information_plane

    panels = dict(zip(planes["estimators"], map(_floats, planes["planes"]), strict=True))
    bands = None
    if planes["replicates"] > 1:
        bands = dict(zip(planes["estimators"], map(_floats, planes["bands"]), strict=True))
    sink.log_figure(information_plane(planes["steps"], panels, bands), PLANE_FIGURE)
    title = f"linear CKA, epoch {cka['epochs'][-1]}"
    if cka["replicates"] > 1:
        title += f", mean of {cka['replicates']} replicates"
    sink.log_figure(cka_heatmap(_floats(cka["matrices"][-1]), cka["names"], title=title),
                    HEATMAP_FIGURE)  # fmt: skip


def draw_accuracy_figure(table_csv: str, sink: Any) -> None:
    """Log accuracy curves with 95% bands over the kept replicates of a replicate table."""
    from infoflow_track.plots import band_curves

    by_step: dict[int, dict[str, list[float]]] = {}
    seeds = set()
    for row in csv.DictReader(io.StringIO(table_csv)):
        seeds.add(row["seed"])
        if row["kept"] != "true":
            continue
        step = by_step.setdefault(int(row["epoch"]), {k: [] for k in ACCURACY_KEYS})
        for key in ACCURACY_KEYS:
            if row.get(key):
                step[key].append(float(row[key]))
    steps = sorted(by_step)
    series = {key: (steps, [math.fsum(by_step[s][key]) / len(by_step[s][key]) for s in steps],
                    [ci95_half_width(by_step[s][key]) for s in steps])
              for key in ACCURACY_KEYS}  # fmt: skip
    title = f"accuracy, mean and 95% interval of {len(seeds)} replicates"
    sink.log_figure(band_curves(series, ylabel="accuracy", title=title), ACCURACY_FIGURE)


def draw_logged_figures(tracker: Any, run_id: str) -> bool:
    """Draw a finished run's figures from its logged records and log them on it, unless it
    has them already or lacks the records (a run that failed early); True if drawn."""
    client = tracker.client
    present = {a.path for a in client.list_artifacts(run_id, "plots")}
    names = {
        a.path for d in ("probe", "cka", "replicates") for a in client.list_artifacts(run_id, d)
    }
    if PLANE_FIGURE in present or not {PLANES_ARTIFACT, CKA_ARTIFACT} <= names:
        return False
    sink = tracker.run(run_id)
    with tempfile.TemporaryDirectory() as tmp:
        read = {name: Path(client.download_artifacts(run_id, name, tmp)).read_text()
                for name in names & {PLANES_ARTIFACT, CKA_ARTIFACT, TABLE_ARTIFACT}}  # fmt: skip
    draw_probe_figures(json.loads(read[PLANES_ARTIFACT]), json.loads(read[CKA_ARTIFACT]), sink)
    if TABLE_ARTIFACT in read:
        draw_accuracy_figure(read[TABLE_ARTIFACT], sink)
    return True


def json_safe(value: Any) -> Any:
    """Nested lists and dicts of floats with NaN and infinities as None (valid JSON)."""
    if isinstance(value, Mapping):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _floats(value: Any) -> Any:
    """:func:`json_safe` undone: None back to NaN in nested lists and dicts."""
    if isinstance(value, Mapping):
        return {k: _floats(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_floats(v) for v in value]
    return math.nan if value is None else value
