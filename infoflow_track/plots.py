"""Figures of a run: the information plane and CKA heatmaps (matplotlib, Agg, no pyplot).

Each function returns a :class:`matplotlib.figure.Figure`; the caller saves or logs it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

#: One panel's series: {"mi_xt" | "mi_ty" | "ceiling_xt" | "ceiling_ty": {layer: per epoch}}.
Plane = Mapping[str, Mapping[str, Sequence[float]]]
_MARKERS = "osD^v<>pPhX*"


def information_plane(
    steps: Sequence[int],
    panels: Mapping[str, Plane],
    bands: Mapping[str, Plane | None] | None = None,
) -> Figure:
    """I(X;T) against I(T;Y), in bits: a panel per estimator (titled by the key of
    ``panels``), one trajectory per layer, points coloured by epoch, and the estimator's
    ceilings as dashed lines (a layer on the vertical one measures nothing but the probe).

    With replicates the trajectories are their means, and ``bands[title]`` gives the 95%
    half-widths of ``mi_xt`` and ``mi_ty`` per layer and epoch: drawn as an ellipse around
    each point (axes: the two intervals)."""
    fig = Figure(figsize=(6.4 * len(panels), 4.8), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    points = None
    for ax, (title, plane) in zip(axes, panels.items(), strict=True):
        ends = {}
        for i, layer in enumerate(plane["mi_xt"]):
            x, y = np.asarray(plane["mi_xt"][layer]), np.asarray(plane["mi_ty"][layer])
            ax.plot(x, y, color="0.6", linewidth=0.8, zorder=1)
            band = (bands or {}).get(title)
            if band is not None:
                draw_ellipses(ax, x, y, band["mi_xt"][layer], band["mi_ty"][layer], steps)
            points = ax.scatter(
                x, y, c=steps, cmap="viridis", marker=_MARKERS[i % len(_MARKERS)], s=28,
                vmin=min(steps), vmax=max(steps), label=layer, zorder=2, edgecolors="none",
            )  # fmt: skip
            ends[layer] = (x[-1], y[-1])
        annotate_ends(ax, ends)
        draw_ceilings(ax, plane)
        legend = ax.legend(loc="best", fontsize=8, title="layer")
        for handle in legend.legend_handles:
            handle.set_color("0.3")
        _plane_axes(ax, title)
    if points is not None:
        fig.colorbar(points, ax=axes.tolist(), label="epoch")
    return fig


def annotate_ends(ax, ends: Mapping[str, tuple[float, float]]) -> None:
    """Name each layer at its last point; layers whose last points coincide (within 2% of
    the largest value on each axis) share one label, ``hidden3, hidden4``, not overprint."""
    finite = {k: p for k, p in ends.items() if np.isfinite(p).all()}
    if not finite:
        return
    scale = [max(max(abs(p[axis]) for p in finite.values()), 1e-9) * 0.02 for axis in (0, 1)]
    groups: dict[tuple[int, int], list[str]] = {}
    for layer, (x, y) in finite.items():
        groups.setdefault((round(x / scale[0]), round(y / scale[1])), []).append(layer)
    for names in groups.values():
        ax.annotate(", ".join(names), finite[names[0]], textcoords="offset points",
                    xytext=(4, 4), fontsize=8)  # fmt: skip


def draw_ellipses(ax, x, y, half_x, half_y, steps: Sequence[int]) -> None:
    """Translucent ellipses of half-axes (``half_x``, ``half_y``) around the points (x, y),
    coloured by epoch as the points are; NaN half-widths draw nothing."""
    from matplotlib.collections import EllipseCollection

    widths, heights = 2 * np.asarray(half_x, float), 2 * np.asarray(half_y, float)
    ok = np.isfinite(widths) & np.isfinite(heights) & np.isfinite(x) & np.isfinite(y)
    if not ok.any():
        return
    ellipses = EllipseCollection(
        widths[ok], heights[ok], np.zeros(ok.sum()), units="xy", offsets=np.c_[x[ok], y[ok]],
        offset_transform=ax.transData, cmap="viridis", alpha=0.18, zorder=0.5,
    )  # fmt: skip
    ellipses.set_array(np.asarray(steps, float)[ok])
    ellipses.set_clim(min(steps), max(steps))
    ax.add_collection(ellipses)


def band_curves(
    series: Mapping[str, tuple[Sequence[int], Sequence[float], Sequence[float]]],
    *,
    ylabel: str,
    title: str,
) -> Figure:
    """One line per label with its 95% band: ``series[label] = (epochs, means, half-widths)``."""
    fig = Figure(figsize=(6.4, 4.2), layout="constrained")
    ax = fig.add_subplot()
    for i, (label, (steps, means, half)) in enumerate(series.items()):
        mean, half = np.asarray(means, float), np.asarray(half, float)
        ax.plot(steps, mean, marker="o", markersize=3, color=f"C{i % 10}", label=label)
        ax.fill_between(steps, mean - half, mean + half, color=f"C{i % 10}", alpha=0.2,
                        linewidth=0)  # fmt: skip
    return _epoch_axes(fig, ax, ylabel, title, legend=bool(series))


def draw_ceilings(ax, plane: Plane) -> None:
    """Dashed lines at each distinct ceiling of I(X;T) (vertical) and I(T;Y) (horizontal)."""
    for quantity, line in (("ceiling_xt", ax.axvline), ("ceiling_ty", ax.axhline)):
        finals = {round(v[-1], 3) for v in plane.get(quantity, {}).values() if len(v)}
        for value in sorted(v for v in finals if np.isfinite(v)):
            line(value, color="tab:red", linestyle="--", linewidth=0.9, alpha=0.7, zorder=0)
            where = (value, 0.02) if quantity == "ceiling_xt" else (0.02, value)
            ax.annotate(f"ceiling {value:.2f}", where, xycoords=_ceiling_coords(ax, quantity),
                        fontsize=7, color="tab:red", rotation=90 * (quantity == "ceiling_xt"),
                        va="bottom", ha="left")  # fmt: skip


def _ceiling_coords(ax, quantity: str):
    """Data units along the ceiling's axis, axes fraction across it."""
    return ax.get_xaxis_transform() if quantity == "ceiling_xt" else ax.get_yaxis_transform()


def _plane_axes(ax, title: str) -> None:
    ax.set_xlabel("I(X;T) [bits]")
    ax.set_ylabel("I(T;Y) [bits]")
    ax.set_title(title, fontsize=10)
    ax.set_xlim(0, ax.get_xlim()[1] * 1.04)  # room for the ceilings' labels
    ax.set_ylim(0, ax.get_ylim()[1] * 1.06)
    ax.grid(alpha=0.3)


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
    return _epoch_axes(fig, ax, ylabel, title, legend=bool(series))


def information_planes(trials: Mapping[str, Plane], *, title: str) -> Figure:
    """Several runs in one information plane: a colour per run, a marker per layer, the
    ceilings dashed. ``trials[label]`` is a run's :data:`Plane`; the last epoch of each layer
    is drawn larger."""
    fig = Figure(figsize=(6.8, 5.0), layout="constrained")
    ax = fig.add_subplot()
    colors = [f"C{i % 10}" for i in range(len(trials))]
    layers: list[str] = []
    for color, (label, plane) in zip(colors, trials.items(), strict=True):
        for layer in plane["mi_xt"]:
            if layer not in layers:
                layers.append(layer)
            marker = _MARKERS[layers.index(layer) % len(_MARKERS)]
            x, y = np.asarray(plane["mi_xt"][layer]), np.asarray(plane["mi_ty"][layer])
            ax.plot(x, y, color=color, linewidth=0.9, marker=marker, markersize=3, alpha=0.8)
            ax.scatter(x[-1:], y[-1:], color=color, marker=marker, s=40, zorder=3)
        ax.plot([], [], color=color, label=label)
        draw_ceilings(ax, plane)
    for i, layer in enumerate(layers):
        ax.scatter([], [], color="0.3", marker=_MARKERS[i % len(_MARKERS)], label=layer)
    _plane_axes(ax, title)
    if trials:
        ax.legend(loc="best", fontsize=7, ncol=2)
    return fig


def compared_planes(runs: Mapping[str, Plane], *, title: str) -> Figure:
    """Many runs' information planes, a panel per layer (in the order first seen), a colour
    per run: its trajectory from a hollow start to a filled end, the ceilings dashed.
    ``runs[label]`` is a run's :data:`Plane`."""
    layers = list(dict.fromkeys(layer for plane in runs.values() for layer in plane["mi_xt"]))
    columns = min(len(layers), 3) or 1
    rows = -(-len(layers) // columns) or 1
    fig = Figure(figsize=(4.4 * columns, 3.6 * rows + 0.6 + 0.22 * len(runs)),
                 layout="constrained")  # fmt: skip
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    for ax, layer in zip(axes, layers, strict=False):
        for i, plane in enumerate(runs.values()):
            if layer not in plane["mi_xt"]:
                continue
            x, y = np.asarray(plane["mi_xt"][layer]), np.asarray(plane["mi_ty"][layer])
            color = f"C{i % 10}"
            ax.plot(x, y, color=color, linewidth=1.0, marker="o", markersize=2.5, alpha=0.85)
            ax.scatter(x[:1], y[:1], s=36, facecolors="none", edgecolors=color, zorder=3)
            ax.scatter(x[-1:], y[-1:], s=36, color=color, zorder=3)
            draw_ceilings(ax, {q: {layer: v[layer]} for q, v in plane.items() if layer in v})
        _plane_axes(ax, layer)
    for ax in axes[len(layers) :]:
        ax.set_axis_off()
    handles = [axes[0].plot([], [], color=f"C{i % 10}", label=label)[0]
               for i, label in enumerate(runs)]  # fmt: skip
    if handles:
        fig.legend(handles=handles, loc="outside lower center", fontsize=8, ncol=1)
    fig.suptitle(title + " (hollow: first epoch, filled: last)", fontsize=11)
    return fig


def _epoch_axes(fig: Figure, ax: Any, ylabel: str, title: str, *, legend: bool) -> Figure:
    """Label ``ax`` as a curve over epochs, with a legend if ``legend``; return ``fig``."""
    from matplotlib.ticker import MaxNLocator

    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # no epoch 1.5
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if legend:
        ax.legend(loc="best", fontsize=8)
    return fig
