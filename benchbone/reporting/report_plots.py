"""The report's plots: accuracy against cost as inline SVG, each with its Pareto front (``scatter`` draws the
Selection section's too).

A few dataset x strategy groups get a figure each per cost (GMACs, images/s), side by side; more share one
figure per cost and a selector (``#plot-group``), so that a board of many datasets is two figures, not a wall.
Ticks are round numbers (powers of ten on a log axis), thinned until their labels cannot overlap.
"""
from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd

from benchbone.reporting import presentation
from benchbone.reporting.presentation import html_text


def has(board, column: str) -> bool:
    """Whether the board holds ``column`` with at least one value (records may predate it)."""
    return column in board and board[column].notna().any()


def front_by_x(points: list[tuple[float, float]], x_higher_is_better: bool) -> list[int]:
    """Indices of the points on the Pareto front (``presentation.pareto_front``'s rule, the PNG plots' too), by x."""
    on_front = presentation.pareto_front([x for x, _ in points], [y for _, y in points],
                                       cost_lower_is_better=not x_higher_is_better)
    return sorted(np.flatnonzero(on_front).tolist(), key=lambda i: points[i][0])


# plot sizes: several small figures side by side, or one figure per question (and a selector) for many groups
SMALL, LARGE = (420, 260), (640, 360)
FEW_GROUPS = 4  # up to this many dataset x strategy groups, each gets its figures; more share one per question
CHAR_PX, LINE_PX = 6.6, 13  # an 11px tick label's width per character and its height, for the layout


def _tick_text(value: float, step: float) -> str:
    """A tick value with as many decimals as its step needs (no 0.30000000000000004), thousands as k."""
    if value == 0:
        return "0"
    if abs(value) >= 10_000:
        return f"{value / 1000:g}k"
    decimals = max(0, -math.floor(math.log10(step) + 1e-9)) if step > 0 else 0
    while step > 0 and decimals < 8 and abs(step * 10 ** decimals - round(step * 10 ** decimals)) > 1e-6:
        decimals += 1  # a step of 0.025 needs three
    return f"{value:.{decimals}f}" if decimals <= 6 else f"{value:.3g}"


def linear_ticks(lo: float, hi: float, count: int = 5) -> list[tuple[float, str]]:
    """Round ticks inside [lo, hi] (steps of 1, 2, 2.5 or 5 times a power of ten), at least three, about ``count``."""
    magnitude = math.floor(math.log10((hi - lo) / max(count - 1, 1)))
    best = None
    for k, m in itertools.product((magnitude - 1, magnitude, magnitude + 1), (1, 2, 2.5, 5)):
        step = m * 10.0 ** k
        first = math.ceil(lo / step - 1e-9)
        values = [(first + i) * step for i in range(int((hi - lo) / step) + 2)]
        values = [0.0 if abs(v) < step * 1e-9 else v for v in values if lo - step * 1e-9 <= v <= hi + step * 1e-9]
        score = (len(values) < 3, abs(len(values) - count), len(values) > count, m == 2.5)  # few and round first
        if best is None or score < best[0]:
            best = (score, step, values)
    _, step, values = best
    return [(v, _tick_text(v, step)) for v in values]


def log_ticks(lo: float, hi: float) -> list[tuple[float, str]]:
    """Ticks at powers of ten inside [10**lo, 10**hi], with 2 and 5 times them when the range is short."""
    for mantissas in ((1,), (1, 2, 5), (1, 2, 3, 5, 7)):
        values = [m * 10.0 ** k for k in range(math.floor(lo) - 1, math.ceil(hi) + 1) for m in mantissas]
        values = [v for v in values if lo - 1e-9 <= math.log10(v) <= hi + 1e-9]
        if len(values) >= 3:
            break
    return [(v, _tick_text(v, min(v, 1))) for v in values]


def _thin(ticks: list, positions: list[float], sizes: list[float]) -> list:
    """Every k-th tick, the smallest k for which no two neighbouring labels (at ``positions``, ``sizes`` wide
    along the axis) come closer than a small gap."""
    for k in range(1, len(ticks) + 1):
        kept = list(range(0, len(ticks), k))
        if all(abs(positions[b] - positions[a]) >= (sizes[a] + sizes[b]) / 2 + 6 for a, b in itertools.pairwise(kept)):
            return [ticks[i] for i in kept]
    return ticks[:1]


def scatter(points: list[tuple[float, float, str]], xlabel: str, ylabel: str, x_higher: bool | None,
            size: tuple[int, int] = SMALL, steps: bool = False) -> str:
    """An inline SVG scatter plot of (x, y, label) with its Pareto front drawn as a line (``x_higher``: whether a
    larger x is better; None: no front); ``steps`` joins the points, in order, by a step line (a count over time,
    drawn with whole-number y ticks).

    Ticks are round numbers (powers of ten on a log axis) thinned until their labels cannot overlap; the left
    margin fits the widest y label; point labels that would cover another are left to the point's tooltip."""
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    log = min(xs) > 0 and max(xs) / min(xs) >= 100
    tx = (lambda v: math.log10(v)) if log else (lambda v: v)
    x0, x1 = tx(min(xs)), tx(max(xs))
    y0, y1 = min(ys), max(ys)
    pad = (abs(x0) / 2 or 0.5) if x0 == x1 else 0.06 * (x1 - x0)  # one x: centre it
    x0, x1 = x0 - pad, x1 + pad
    if not log and min(xs) >= 0:
        x0 = max(x0, 0.0)  # no negative GMACs or images/s on the axis
    y0, y1 = (y0 - 1, y1 + 1) if y0 == y1 else (y0 - 0.08 * (y1 - y0), y1 + 0.08 * (y1 - y0))
    w, h = size
    top, bottom, right = 12, 42, 16
    yticks = linear_ticks(y0, y1, 6 if h > 300 else 5)
    if steps:  # a count: whole numbers only
        yticks = [(v, f"{v:.0f}") for v, _ in yticks if float(v).is_integer()]
    left = 22 + max(len(text) for _, text in yticks) * CHAR_PX + 6

    def px(v):
        return left + (tx(v) - x0) / (x1 - x0) * (w - left - right)

    def py(v):
        return top + (y1 - v) / (y1 - y0) * (h - top - bottom)

    xticks = log_ticks(x0, x1) if log else linear_ticks(x0, x1, 7 if w > 500 else 5)
    xpos = [left + ((math.log10(v) if log else v) - x0) / (x1 - x0) * (w - left - right) for v, _ in xticks]
    keep = _thin(list(range(len(xticks))), xpos, [len(text) * CHAR_PX for _, text in xticks])
    yticks = _thin(yticks, [py(v) for v, _ in yticks], [LINE_PX] * len(yticks))

    parts = [f'<svg class="plot" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img">',
             f'<rect x="{left:.0f}" y="{top}" width="{w - left - right:.0f}" height="{h - top - bottom}" class="frame"/>']
    for v, text in yticks:
        parts.append(f'<line class="grid" x1="{left:.0f}" x2="{w - right}" y1="{py(v):.1f}" y2="{py(v):.1f}"/>'
                     f'<text x="{left - 5:.0f}" y="{py(v) + 4:.1f}" class="tick y" text-anchor="end">{text}</text>')
    for i in keep:
        parts.append(f'<line class="grid" x1="{xpos[i]:.1f}" x2="{xpos[i]:.1f}" y1="{top}" y2="{h - bottom}"/>'
                     f'<text x="{xpos[i]:.1f}" y="{h - bottom + 15}" class="tick x" text-anchor="middle">'
                     f'{xticks[i][1]}</text>')
    parts.append(f'<text x="{(left + w - right) / 2:.0f}" y="{h - 8}" text-anchor="middle" class="axis">'
                 f'{html_text(xlabel)}{" (log scale)" if log else ""}</text>')
    parts.append(f'<text transform="translate(13 {(top + h - bottom) / 2:.0f}) rotate(-90)" text-anchor="middle" '
                 f'class="axis">{html_text(ylabel)}</text>')
    front = [] if x_higher is None else front_by_x([(x, y) for x, y, _ in points], x_higher)
    if front:
        line = " ".join(f"{px(points[i][0]):.1f},{py(points[i][1]):.1f}" for i in front)
        parts.append(f'<polyline class="front" points="{line}"/>')
    if steps:  # level until the next point
        corners = [corner for (x, y, _), (after, _, _) in itertools.pairwise(points) for corner in ((x, y), (after, y))]
        line = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in [*corners, points[-1][:2]])
        parts.append(f'<polyline class="steps" points="{line}"/>')
    placed: list[tuple[float, float, float, float]] = [(px(x) - 4, py(y) - 4, px(x) + 4, py(y) + 4) for x, y, _ in points]
    labels = []
    for i in sorted(range(len(points)), key=lambda i: (i not in front, i)):  # the front's labels first
        x, y, label = points[i]
        east = px(x) <= w / 2
        lx, ly, width = px(x) + (6 if east else -6), py(y) - 5, len(label) * 5.9
        box = (lx if east else lx - width, ly - 9, lx + width if east else lx, ly + 2)
        clear = all(box[2] <= b[0] or b[2] <= box[0] or box[3] <= b[1] or b[3] <= box[1]
                    for j, b in enumerate(placed) if j != i)
        if clear and left <= box[0] and box[2] <= w - right + 12 and box[1] >= 0:
            placed.append(box)
            labels.append(f'<text class="label" x="{lx:.1f}" y="{ly:.1f}" text-anchor="{"start" if east else "end"}">'
                          f'{html_text(label)}</text>')
    for i, (x, y, label) in enumerate(points):
        cls = "point on-front" if i in front else "point"
        parts.append(f'<circle class="{cls}" cx="{px(x):.1f}" cy="{py(y):.1f}" r="4">'
                     f'<title>{html_text(label)}: {y:.4g} at {x:.4g}</title></circle>')
    parts += labels
    parts.append("</svg>")
    return "".join(parts)


COSTS = (("gmacs", "GMACs", False), ("images_per_s", "images/s", True))


def _plot_groups(board: pd.DataFrame, metric: str, scale: float) -> list[tuple[str, str, dict]]:
    """(dataset, strategy, {cost column: points}) per dataset x strategy with anything to plot."""
    groups = []
    for (dataset, strategy), group in board.groupby(["dataset", "strategy"], sort=True):
        by_cost = {}
        for col, _, _ in COSTS:
            if col not in group:
                continue
            ok = group[group[metric].notna() & group[col].notna()]
            several = ok.groupby("backbone")["params"].nunique().max() > 1 if len(ok) else False
            points = [(float(x), float(y) * scale, f"{b} {p}" if several else b)
                      for x, y, b, p in zip(ok[col], ok[metric], ok["backbone"], ok["params"])]
            if points:
                by_cost[col] = points
        if by_cost:
            groups.append((dataset, strategy, by_cost))
    return groups


def plots(board: pd.DataFrame) -> str:
    metric = board.attrs.get("sort_by")
    if metric is None:
        return "<p>No metrics to plot.</p>"
    scale = 100.0 if board.attrs["percent"][metric] else 1.0
    ylabel = f"{metric}{' %' if scale == 100 else ''}"
    groups = _plot_groups(board, metric, scale)
    figures = []
    if len(groups) <= FEW_GROUPS:  # a few: each dataset x strategy its own figures, side by side
        for dataset, strategy, by_cost in groups:
            for col, xlabel, higher in COSTS:
                if col in by_cost:
                    figures.append(f'<figure><figcaption>{html_text(dataset)} · {html_text(strategy)}: '
                                   f'{html_text(ylabel)} against {xlabel}</figcaption>'
                                   f'{scatter(by_cost[col], xlabel, ylabel, higher)}</figure>')
    elif groups:  # many: one figure per question, the dataset x strategy chosen in a selector
        options = "".join(f'<option value="{i}">{html_text(d)} · {html_text(s)}</option>'
                          for i, (d, s, _) in enumerate(groups))
        figures.append(f'<p class="plot-choice"><label>dataset · strategy <select id="plot-group">{options}</select>'
                       f'</label> <span class="note">{len(groups)} dataset × strategy groups; the figures show one '
                       'at a time</span></p>')
        for col, xlabel, higher in COSTS:
            svgs = "".join(f'<div class="plot-group" data-group="{i}"{"" if i == 0 else " hidden"}>'
                           f'{scatter(by_cost[col], xlabel, ylabel, higher, LARGE)}</div>'
                           if col in by_cost else
                           f'<div class="plot-group note" data-group="{i}"{"" if i == 0 else " hidden"}>'
                           f'no {xlabel} in these records</div>'
                           for i, (_, _, by_cost) in enumerate(groups))
            if any(col in by_cost for _, _, by_cost in groups):
                figures.append(f'<figure class="question"><figcaption>{html_text(ylabel)} against {xlabel}'
                               f'</figcaption>{svgs}</figure>')
    if not has(board, "images_per_s"):
        figures.append('<p class="note">No throughput in these records (images/s): that plot is left out.</p>')
    legend = ('<p class="note">The line joins the Pareto front: no other backbone is both more accurate and '
              'cheaper (fewer GMACs) or faster (more images/s). Hover a point for its backbone; labels that would '
              'cover another are left out.</p>')
    return legend + "".join(figures)
