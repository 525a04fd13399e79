"""Formatting shared by the leaderboard (terminal, markdown, CSV) and the HTML report: metric cells and their
intervals, the comparison with the leader, the provenance of records, and the one Pareto rule (the PNG plots' too)."""
from __future__ import annotations

import html
import math
from typing import Iterable

import numpy as np
import pandas as pd


def missing(value) -> bool:
    """None, NaN or pandas' NA: shown as ``-``."""
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def _scale(percent: bool) -> tuple[float, int]:
    return (100.0, 2) if percent else (1.0, 4)


def metric_text(value, std, percent: bool) -> str:
    """``85.00 ± 7.07`` for a metric mean and its std over seeds (percent: x100); ``-`` when missing."""
    if missing(value):
        return "-"
    scale, digits = _scale(percent)
    text = f"{value * scale:.{digits}f}"
    return text if missing(std) else f"{text} ± {std * scale:.{digits}f}"


def interval_text(low, high, percent: bool) -> str:
    """``[84.10, 86.00]``, a confidence interval in the metric's units; ``-`` when missing."""
    if missing(low) or missing(high):
        return "-"
    scale, digits = _scale(percent)
    return f"[{low * scale:.{digits}f}, {high * scale:.{digits}f}]"


def delta_text(diff: float, low: float, high: float, percent: bool) -> str:
    """``-2.45 [-4.10, -0.80]``: row - leader in the ranking metric's units, with its interval."""
    if missing(diff):
        return "-"
    scale, digits = _scale(percent)
    return f"{diff * scale:+.{digits}f} [{low * scale:+.{digits}f}, {high * scale:+.{digits}f}]"


def tie_label(row, metric: str) -> str:
    """leader, tied, not comparable or nothing: what a row's comparison with its leader says."""
    if row.get("leader") and row.get("comparable"):
        return "leader"
    if row.get("status") == "failed" or pd.isna(row.get(metric)):
        return ""
    if not row.get("comparable"):
        return "leader, not comparable" if row.get("leader") else "not comparable"
    return "tied" if row.get("tied") else ""


def provenance(records: list[dict]) -> dict[str, list]:
    """How the records were produced, each fact as a sorted list of its distinct values: commands, machines
    (device, machine, host), versions, plugins ("name version": of the cell's kinds, and every plugin loaded),
    started, finished, notes."""

    def unique(values: Iterable) -> list:
        return sorted({v for v in values if v})

    return {
        "commands": unique(r.get("command") for r in records),
        "machines": unique((r.get("device"), r.get("machine"), r.get("host")) for r in records if r.get("device")),
        "versions": unique(", ".join(f"{k} {v}" for k, v in (r.get("versions") or {}).items()) for r in records),
        "plugins": unique([*(f"{p['name']} {p.get('version', '')}" for r in records
                             for p in (r.get("plugins") or {}).values()),
                           *(f"{name} {version}" for r in records for name, version in
                             (r.get("plugin_versions") or {}).items())]),
        "started": unique(r.get("started_at") for r in records),
        "finished": unique(r.get("finished_at") for r in records),
        "notes": unique((r.get("data") or {}).get("note") for r in records),
    }


def pareto_front(cost, value, *, cost_lower_is_better: bool = True) -> np.ndarray:
    """Mask of the points that no other point beats: at least as good in cost and value (higher value is
    better) and better in one of them. Identical points are all on the front."""
    cost = np.asarray(cost, float) * (1 if cost_lower_is_better else -1)
    value = np.asarray(value, float)
    front = np.zeros(len(cost), bool)
    for i in range(len(cost)):
        dominated = (cost <= cost[i]) & (value >= value[i]) & ((cost < cost[i]) | (value > value[i]))
        front[i] = not dominated.any()
    return front


def html_text(value) -> str:
    """``value`` escaped for HTML; None as empty."""
    return html.escape("" if value is None else str(value))


def number_text(value, fmt: str = ".3g") -> str:
    """A number in ``fmt``; a missing one as "-"."""
    return "-" if missing(value) else format(float(value), fmt)


def sort_value(value) -> str:
    """What the report's tables sort a number by (a cell's ``data-v``): its full value, or empty (sorted last)."""
    return "" if missing(value) else repr(float(value))


def duration_text(seconds: float) -> str:
    """42 s, 14 min, 3 h 10 min."""
    if seconds < 90:
        return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    hours, minutes = divmod(round(seconds / 60), 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"
