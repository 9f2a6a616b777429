"""The per-epoch probe: information-flow measures of every probed layer on the probe set.

:class:`LayerProbe` is an epoch-end hook of the engine. At every epoch end it runs the model
over the fixed probe set (eval mode, no gradients) and measures each layer T (N, ...) with
each of the run's estimators against the inputs and the labels — ``mi_xt/<layer>``,
``mi_ty/<layer>`` and their ceilings under the primary estimator, ``mi_xt.<estimator>/<layer>``
under the others (see :mod:`infoflow_track.names`) — plus ``cka_label/<layer>`` (linear CKA
with the one-hot labels) and ``cka_init/<layer>`` (with the layer at initialisation). All of
an epoch's values reach the host in one transfer. The layer x layer CKA matrix goes to an
artifact ``cka/epoch_NNNN.json`` each epoch; :meth:`LayerProbe.finish` draws the information
planes with their ceilings and the last CKA matrix, and :meth:`LayerProbe.saturated` names
the layers whose I(X;T) never left its ceiling.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Protocol

import torch
import torch.nn.functional as F

from infoflow_track.data import Dataset
from infoflow_track.estimators import Estimator
from infoflow_track.measures import cka, cka_matrix, linear_features
from infoflow_track.names import MI_QUANTITIES, layer_key

_FORWARD_CHUNK = 8192  # probe samples per forward pass
#: Name of the one-hot labels beside the layers in CKA matrices (no layer can be named so).
LABELS = "labels (one-hot)"
#: A layer whose I(X;T) stays at or above this share of its ceiling at every epoch is flagged.
SATURATION = 0.99


class ArtifactSink(Protocol):
    """Where the probe's artifacts go; the tracking run logger satisfies it."""

    def log_dict(self, data: dict[str, Any], artifact_file: str) -> None: ...

    def log_figure(self, figure: Any, artifact_file: str) -> None: ...


@torch.no_grad()
def probe_activations(model: torch.nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every probed layer of ``model`` on x (N, ...), in eval mode: {name: (N, ...) float32},
    each in the shape the model gives it (conv maps stay (N, C, H, W))."""
    was_training = model.training
    model.eval()
    parts: dict[str, list[torch.Tensor]] = {}
    try:
        for start in range(0, x.shape[0], _FORWARD_CHUNK):
            _, layers = model.forward_intermediates(x[start : start + _FORWARD_CHUNK])
            for name, act in layers.items():
                parts.setdefault(name, []).append(act.float())
    finally:
        model.train(was_training)
    return {name: torch.cat(chunks) for name, chunks in parts.items()}


def estimator_keys(estimator: Estimator, primary: bool, layer: str) -> list[str]:
    """The metric keys one estimator writes for one layer, in the order of its values:
    I(X;T), I(T;Y), their two ceilings, then each extra's I(X;T) and I(T;Y)."""
    own = None if primary else estimator.name
    keys = [layer_key(q, layer, estimator=own) for q in MI_QUANTITIES]
    for extra in estimator.extras:
        keys += [layer_key(q, layer, estimator=own, extra=extra) for q in ("mi_xt", "mi_ty")]
    return keys


class LayerProbe:
    """Epoch-end hook measuring MI and CKA of every probed layer; see the module docstring.

    Built before training: it keeps the layers' activations at initialisation, prepares the
    estimators on the probe set and asks each whether its options suit each layer.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        data: Dataset,
        estimators: Sequence[Estimator],
        artifacts: ArtifactSink | None = None,
    ) -> None:
        if not estimators:
            raise ValueError("a probe needs at least one estimator")
        self.x, self.y = data.x_probe, data.y_probe
        self.estimators = tuple(estimators)
        self.artifacts = artifacts
        self.labels = F.one_hot(self.y, data.num_classes).float()  # (N, C)
        for estimator in self.estimators:
            estimator.prepare(self.x, self.y)
        initial = probe_activations(model, self.x)
        self.layers = list(initial)
        # the layers at initialisation, kept compact: at most N columns each, same linear CKA
        self.initial = {name: linear_features(t) for name, t in initial.items()}
        self.warnings = [w for e in self.estimators for name, t in initial.items()
                         if (w := e.scale_warning(name, t))]  # fmt: skip
        self.mi_keys = [key for i, e in enumerate(self.estimators) for name in self.layers
                        for key in estimator_keys(e, i == 0, name)]  # fmt: skip
        self.history: dict[str, list[float]] = {key: [] for key in self.mi_keys}
        self.steps: list[int] = []
        self.last_cka: list[list[float]] | None = None  # layers + labels, last epoch

    def measure(self, acts: dict[str, torch.Tensor]) -> list[Any]:
        """Every estimator's values of every layer, in the order of ``mi_keys`` (tensors on
        the device, or floats)."""
        values: list[Any] = []
        for estimator in self.estimators:
            for t in acts.values():
                found = estimator.measure(t, self.y, self.x)
                values += [found.i_xt, found.i_ty, found.ceiling_xt, found.ceiling_ty]
                for extra in estimator.extras:
                    values += list(found.extra[extra])
        return values

    def __call__(self, model: torch.nn.Module, ctx: Any) -> dict[str, float]:
        acts = probe_activations(model, self.x)
        if list(acts) != self.layers:
            raise RuntimeError(f"probed layers changed from {self.layers} to {list(acts)}")
        n = len(self.layers)
        mi_values = self.measure(acts)
        feats = {name: linear_features(t) for name, t in acts.items()}  # once: centred, QR if wide
        grid = cka_matrix([*feats.values(), self.labels])  # (L + 1, L + 1), labels last
        init = torch.stack([cka(f, self.initial[name]) for name, f in feats.items()])
        device_values = [v.reshape(()).double() for v in mi_values if torch.is_tensor(v)]
        stacked = torch.stack(device_values) if device_values else grid.new_zeros(0).double()
        values = torch.cat([stacked, grid.flatten().double(), init.double()]).cpu().tolist()
        on_device = iter(values[: len(device_values)])
        mi = [next(on_device) if torch.is_tensor(v) else float(v) for v in mi_values]
        grid_values, init_values = values[len(device_values) : -n], values[-n:]
        rows = [grid_values[i * (n + 1) : (i + 1) * (n + 1)] for i in range(n + 1)]
        metrics = dict(zip(self.mi_keys, mi, strict=True))
        for key, value in metrics.items():
            self.history[key].append(value)
        for i, name in enumerate(self.layers):
            metrics[layer_key("cka_label", name)] = rows[i][n]
            metrics[layer_key("cka_init", name)] = init_values[i]
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

    def plane(self, index: int) -> dict[str, dict[str, list[float]]]:
        """Estimator ``index``'s per-layer series: {"mi_xt" | "mi_ty" | "ceiling_xt" |
        "ceiling_ty": {layer: values per measured epoch}}."""
        estimator = self.estimators[index]
        out: dict[str, dict[str, list[float]]] = {q: {} for q in MI_QUANTITIES}
        for layer in self.layers:
            keys = estimator_keys(estimator, index == 0, layer)
            for quantity, key in zip(out, keys, strict=False):
                out[quantity][layer] = self.history[key]
        return out

    def saturated(self) -> dict[str, list[str]]:
        """{estimator: layers} whose I(X;T) stayed within 1% of its ceiling at every measured
        epoch (estimators with none are left out)."""
        out: dict[str, list[str]] = {}
        for i, estimator in enumerate(self.estimators):
            series = self.plane(i)
            layers = [
                layer for layer in self.layers
                if _at_ceiling(series["mi_xt"][layer], series["ceiling_xt"][layer])
            ]  # fmt: skip
            if layers:
                out[estimator.name] = layers
        return out

    def saturation_warning(self) -> str | None:
        """One line naming the saturated layers of each estimator and what to change."""
        found = self.saturated()
        if not found:
            return None
        advice = {e.name: e.saturation_advice for e in self.estimators}
        parts = [f"{', '.join(layers)} under {name} ({advice[name]})"
                 for name, layers in found.items()]  # fmt: skip
        return "I(X;T) stayed within 1% of its ceiling at every epoch for " + "; ".join(parts)

    def finish(self) -> None:
        """Log the information planes and the last CKA heatmap (PNG) if any epoch was
        measured."""
        if self.artifacts is None or not self.steps:
            return
        from infoflow_track.plots import cka_heatmap, information_plane

        panels = {e.describe(): self.plane(i) for i, e in enumerate(self.estimators)}
        self.artifacts.log_figure(information_plane(self.steps, panels),
                                  "plots/information_plane.png")  # fmt: skip
        heatmap = cka_heatmap(
            self.last_cka, [*self.layers, LABELS], title=f"linear CKA, epoch {self.steps[-1]}"
        )
        self.artifacts.log_figure(heatmap, "plots/cka_heatmap.png")


def _at_ceiling(values: Sequence[float], ceilings: Sequence[float]) -> bool:
    pairs = [(v, c) for v, c in zip(values, ceilings, strict=True) if math.isfinite(v)]
    return bool(pairs) and all(c > 0 and v >= SATURATION * c for v, c in pairs)


def cka_artifact(step: int) -> str:
    """Artifact path of the CKA matrix of epoch ``step``."""
    return f"cka/epoch_{step:04d}.json"
