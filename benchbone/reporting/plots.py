"""PNG figures with matplotlib's Agg backend: a confusion heat map and accuracy against cost with its Pareto front."""
from __future__ import annotations

import io
from typing import Sequence

import numpy as np

from benchbone.reporting.presentation import pareto_front


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    _pyplot().close(fig)
    return buffer.getvalue()


def confusion_png(matrix: np.ndarray, classes: Sequence[str], title: str) -> bytes:
    """A heat map of ``matrix`` (rows true, columns predicted), counts written in cells when few classes."""
    plt = _pyplot()
    n = len(classes)
    side = min(12.0, 2.5 + 0.45 * n)
    fig, ax = plt.subplots(figsize=(side, side))
    image = ax.imshow(matrix, cmap="Blues")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    if n <= 30:
        ax.set_xticks(range(n), classes, rotation=90, parse_math=False)  # class names are data, never mathtext
        ax.set_yticks(range(n), classes, parse_math=False)
    if n <= 15:
        cut = matrix.max() / 2
        for (i, j), v in np.ndenumerate(matrix):
            ax.text(j, i, str(v), ha="center", va="center", fontsize=8, color="white" if v > cut else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9, parse_math=False)
    return _png(fig)


def accuracy_vs_cost_png(points: list[dict], metric: str, title: str) -> bytes:
    """Two panels: ``metric`` against GMACs (lower is better) and against images/s (higher is better).

    ``points``: dicts with ``label``, ``value``, ``gmacs``, ``images_per_s``; missing costs are left out of a panel.
    Pareto-optimal points are joined by a line and drawn filled; the rest are hollow.
    """
    plt = _pyplot()
    from matplotlib.ticker import NullFormatter

    fig, axes = plt.subplots(1, 2, figsize=(12, 5))
    for ax, key, label, lower in ((axes[0], "gmacs", "GMACs per image", True),
                                  (axes[1], "images_per_s", "feature-extraction images/s", False)):
        shown = [p for p in points if p.get(key) is not None and np.isfinite(p[key]) and p[key] >= 0
                 and np.isfinite(p["value"])]
        if shown:
            cost = np.array([p[key] for p in shown])
            value = np.array([p["value"] for p in shown])
            front = pareto_front(cost, value, cost_lower_is_better=lower)
            ax.scatter(cost[~front], value[~front], facecolors="none", edgecolors="tab:gray", label="dominated")
            ax.scatter(cost[front], value[front], color="tab:red", label="Pareto front", zorder=3)
            order = np.argsort(cost[front])
            ax.plot(cost[front][order], value[front][order], color="tab:red", lw=1, ls="--")
            for p, c, v in zip(shown, cost, value):
                ax.annotate(p["label"], (c, v), textcoords="offset points", xytext=(4, 4), fontsize=7,
                            parse_math=False)
            if (cost > 0).all():
                ax.set_xscale("log")
            else:  # a zero cost (e.g. the pixels baseline's GMACs): linear near zero, log beyond
                ax.set_xscale("symlog", linthresh=cost[cost > 0].min() if (cost > 0).any() else 1.0)
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.margins(x=0.2, y=0.1)
            ax.legend(fontsize=8, loc="best")
        else:
            ax.text(0.5, 0.5, f"no {key} in the records", ha="center", va="center", transform=ax.transAxes)
        ax.set_xlabel(label)
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=10, parse_math=False)
    return _png(fig)


def _label_panel(ax, xlabel: str, metric: str, dataset: str) -> None:
    """Axis labels, the dataset as title, a light grid and the legend of one panel of a curve."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(metric)
    ax.set_title(dataset, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")


def layer_curve_png(board, metric: str, title: str) -> bytes:
    """``metric`` per layer: one line per backbone and strategy (layers in natural order, from the ``BACKBONE#LAYER``
    rows of ``board``), one panel per dataset; rows without a layer (baselines) as dashed horizontal lines."""
    from benchbone.registry import natural_key

    plt = _pyplot()
    datasets = sorted(board["dataset"].unique())
    fig, axes = plt.subplots(1, len(datasets), figsize=(7 * len(datasets), 4.5), squeeze=False)
    for ax, dataset in zip(axes[0], datasets):
        rows = board[(board["dataset"] == dataset) & board[metric].notna()]
        cut = rows[rows["backbone"].str.contains("#", regex=False)]
        layers = sorted({b.split("#", 1)[1] for b in cut["backbone"]}, key=natural_key)
        for (base, strategy), group in cut.groupby([cut["backbone"].str.split("#").str[0], "strategy"]):
            values = {b.split("#", 1)[1]: v for b, v in zip(group["backbone"], group[metric])}
            xs = [i for i, layer in enumerate(layers) if layer in values]
            ax.plot(xs, [values[layers[i]] for i in xs], marker="o", label=f"{base} ({strategy})")
        for _, row in rows[~rows.index.isin(cut.index)].iterrows():
            ax.axhline(row[metric], ls="--", lw=1, color="tab:gray")
            ax.annotate(f"{row['backbone']} ({row['strategy']})", (0, row[metric]), fontsize=7,
                        textcoords="offset points", xytext=(2, 3), color="tab:gray")
        ax.set_xticks(range(len(layers)), layers, rotation=30)
        _label_panel(ax, "layer", metric, dataset)
    fig.suptitle(title, fontsize=10)
    return _png(fig)


def param_curve_png(board, metric: str, param: str, title: str) -> bytes:
    """``metric`` (mean ± std over seeds) against the value of strategy parameter ``param`` (e.g. shots, swept
    with ``--set shots=1,2,5,10``): one line per backbone and strategy, one panel per dataset, log x axis."""
    import json

    plt = _pyplot()
    values = [json.loads(p).get(param) for p in board["params"]]
    rows = board.assign(_x=values)
    rows = rows[rows["_x"].map(lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)) & rows[metric].notna()]
    datasets = sorted(rows["dataset"].unique())
    fig, axes = plt.subplots(1, max(1, len(datasets)), figsize=(7 * max(1, len(datasets)), 4.5), squeeze=False)
    for ax, dataset in zip(axes[0], datasets):
        for (backbone, strategy), group in rows[rows["dataset"] == dataset].groupby(["backbone", "strategy"]):
            group = group.sort_values("_x")
            std = group[f"{metric}_std"].fillna(0) if f"{metric}_std" in group else None
            ax.errorbar(group["_x"], group[metric], yerr=std, marker="o", capsize=3, label=f"{backbone} ({strategy})")
        ax.set_xscale("log")
        ticks = sorted(rows.loc[rows["dataset"] == dataset, "_x"].unique())
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
        _label_panel(ax, param, metric, dataset)
    fig.suptitle(title, fontsize=10)
    return _png(fig)
