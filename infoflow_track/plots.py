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
