"""Figures of a run: the information plane and CKA heatmaps (matplotlib, Agg, no pyplot).

Each function returns a :class:`matplotlib.figure.Figure`; the caller saves or logs it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure


def information_plane(
    steps: Sequence[int],
    mi_xt: Mapping[str, Sequence[float]],
    mi_ty: Mapping[str, Sequence[float]],
    *,
    title: str = "information plane",
) -> Figure:
    """I(X;T) against I(T;Y), in bits: one trajectory per layer, points coloured by epoch.

    ``mi_xt[layer]`` and ``mi_ty[layer]`` hold one value per entry of ``steps``.
    """
    fig = Figure(figsize=(6.4, 4.8), layout="constrained")
    ax = fig.add_subplot()
    markers = "osD^v<>pPhX*"
    points = None
    for i, layer in enumerate(mi_xt):
        x, y = np.asarray(mi_xt[layer]), np.asarray(mi_ty[layer])
        ax.plot(x, y, color="0.6", linewidth=0.8, zorder=1)
        points = ax.scatter(
            x, y, c=steps, cmap="viridis", marker=markers[i % len(markers)], s=28,
            vmin=min(steps), vmax=max(steps), label=layer, zorder=2, edgecolors="none",
        )  # fmt: skip
        ax.annotate(layer, (x[-1], y[-1]), textcoords="offset points", xytext=(4, 4), fontsize=8)
    if points is not None:
        fig.colorbar(points, ax=ax, label="epoch")
        legend = ax.legend(loc="best", fontsize=8, title="layer")
        for handle in legend.legend_handles:
            handle.set_color("0.3")
    ax.set_xlabel("I(X;T) [bits]")
    ax.set_ylabel("I(T;Y) [bits]")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    return fig


def cka_heatmap(matrix: np.ndarray, labels: Sequence[str], *, title: str = "linear CKA") -> Figure:
    """A (L, L) CKA matrix as a heatmap on [0, 1], values written in when L <= 12."""
    matrix = np.asarray(matrix, dtype=float)
    size = 2.0 + 0.5 * len(labels)
    fig = Figure(figsize=(size + 1.0, size), layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(matrix, vmin=0.0, vmax=1.0, cmap="magma")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    if len(labels) <= 12:
        for (i, j), value in np.ndenumerate(matrix):
            color = "black" if value > 0.6 else "white"
            ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7, color=color)
    fig.colorbar(image, ax=ax, label="CKA")
    ax.set_title(title)
    return fig


def optimization_history(
    numbers: Sequence[int],
    values: Sequence[Sequence[float]],
    objectives: Sequence[tuple[str, str]],
    *,
    title: str = "optimisation history",
) -> Figure:
    """Each objective per trial (complete trials), with the best so far as a step line.

    ``values[i][k]`` is objective k of trial ``numbers[i]``; ``objectives[k]`` is
    ``(metric, "maximize" | "minimize")``.
    """
    fig = Figure(figsize=(6.4, 2.2 + 2.0 * len(objectives)), layout="constrained")
    axes = fig.subplots(len(objectives), 1, squeeze=False)[:, 0]
    table = np.asarray(values, dtype=float).reshape(len(numbers), len(objectives))
    for k, (ax, (metric, direction)) in enumerate(zip(axes, objectives, strict=True)):
        column = table[:, k]
        ax.scatter(numbers, column, s=20, color="tab:blue", label="trial", zorder=2)
        if len(column):
            running = (np.maximum if direction == "maximize" else np.minimum).accumulate(column)
            ax.step(numbers, running, where="post", color="tab:red", label="best so far")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize=8)
    axes[-1].set_xlabel("trial")
    axes[0].set_title(title)
    return fig


def param_importances(importances: Mapping[str, Mapping[str, float]]) -> Figure:
    """Horizontal bars of each parameter's importance (fANOVA, sums to 1), per objective."""
    fig = Figure(figsize=(6.4, 1.2 + sum(0.35 * len(v) + 0.8 for v in importances.values())),
                 layout="constrained")  # fmt: skip
    axes = fig.subplots(len(importances), 1, squeeze=False)[:, 0]
    for ax, (metric, values) in zip(axes, importances.items(), strict=True):
        names = list(values)[::-1]
        ax.barh(names, [values[n] for n in names], color="tab:green")
        ax.set_xlim(0, 1)
        ax.set_title(f"parameter importance for {metric}", fontsize=10)
        ax.grid(alpha=0.3, axis="x")
    return fig


def curves(
    series: Mapping[str, tuple[Sequence[int], Sequence[float]]], *, ylabel: str, title: str
) -> Figure:
    """One line per label: ``series[label] = (epochs, values)``."""
    fig = Figure(figsize=(6.4, 4.2), layout="constrained")
    ax = fig.add_subplot()
    for label, (steps, values) in series.items():
        ax.plot(steps, values, marker="o", markersize=3, label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if series:
        ax.legend(loc="best", fontsize=8)
    return fig


def information_planes(
    trials: Mapping[str, tuple[Mapping[str, Sequence[float]], Mapping[str, Sequence[float]]]],
    *,
    title: str = "information plane of the best trials",
) -> Figure:
    """Several runs in one information plane: a colour per run, a marker per layer.

    ``trials[label] = (mi_xt, mi_ty)``, each ``{layer: values per epoch}`` in bits; the last
    epoch of each layer is drawn larger.
    """
    fig = Figure(figsize=(6.8, 5.0), layout="constrained")
    ax = fig.add_subplot()
    markers = "osD^v<>pPhX*"
    colors = [f"C{i % 10}" for i in range(len(trials))]
    layers: list[str] = []
    for color, (label, (mi_xt, mi_ty)) in zip(colors, trials.items(), strict=True):
        for layer in mi_xt:
            if layer not in layers:
                layers.append(layer)
            marker = markers[layers.index(layer) % len(markers)]
            x, y = np.asarray(mi_xt[layer]), np.asarray(mi_ty[layer])
            ax.plot(x, y, color=color, linewidth=0.9, marker=marker, markersize=3, alpha=0.8)
            ax.scatter(x[-1:], y[-1:], color=color, marker=marker, s=40, zorder=3)
        ax.plot([], [], color=color, label=label)
    for i, layer in enumerate(layers):
        ax.scatter([], [], color="0.3", marker=markers[i % len(markers)], label=layer)
    ax.set_xlabel("I(X;T) [bits]")
    ax.set_ylabel("I(T;Y) [bits]")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if trials:
        ax.legend(loc="best", fontsize=7, ncol=2)
    return fig
