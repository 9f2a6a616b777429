"""The per-epoch probe: information-flow measures of every probed layer on the probe set.

:class:`LayerProbe` is an epoch-end hook of the engine. At every epoch end it runs the model
over the fixed probe set (eval mode, no gradients) and measures each layer T (N, ...) with
each of the run's estimators against the inputs and the labels — ``mi_xt/<layer>``,
``mi_ty/<layer>`` and their ceilings under the primary estimator, ``mi_xt.<estimator>/<layer>``
under the others (see :mod:`infoflow_track.names`) — plus ``cka_label/<layer>`` (linear CKA
with the one-hot labels) and ``cka_init/<layer>`` (with the layer at initialisation). All of
an epoch's values reach the host in one transfer. K packed replicates are measured in one
vectorised call per estimator and layer. :meth:`LayerProbe.finish` writes the layer x layer
CKA matrices of every epoch as one artifact ``cka/matrices.json`` and draws the information
planes with their ceilings (and 95% bands over replicates) and the last CKA matrix;
:meth:`LayerProbe.saturated` names the layers whose I(X;T) never left its ceiling.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F

from infoflow_track.data import Dataset
from infoflow_track.ensemble import Members, PackedEnsemble, Single, as_members, member_pass
from infoflow_track.estimators import Estimator
from infoflow_track.figures import CKA_ARTIFACT, PLANES_ARTIFACT, draw_probe_figures, json_safe
from infoflow_track.measures import linear_features
from infoflow_track.measures.similarity import cka_of_hsic, hsic_blocks
from infoflow_track.names import MI_QUANTITIES, layer_key
from infoflow_track.replicates import ci95_half_width

#: Name of the one-hot labels beside the layers in CKA matrices (no layer can be named so).
LABELS = "labels (one-hot)"
#: A layer whose I(X;T) stays at or above this share of its ceiling at every epoch is flagged.
SATURATION = 0.99


class ArtifactSink(Protocol):
    """Where the probe's artifacts go; the tracking run logger satisfies it."""

    def log_dict(self, data: dict[str, Any], artifact_file: str) -> None: ...

    def log_figure(self, figure: Any, artifact_file: str) -> None: ...


def member_activations(members: Members, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every probed layer of each of K members on x (N, ...), in eval mode:
    {name: (K, N, ...) float32}, each layer in the shape the model gives it."""
    return member_pass(members, x)[1]


def probe_activations(model: torch.nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every probed layer of ``model`` on x (N, ...), in eval mode: {name: (N, ...) float32},
    each in the shape the model gives it (conv maps stay (N, C, H, W))."""
    return {name: t[0] for name, t in member_activations(Single(model), x).items()}


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

    Built before training from the model: one module, or K packed replicates (then each
    value is measured per replicate in one vectorised call, ``__call__`` returns K values per
    key, ``history`` holds the means and ``replicate_history`` the replicates' values). It
    keeps the layers' activations at initialisation, prepares the estimators on the probe set
    and asks each whether its options suit each layer.
    """

    def __init__(
        self,
        model: torch.nn.Module | Members,
        data: Dataset,
        estimators: Sequence[Estimator],
        artifacts: ArtifactSink | None = None,
    ) -> None:
        if not estimators:
            raise ValueError("a probe needs at least one estimator")
        self.x, self.y = data.x_probe, data.y_probe
        self.estimators = tuple(estimators)
        self.artifacts = artifacts
        labels = F.one_hot(self.y, data.num_classes).float()  # (N, C)
        for estimator in self.estimators:
            estimator.prepare(self.x, self.y)
        members = as_members(model)
        self.size = members.size
        # (K, N, C), kept features first in memory like packed members' layers (see CKA)
        self.label_features = linear_features(labels).T.contiguous().expand(self.size, -1, -1).mT
        initial = member_activations(members, self.x)
        self.layers = list(initial)
        # the layers at initialisation, kept compact: at most N columns each, same linear CKA
        self.initial = [_features(t) for t in initial.values()]
        self.initial_hsic = torch.stack([hsic_blocks([t])[..., 0, 0] for t in self.initial], -1)
        self.warnings = [w for e in self.estimators for name, t in initial.items()
                         if (w := e.scale_warning(name, t[0]))]  # fmt: skip
        self.mi_keys = [key for i, e in enumerate(self.estimators) for name in self.layers
                        for key in estimator_keys(e, i == 0, name)]  # fmt: skip
        self.history: dict[str, list[float]] = {key: [] for key in self.mi_keys}
        self.replicate_history: dict[str, list[list[float]]] = {k: [] for k in self.mi_keys}
        self.steps: list[int] = []
        self.cka: list[list[list[float]]] = []  # per epoch: layers + labels, replicates' mean

    @classmethod
    def merged(cls, probes: Sequence[LayerProbe], artifacts: ArtifactSink | None) -> LayerProbe:
        """One probe of K replicates from K one-replicate probes of runs trained one by one,
        over the longest run's epochs (NaN where a replicate stopped early, after diverging)."""
        first = max(probes, key=lambda p: len(p.steps))
        merged = copy.copy(first)
        merged.size, merged.artifacts = len(probes), artifacts
        epochs = range(len(first.steps))
        merged.replicate_history = {
            key: [[p.replicate_history[key][i][0] if i < len(p.steps) else math.nan
                   for p in probes] for i in epochs]
            for key in first.mi_keys
        }  # fmt: skip
        merged.history = {key: [_nanmean(row) for row in rows]
                          for key, rows in merged.replicate_history.items()}  # fmt: skip
        with warnings.catch_warnings():  # an epoch where a layer is constant in all: NaN
            warnings.simplefilter("ignore", RuntimeWarning)
            merged.cka = [np.nanmean([p.cka[i] for p in probes if i < len(p.steps)], axis=0)
                          .tolist() for i in epochs]  # fmt: skip
        return merged

    @property
    def last_cka(self) -> list[list[float]] | None:
        return self.cka[-1] if self.cka else None

    def measure(self, acts: dict[str, torch.Tensor]) -> list[Any]:
        """Every estimator's values of every layer of the K members, acts {name: (K, N,
        ...)}, in the order of ``mi_keys``: (K,) tensors on the device, or floats."""
        values: list[Any] = []
        for estimator in self.estimators:
            for t in acts.values():
                found = estimator.measure_replicates(t, self.y, self.x)
                values += [found.i_xt, found.i_ty, found.ceiling_xt, found.ceiling_ty]
                for extra in estimator.extras:
                    values += list(found.extra[extra])
        return values

    def __call__(self, model: Any, ctx: Any) -> dict[str, Any]:
        shared = getattr(ctx, "epoch_pass", None)  # the engine's pass of this epoch end
        if shared is not None and shared.x is self.x:
            acts = shared.layers
        else:
            acts = member_activations(as_members(model), self.x)
        if list(acts) != self.layers:
            raise RuntimeError(f"probed layers changed from {self.layers} to {list(acts)}")
        n, k = len(self.layers), self.size
        mi_values = self.measure(acts)
        feats = [_features(t) for t in acts.values()]  # once: centred, QR if wide
        grid, init = self._cka(feats)
        device_values = [v.double().expand(k) for v in mi_values if torch.is_tensor(v)]
        parts = [*device_values, grid.reshape(k, -1).T.double(), init.double()]
        values = torch.cat([p.reshape(-1, k) for p in parts]).cpu().tolist()  # (M, K) rows
        on_device = iter(values[: len(device_values)])
        mi = [next(on_device) if torch.is_tensor(v) else [float(v)] * k for v in mi_values]
        grid_rows = values[len(device_values) : len(device_values) + (n + 1) ** 2]
        init_rows = values[-n:]
        per_member = dict(zip(self.mi_keys, mi, strict=True))
        for i, name in enumerate(self.layers):
            per_member[layer_key("cka_label", name)] = grid_rows[i * (n + 1) + n]
            per_member[layer_key("cka_init", name)] = init_rows[i]
        for key in self.mi_keys:
            self.history[key].append(_nanmean(per_member[key]))
            self.replicate_history[key].append(per_member[key])
        means = [_nanmean(row) for row in grid_rows]
        self.cka.append([means[i * (n + 1) : (i + 1) * (n + 1)] for i in range(n + 1)])
        self.steps.append(ctx.step)
        if isinstance(model, PackedEnsemble):
            return per_member
        return {key: row[0] for key, row in per_member.items()}

    def _cka(self, feats: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(layers + labels CKA matrices (K, L+1, L+1), each layer's CKA with itself at
        initialisation (L, K)) from the layers' features (K, N, d) each; the products in the
        features' dtype, the sums of their squares in float64."""
        hsic = hsic_blocks([*feats, self.label_features])  # (K, L+1, L+1)
        own = hsic.diagonal(dim1=-2, dim2=-1)[..., :-1]  # (K, L)
        cross = torch.stack(
            [hsic_blocks([f], [i])[..., 0, 0] for f, i in zip(feats, self.initial, strict=True)]
        )  # (L, K)
        return cka_of_hsic(hsic), cross / (own.T * self.initial_hsic.T).sqrt()

    def cka_record(self) -> dict[str, Any]:
        """Every measured epoch's CKA matrix (the replicates' mean) as JSON-safe data, NaN
        (a constant layer) as null: {"kernel", "names", "epochs", "matrices" (E, L+1, L+1)}."""
        return {
            "kernel": "linear",
            "names": [*self.layers, LABELS],
            "replicates": self.size,
            "epochs": list(self.steps),
            "matrices": json_safe(self.cka),
        }

    def plane(self, index: int) -> dict[str, dict[str, list[float]]]:
        """Estimator ``index``'s per-layer series (the replicates' means): {"mi_xt" |
        "mi_ty" | "ceiling_xt" | "ceiling_ty": {layer: values per measured epoch}}."""
        return self._series(index, self.history)

    def plane_bands(self, index: int) -> dict[str, dict[str, list[float]]] | None:
        """Half-widths of the 95% intervals of :meth:`plane`'s I(X;T) and I(T;Y) (bits), or
        None for one replicate: {"mi_xt" | "mi_ty": {layer: per measured epoch}}."""
        if self.size < 2:
            return None
        series = self._series(index, self.replicate_history)
        return {q: {layer: [ci95_half_width(v) for v in rows] for layer, rows in by.items()}
                for q, by in series.items() if q in ("mi_xt", "mi_ty")}  # fmt: skip

    def _series(self, index: int, source: dict[str, list[Any]]) -> dict[str, dict[str, list]]:
        estimator = self.estimators[index]
        out: dict[str, dict[str, list]] = {q: {} for q in MI_QUANTITIES}
        for layer in self.layers:
            keys = estimator_keys(estimator, index == 0, layer)
            for quantity, key in zip(out, keys, strict=False):
                out[quantity][layer] = source[key]
        return out

    def saturated(self) -> dict[str, list[str]]:
        """{estimator: layers} whose mean I(X;T) stayed within 1% of its ceiling at every
        measured epoch (estimators with none are left out)."""
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

    def planes_record(self) -> dict[str, Any]:
        """Every estimator's information-plane series (:meth:`plane`) and 95% bands
        (:meth:`plane_bands`), JSON-safe: what the information-plane figure is drawn from."""
        n = len(self.estimators)
        return json_safe({
            "steps": list(self.steps), "layers": list(self.layers), "replicates": self.size,
            "estimators": [e.describe() for e in self.estimators],
            "planes": [self.plane(i) for i in range(n)],
            "bands": [self.plane_bands(i) for i in range(n)],
        })  # fmt: skip

    def finish(self, figures: bool = True) -> None:
        """Log the records the figures are drawn from (every epoch's CKA matrix and the
        information-plane series, one artifact each) and, with ``figures``, draw them: the
        information planes (with 95% bands over replicates) and the last CKA heatmap; nothing
        if no epoch was measured."""
        if self.artifacts is None or not self.steps:
            return
        cka, planes = self.cka_record(), self.planes_record()
        self.artifacts.log_dict(cka, CKA_ARTIFACT)
        self.artifacts.log_dict(planes, PLANES_ARTIFACT)
        if figures:
            draw_probe_figures(planes, cka, self.artifacts)


def _features(t: torch.Tensor) -> torch.Tensor:
    """(K, N, ...) layers -> (K, N, d) centred features of the same linear Gram matrices
    (:func:`~infoflow_track.measures.linear_features`; a layer no wider than N: centred)."""
    t = t.reshape(t.shape[0], t.shape[1], -1)
    if t.shape[2] <= t.shape[1]:
        return t - t.mean(dim=1, keepdim=True)
    return torch.vmap(linear_features)(t)


def _nanmean(values: Sequence[float]) -> float:
    """The mean of the finite values (NaN if none): a dropped replicate measures NaN."""
    finite = [v for v in values if math.isfinite(v)]
    return math.fsum(finite) / len(finite) if finite else math.nan


def _at_ceiling(values: Sequence[float], ceilings: Sequence[float]) -> bool:
    pairs = [(v, c) for v, c in zip(values, ceilings, strict=True) if math.isfinite(v)]
    return bool(pairs) and all(c > 0 and v >= SATURATION * c for v, c in pairs)
