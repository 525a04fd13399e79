"""Ranks across datasets: Friedman's test, the Nemenyi post-hoc test and critical-difference diagrams (docs/statistics.md)."""
from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from benchbone.reporting.statistics import ALPHA


@dataclass
class Ranking:
    """One strategy's backbones ranked on every dataset: mean rank, mean metric, Friedman and Nemenyi."""

    strategy: str
    metric: str
    higher_is_better: bool
    alpha: float
    values: pd.DataFrame  # datasets x backbones
    ranks: pd.DataFrame  # datasets x backbones, 1 = best, ties averaged
    left_out: dict[str, str]
    friedman_statistic: float = float("nan")
    friedman_p: float = float("nan")
    nemenyi: pd.DataFrame | None = None  # backbones x backbones p-values
    critical_difference: float = float("nan")
    note: str = ""

    @property
    def mean_rank(self) -> pd.Series:
        """Mean rank per backbone, best first; equal means in name order, so every drawing is the same."""
        means = self.ranks.mean()
        return means[sorted(means.index, key=lambda b: (means[b], b))]

    def table(self) -> pd.DataFrame:
        order = self.mean_rank.index
        return pd.DataFrame({"backbone": order, "mean_rank": self.mean_rank.values,
                             f"mean_{self.metric}": self.values.mean()[order].values,
                             "datasets": len(self.values)})

    def to_json(self) -> dict:
        return {"strategy": self.strategy, "metric": self.metric, "higher_is_better": self.higher_is_better,
                "datasets": list(self.values.index), "table": self.table().to_dict(orient="records"),
                "ranks": self.ranks.to_dict(orient="index"),
                "friedman": {"statistic": _finite(self.friedman_statistic), "p": _finite(self.friedman_p)},
                "posthoc": "Nemenyi", "alpha": self.alpha, "critical_difference": _finite(self.critical_difference),
                "nemenyi_p": None if self.nemenyi is None else self.nemenyi.to_dict(orient="index"),
                "left_out": self.left_out, "note": self.note}


def _finite(value: float) -> float | None:
    return None if value is None or not np.isfinite(value) else float(value)


def critical_difference(k: int, n: int, alpha: float = ALPHA) -> float:
    """Nemenyi's critical difference of mean ranks: q_alpha sqrt(k (k + 1) / (6 N)), q from the studentized range."""
    from scipy.stats import studentized_range

    q = studentized_range.ppf(1 - alpha, k, np.inf) / np.sqrt(2)
    return float(q * np.sqrt(k * (k + 1) / (6 * n)))


def rank_matrix(values: pd.DataFrame, higher_is_better: bool, alpha: float = ALPHA, strategy: str = "",
                metric: str = "", left_out: dict | None = None) -> Ranking:
    """Friedman (scipy) and Nemenyi (scikit-posthocs) on a datasets x backbones matrix of one metric."""
    import scikit_posthocs
    import scipy.stats

    ranks = values.rank(axis=1, ascending=not higher_is_better, method="average")
    result = Ranking(strategy, metric, higher_is_better, alpha, values, ranks, dict(left_out or {}))
    n, k = values.shape
    if k < 3 or n < 2:
        result.note = (f"{k} backbone(s) on {n} dataset(s) in common: the Friedman test needs at least 3 backbones "
                       "scored on at least 2 datasets")
        return result
    friedman = scipy.stats.friedmanchisquare(*[values[c].to_numpy() for c in values.columns])
    result.friedman_statistic, result.friedman_p = float(friedman.statistic), float(friedman.pvalue)
    result.nemenyi = scikit_posthocs.posthoc_nemenyi_friedman(values.reset_index(drop=True))
    result.critical_difference = critical_difference(k, n, alpha)
    return result


def across_datasets(board: pd.DataFrame, metric: str, higher_is_better: bool, alpha: float = ALPHA) -> list[Ranking]:
    """A ``Ranking`` per strategy scored on at least two datasets; each backbone's best row per dataset.

    Backbones missing (or failed) on some dataset are left out, so that every dataset ranks the same set.
    """
    out = []
    ok = board[(board["status"] != "failed") & board[metric].notna()]
    for strategy, rows in ok.groupby("strategy", sort=True):
        best = rows.sort_values("rank").drop_duplicates(["dataset", "backbone"])
        values = best.pivot(index="dataset", columns="backbone", values=metric).astype(float)
        if len(values) < 2:
            continue
        missing = values.columns[values.isna().any()]
        left_out = {b: "not scored on " + ", ".join(values.index[values[b].isna()]) for b in missing}
        out.append(rank_matrix(values.drop(columns=missing), higher_is_better, alpha, strategy, metric, left_out))
    return out


def cd_diagram(ranking: Ranking, fmt: str = "png") -> bytes:
    """The critical-difference diagram (scikit-posthocs) of ``ranking`` as PNG or SVG bytes."""
    import scikit_posthocs

    from benchbone.reporting.plots import _pyplot

    plt = _pyplot()
    k = len(ranking.mean_rank)
    plt.rcParams["svg.hashsalt"] = "benchbone"  # stable element ids: the same diagram gives the same file
    fig, ax = plt.subplots(figsize=(8, 1.2 + 0.35 * k))
    drawn = scikit_posthocs.critical_difference_diagram(ranking.mean_rank, ranking.nemenyi, alpha=ranking.alpha,
                                                        cd=ranking.critical_difference, ax=ax,
                                                        label_fmt_left="{label} ({rank:.2f})",
                                                        label_fmt_right="({rank:.2f}) {label}")
    for line in (line for bar in drawn["crossbars"] for line in bar):  # drawn from sets: put points in order
        x, y = (np.asarray(v) for v in line.get_data())
        line.set_data(x[np.argsort(x, kind="stable")], y[np.argsort(x, kind="stable")])
    first = float(ranking.mean_rank.iloc[0])
    ax.set_xlim(1 - 0.05 * k, max(k, first + ranking.critical_difference) + 0.05 * k)  # the whole range of ranks
    ax.set_title(f"{ranking.strategy}: mean rank of {ranking.metric} on {len(ranking.values)} datasets (1 = best), "
                 f"Friedman p = {ranking.friedman_p:.3g}\nbars join backbones the Nemenyi test does not separate at "
                 f"alpha = {ranking.alpha:g}", fontsize=8)
    buffer = io.BytesIO()
    fig.savefig(buffer, format=fmt, bbox_inches="tight", dpi=100, **({"metadata": {"Date": None}} if fmt == "svg" else {}))
    plt.close(fig)
    return buffer.getvalue()


def file_stem(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)


def write_cd_diagrams(rankings: Sequence[Ranking], folder: Path) -> list[Path]:
    """``cd-<strategy>.png`` and ``.svg`` in ``folder`` for every ranking with a post-hoc test."""
    from benchbone.records import write_atomic

    paths = []
    for ranking in rankings:
        if ranking.nemenyi is None:
            continue
        stem = "cd-" + file_stem(ranking.strategy)
        for fmt in ("png", "svg"):
            path = Path(folder) / f"{stem}.{fmt}"
            write_atomic(path, cd_diagram(ranking, fmt))
            paths.append(path)
    return paths
