"""``benchbone compare``: every pair of rows of a dataset x strategy, paired on the same test items.

For each pair, the difference in the ranking metric (row - column), its paired-bootstrap interval and
Holm's adjusted p-value across all pairs of the group; McNemar's exact test beside it for a 0/1 metric (top1)
with one seed. Shown as a terminal table, JSON or a self-contained HTML page.
"""
from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Sequence

import pandas as pd

from benchbone.errors import UsageError
from benchbone.reporting import formats, groups, leaderboard, statistics


def _pick(board: pd.DataFrame, column: str, value: str | None, flag: str) -> pd.DataFrame:
    if value is None:
        return board
    known = sorted(board[column].unique())
    if value not in known:
        raise UsageError(f"{flag} {value!r} is not in these records; pass one of {', '.join(known)}")
    return board[board[column] == value]


def compare(board: pd.DataFrame, records: list[dict], run_dirs: Sequence[Path], metric_registry,
            strategy: str | None = None, dataset: str | None = None) -> list[dict]:
    """The pairwise comparisons of every selected dataset x strategy of ``board`` (from ``leaderboard.build``).

    Raises UsageError, naming the rows, for a group with a single row, rows scored on other test items or
    seeds, or rows without predictions: nothing is guessed.
    """
    metric, alpha, ci_method = board.attrs.get("sort_by"), board.attrs["alpha"], board.attrs["ci_method"]
    if metric is None:
        raise UsageError("these records hold no metric to compare; pass run directories with finished cells")
    rows = _pick(_pick(board, "strategy", strategy, "--strategy"), "dataset", dataset, "--dataset")
    compared = []
    for (ds, st), group_rows in rows.groupby(groups.GROUP, sort=True):
        scored = group_rows[(group_rows["status"] != "failed") & group_rows[metric].notna()]
        labels = list(leaderboard.label(scored))
        if len(scored) < 2:
            raise UsageError(f"{ds} x {st} has a single row ({', '.join(labels) or 'none scored'}); comparing needs "
                             "two or more: pass run directories holding other backbones on it, or pick another "
                             "--dataset/--strategy")
        group = groups.comparison_group(scored, records, run_dirs, metric, board.attrs["directions"][metric],
                                            metric_registry, labels=labels)
        if group.excluded:
            label, why = next(iter(group.excluded.items()))
            more = f" (and {len(group.excluded) - 1} more)" if len(group.excluded) > 1 else ""
            raise UsageError(f"cannot compare {ds} x {st}: row {label}: {why}{more}; leave it out or rerun it "
                             "with the same test_per_class, data and seeds")
        pairs = groups.pairwise(group, alpha, ci_method)
        floor = statistics.smallest_holm_p(group.resamples, len(pairs), ci_method)
        compared.append({"dataset": ds, "strategy": st, "metric": metric, "higher_is_better": group.higher_is_better,
                         "percent": board.attrs["percent"][metric], "rows": group.labels,
                         "values": dict(zip(group.labels, group.points)), "resamples": group.resamples,
                         "smallest_p_holm": floor, "pairs": pairs.to_dict(orient="records")})
    return compared


def _matrix(group: dict) -> pd.DataFrame:
    """rows x columns: ``row - column`` with Holm's p, e.g. ``+2.45 (p 0.003)``."""
    scale, digits = (100.0, 2) if group["percent"] else (1.0, 4)
    cells = {(a, a): "·" for a in group["rows"]}
    for p in group["pairs"]:
        star = "*" if p["significant"] else ""
        cells[(p["a"], p["b"])] = f"{p['diff'] * scale:+.{digits}f} (p {p['p_holm']:.3g}){star}"
        cells[(p["b"], p["a"])] = f"{-p['diff'] * scale:+.{digits}f} (p {p['p_holm']:.3g}){star}"
    return pd.DataFrame([[cells[(a, b)] for b in group["rows"]] for a in group["rows"]], index=group["rows"],
                        columns=group["rows"])


def _heading(group: dict, alpha: float) -> str:
    arrow = "higher" if group["higher_is_better"] else "lower"
    text = (f"{group['dataset']} x {group['strategy']}: {group['metric']} of row - column ({arrow} is better), "
            f"Holm-adjusted p over {len(group['pairs'])} pairs; * significant")
    if group["smallest_p_holm"] >= alpha:
        text += (f" (none can be: with {group['resamples']:,} resamples Holm's p cannot go below "
                 f"{group['smallest_p_holm']:.3g}; compare fewer rows, or a metric with a per-item form)")
    return text


def to_text(groups: list[dict], alpha: float, ci_method: str, fmt: str = "table", title: str = "benchbone compare") -> str:
    """The comparisons as a terminal table, JSON or an HTML page."""
    from tabulate import tabulate

    formats.check(fmt, formats.OFFERED["compare"])
    method = pairwise_method(alpha, ci_method)
    if fmt == "json":
        return json.dumps(_no_nan({"method": method, "alpha": alpha, "ci_method": ci_method,
                                   "correction": statistics.CORRECTION, "groups": groups}), indent=2, allow_nan=False)
    if fmt == "table":
        parts = [f"{_heading(g, alpha)}\n{tabulate(_matrix(g), headers='keys', disable_numparse=True)}" for g in groups]
        return "\n\n".join([*parts, method])
    esc = html.escape
    body = "".join(f"<h2>{esc(_heading(g, alpha))}</h2>{_matrix(g).to_html(escape=True, classes='matrix')}" for g in groups)
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><meta http-equiv="Content-Security-Policy" '
            f"content=\"default-src 'none'; style-src 'unsafe-inline'\"><title>{esc(title)}</title><style>"
            "body{font:14px/1.4 system-ui,sans-serif;margin:1.5em}table{border-collapse:collapse}"
            "th,td{border:1px solid #ddd;padding:3px 8px;text-align:right;font-variant-numeric:tabular-nums}"
            f"</style></head><body><h1>{esc(title)}</h1>{body}<p>{esc(method)}</p></body></html>\n")


def _no_nan(value):
    """JSON has no NaN: missing numbers (McNemar without one seed) become null."""
    if isinstance(value, dict):
        return {k: _no_nan(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_no_nan(v) for v in value]
    if isinstance(value, float) and value != value:
        return None
    return value.item() if hasattr(value, "item") else value


def pairwise_method(alpha: float, ci_method: str) -> str:
    return (f"row - column: paired bootstrap over the same test items (seeds and items resampled together; "
            f"{ci_method} intervals in the JSON); p: two-sided, Holm-adjusted across the pairs of each dataset x "
            f"strategy; * p < alpha = {alpha:g}. McNemar's exact p (0/1 metrics such as top1, one seed) is in the JSON. "
            "See docs/statistics.md.")
