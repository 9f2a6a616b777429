"""The per-epoch probe: information-flow measures of every probed layer on the probe set.

:class:`LayerProbe` is an epoch-end hook of the engine. At every epoch end it runs the model
over the fixed probe set (eval mode, no gradients) and measures each layer T against the
input and the labels: ``mi_xt/<layer>``, ``mi_ty/<layer>`` (bits, with the run's estimator),
``cka_label/<layer>`` (linear CKA with the one-hot labels) and ``cka_init/<layer>`` (linear
CKA with the same layer at initialisation). The layer x layer CKA matrix goes to an artifact
``cka/epoch_NNNN.json`` each epoch; :meth:`LayerProbe.finish` draws the information plane and
the last CKA matrix.
"""

from __future__ import annotations

import math
from typing import Any, Protocol

import torch
import torch.nn.functional as F

from infoflow_track.data import Dataset
from infoflow_track.measures import cka, cka_matrix, linear_features, mi_binned, mi_kde
from infoflow_track.settings import RunSettings

_FORWARD_CHUNK = 8192  # probe samples per forward pass
#: Name of the one-hot labels beside the layers in CKA matrices (no layer can be named so).
LABELS = "labels (one-hot)"
#: Every probed layer gets one metric ``<measure>/<layer>`` of each of these per epoch.
LAYER_MEASURES = ("mi_xt", "mi_ty", "cka_label", "cka_init")


class ArtifactSink(Protocol):
    """Where the probe's artifacts go; the tracking run logger satisfies it."""

    def log_dict(self, data: dict[str, Any], artifact_file: str) -> None: ...

    def log_figure(self, figure: Any, artifact_file: str) -> None: ...


@torch.no_grad()
def probe_activations(model: torch.nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every probed layer of ``model`` on x (N, ...), in eval mode: {name: (N, D) float32}."""
    was_training = model.training
    model.eval()
    parts: dict[str, list[torch.Tensor]] = {}
    try:
        for start in range(0, x.shape[0], _FORWARD_CHUNK):
            _, layers = model.forward_intermediates(x[start : start + _FORWARD_CHUNK])
            for name, act in layers.items():
                parts.setdefault(name, []).append(act.reshape(act.shape[0], -1).float())
    finally:
        model.train(was_training)
    return {name: torch.cat(chunks) for name, chunks in parts.items()}


class LayerProbe:
    """Epoch-end hook measuring MI and CKA of every probed layer; see the module docstring.

    Built before training: it keeps the layers' activations at initialisation.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        data: Dataset,
        settings: RunSettings,
        artifacts: ArtifactSink | None = None,
    ) -> None:
        self.x, self.y = data.x_probe, data.y_probe
        self.settings = settings
        self.artifacts = artifacts
        self.labels = F.one_hot(self.y, data.num_classes).float()  # (N, C)
        initial = probe_activations(model, self.x)
        self.layers = list(initial)
        # the layers at initialisation, kept compact: at most N columns each, same linear CKA
        self.initial = {name: linear_features(t) for name, t in initial.items()}
        self.steps: list[int] = []
        self.mi_xt: dict[str, list[float]] = {name: [] for name in self.layers}
        self.mi_ty: dict[str, list[float]] = {name: [] for name in self.layers}
        self.last_cka: list[list[float]] | None = None  # layers + labels, last epoch

    def mutual_information(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(I(X;T), I(T;Y)) in bits of one layer (N, D) with the run's estimator."""
        if self.settings.mi == "kde":
            return mi_kde(t, self.y, noise_var=self.settings.noise_var)
        return mi_binned(t, self.y, n_bins=self.settings.bins)

    def __call__(self, model: torch.nn.Module, ctx: Any) -> dict[str, float]:
        acts = probe_activations(model, self.x)
        if list(acts) != self.layers:
            raise RuntimeError(f"probed layers changed from {self.layers} to {list(acts)}")
        n = len(self.layers)
        mi = torch.stack([torch.stack(self.mutual_information(t)) for t in acts.values()])
        feats = {name: linear_features(t) for name, t in acts.items()}  # once: centred, QR if wide
        grid = cka_matrix([*feats.values(), self.labels])  # (L + 1, L + 1), labels last
        init = torch.stack([cka(f, self.initial[name]) for name, f in feats.items()])
        values = torch.cat([mi.flatten(), grid.flatten(), init]).double().cpu().tolist()
        mi_values, grid_values, init_values = values[: 2 * n], values[2 * n : -n], values[-n:]
        rows = [grid_values[i * (n + 1) : (i + 1) * (n + 1)] for i in range(n + 1)]
        metrics: dict[str, float] = {}
        for i, name in enumerate(self.layers):
            i_xt, i_ty = mi_values[2 * i], mi_values[2 * i + 1]
            self.mi_xt[name].append(i_xt)
            self.mi_ty[name].append(i_ty)
            metrics[f"mi_xt/{name}"] = i_xt
            metrics[f"mi_ty/{name}"] = i_ty
            metrics[f"cka_label/{name}"] = rows[i][n]
            metrics[f"cka_init/{name}"] = init_values[i]
        self.steps.append(ctx.step)
        self.last_cka = rows
        if self.artifacts is not None:
            self.artifacts.log_dict(self._cka_record(ctx.step, rows), cka_artifact(ctx.step))
        return metrics

    def _cka_record(self, step: int, rows: list[list[float]]) -> dict[str, Any]:
        """The epoch's CKA matrix as JSON-safe data (NaN, for a constant layer, as null)."""
        return {
            "epoch": step,
            "kernel": "linear",
            "names": [*self.layers, LABELS],
            "matrix": [[v if math.isfinite(v) else None for v in row] for row in rows],
        }

    def finish(self) -> None:
        """Log the information plane and the last CKA heatmap (PNG) if any epoch was measured."""
        if self.artifacts is None or not self.steps:
            return
        from infoflow_track.plots import cka_heatmap, information_plane

        estimator = self.settings.mi
        detail = (
            f"{self.settings.bins} bins" if estimator == "binning"
            else f"noise variance {self.settings.noise_var:g}"
        )  # fmt: skip
        plane = information_plane(
            self.steps, self.mi_xt, self.mi_ty, title=f"information plane ({estimator}, {detail})"
        )
        self.artifacts.log_figure(plane, "plots/information_plane.png")
        heatmap = cka_heatmap(
            self.last_cka, [*self.layers, LABELS], title=f"linear CKA, epoch {self.steps[-1]}"
        )
        self.artifacts.log_figure(heatmap, "plots/cka_heatmap.png")


def cka_artifact(step: int) -> str:
    """Artifact path of the CKA matrix of epoch ``step``."""
    return f"cka/epoch_{step:04d}.json"
