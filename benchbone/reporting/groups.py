"""The paired tests applied to a leaderboard: comparison groups (rows that scored the same test items), each row
against the group's leader, and every pair of rows."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from benchbone.reporting.statistics import (
    ALPHA,
    RESAMPLES,
    RESAMPLES_RECOMPUTED,
    Items,
    MetricForm,
    Resampler,
    bootstrap_difference,
    holm,
    load_items,
    mcnemar_exact,
)

GROUP = ["dataset", "strategy"]  # a comparison group: the rows of one dataset x strategy


def row_key(row) -> tuple:
    return (row["dataset"], row["strategy"], row["backbone"], row["params"])


def _records_by_row(records: Iterable[dict]) -> dict[tuple, list[dict]]:
    rows: dict[tuple, list[dict]] = {}
    for r in records:
        if r.get("status") == "ok":
            key = (r["dataset"], r["strategy"], r["backbone"], json.dumps(r.get("params", {}), sort_keys=True))
            rows.setdefault(key, []).append(r)
    return rows


@dataclass
class Group:
    """The rows of one dataset x strategy that can be compared, with their replicates of one metric."""

    metric: str
    higher_is_better: bool
    labels: list[str]
    points: list[float]
    reps: list[np.ndarray]
    correct: list[np.ndarray | None]  # per row, 0/1 per-item values [n] (top1, top5) when it has one seed
    excluded: dict[str, str] = field(default_factory=dict)  # label -> why not comparable
    resamples: int = 0


def binary_items(form: MetricForm, items: Items) -> np.ndarray | None:
    """A one-seed row's per-item values of the metric when each is 0 or 1 (right or wrong: top1, top5), which
    McNemar's test pairs; None for other metrics and several seeds."""
    if form.per_item is None or len(items.seeds) != 1:
        return None
    values = np.asarray(form.per_item(items.y_true, items.y_pred[0],
                                      None if items.y_score is None else items.y_score[0]), dtype=np.float64)
    return values.astype(bool) if np.isin(values, (0.0, 1.0)).all() else None


def comparison_group(rows: pd.DataFrame, records: Iterable[dict], run_dirs: Sequence[Path], metric: str,
                     higher_is_better: bool, metrics_registry, resamples: int | None = None,
                     labels: Sequence[str] | None = None) -> Group:
    """Load and resample the rows of one group (``rows`` in rank order, the first is the reference).

    A row whose items are missing, or differ from the first comparable row's (other test items, other
    seeds), lands in ``excluded`` with the reason; so does every row when the metric cannot be resampled.
    """
    labels = list(labels if labels is not None else rows["backbone"])
    group = Group(metric, higher_is_better, [], [], [], [])
    by_row = _records_by_row(records)
    form = MetricForm.from_registry(metric, metrics_registry)
    loaded = []
    for label, (_, row) in zip(labels, rows.iterrows()):
        if isinstance(form, str):
            group.excluded[label] = form
            continue
        found = by_row.get(row_key(row))
        items = load_items(found, run_dirs, scores=form.needs_scores or form.per_item is None) if found else \
            "no finished cell"
        if isinstance(items, str):
            group.excluded[label] = items
        elif form.needs_scores and items.y_score is None:
            group.excluded[label] = f"{metric} needs scores and the strategy gave none"
        elif loaded and items.test_key != loaded[0][1].test_key:
            group.excluded[label] = (f"scored other test items than {loaded[0][0]} (test split digest, size or "
                                     "data directory differ; compare rows with the same test_per_class and data)")
        elif loaded and items.seeds != loaded[0][1].seeds:
            group.excluded[label] = (f"ran seeds {items.seeds}, {loaded[0][0]} ran {loaded[0][1].seeds}; "
                                     "pair only rows with the same seeds")
        else:
            loaded.append((label, items))
    if not loaded:
        return group
    resamples = resamples or (RESAMPLES if form.per_item is not None else RESAMPLES_RECOMPUTED)
    resampler = Resampler(len(loaded[0][1].y_true), len(loaded[0][1].seeds), resamples)
    group.points, reps = resampler.replicates([items for _, items in loaded], form)
    group.labels, group.reps = [label for label, _ in loaded], list(reps)
    group.correct = [binary_items(form, items) for _, items in loaded]
    group.resamples = resamples
    return group


def versus_leader(group: Group, alpha: float, ci_method: str) -> dict[str, dict]:
    """Per comparable row after the first (the leader): difference to the leader, interval, p and Holm's p."""
    out = {}
    for i in range(1, len(group.labels)):
        d = bootstrap_difference(group.points[i], group.reps[i], group.points[0], group.reps[0], alpha, ci_method)
        mc = (mcnemar_exact(group.correct[i], group.correct[0])
              if group.correct[i] is not None and group.correct[0] is not None else np.nan)
        out[group.labels[i]] = {"diff": d.diff, "diff_ci_low": d.ci_low, "diff_ci_high": d.ci_high, "p": d.p,
                                "mcnemar_p": mc}
    adjusted = holm([v["p"] for v in out.values()])
    adjusted_mc = holm([v["mcnemar_p"] for v in out.values()])
    for v, p, pm in zip(out.values(), adjusted, adjusted_mc):
        v.update(p_holm=float(p), mcnemar_p_holm=float(pm), tied=bool(p >= alpha))
    return out


def pairwise(group: Group, alpha: float, ci_method: str) -> pd.DataFrame:
    """Every pair (a, b) of comparable rows: a - b, interval, p, and Holm's p across all pairs of the group."""
    rows = []
    for i in range(len(group.labels)):
        for j in range(i + 1, len(group.labels)):
            d = bootstrap_difference(group.points[i], group.reps[i], group.points[j], group.reps[j], alpha, ci_method)
            mc = (mcnemar_exact(group.correct[i], group.correct[j])
                  if group.correct[i] is not None and group.correct[j] is not None else np.nan)
            rows.append({"a": group.labels[i], "b": group.labels[j], "metric": group.metric, "diff": d.diff,
                         "ci_low": d.ci_low, "ci_high": d.ci_high, "p": d.p, "mcnemar_p": mc})
    frame = pd.DataFrame(rows, columns=["a", "b", "metric", "diff", "ci_low", "ci_high", "p", "mcnemar_p"])
    frame["p_holm"] = holm(frame["p"]) if len(frame) else []
    frame["mcnemar_p_holm"] = holm(frame["mcnemar_p"]) if len(frame) else []
    frame["significant"] = frame["p_holm"] < alpha
    return frame


# ---------------------------------------------------------------- the leaderboard's columns


COLUMNS = ["comparable", "vs_leader", "vs_leader_ci_low", "vs_leader_ci_high", "p", "p_holm", "mcnemar_p",
           "mcnemar_p_holm", "note"]


def leader_columns(board: pd.DataFrame, records: list[dict], run_dirs: Sequence[Path], metric: str | None,
                   directions: Mapping[str, bool], metrics_registry, alpha: float = ALPHA,
                   ci_method: str = "percentile", resamples: int | None = None) -> pd.DataFrame:
    """leader, tied and the comparison columns of ``board`` (already in rank order), one row per board row.

    The leader of a group is its first ok row with a value of ``metric`` (the metric the board is sorted
    by); every other ok row is compared with it. Rows that cannot be compared say why in ``note``.
    ``metrics_registry`` (default: the installed plugins') says how each metric is resampled.
    """
    if metrics_registry is None:  # a library call: the metrics of the installed plugins
        from benchbone.plugins import get_plugin_manager

        metrics_registry = get_plugin_manager().registries().metrics
    out = pd.DataFrame(index=board.index, columns=["leader", "tied", *COLUMNS], dtype=object)
    out[["leader", "tied", "comparable"]] = False
    out["note"] = ""
    if metric is None:
        return out
    for _, rows in board.groupby(GROUP, sort=False):
        scored = rows[(rows["status"] != "failed") & rows[metric].notna()]
        if scored.empty:
            continue
        out.loc[scored.index[0], "leader"] = True
        if len(scored) == 1:
            out.loc[scored.index[0], "note"] = "the only row of its dataset x strategy: nothing to compare"
            continue
        labels = [str(i) for i in scored.index]
        group = comparison_group(scored, records, run_dirs, metric, directions[metric], metrics_registry,
                                 resamples, labels)
        for label, why in group.excluded.items():
            out.loc[int(label), "note"] = why
        if not group.labels or group.labels[0] != labels[0]:  # the leader itself cannot be compared
            for label in group.labels:
                out.loc[int(label), "note"] = f"the leader is not comparable ({out.loc[scored.index[0], 'note']})"
            continue
        out.loc[int(labels[0]), "comparable"] = True
        for label, v in versus_leader(group, alpha, ci_method).items():
            i = int(label)
            out.loc[i, "comparable"] = True
            out.loc[i, ["vs_leader", "vs_leader_ci_low", "vs_leader_ci_high", "p", "p_holm", "mcnemar_p",
                        "mcnemar_p_holm"]] = [v["diff"], v["diff_ci_low"], v["diff_ci_high"], v["p"], v["p_holm"],
                                              v["mcnemar_p"], v["mcnemar_p_holm"]]
            out.loc[i, "tied"] = v["tied"]
    for c in ("vs_leader", "vs_leader_ci_low", "vs_leader_ci_high", "p", "p_holm", "mcnemar_p", "mcnemar_p_holm"):
        out[c] = pd.to_numeric(out[c], errors="coerce")
    return out.astype({"leader": bool, "tied": bool, "comparable": bool})
