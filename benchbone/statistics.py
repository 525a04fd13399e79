"""Comparisons a reviewer accepts: paired tests on the same test items, and rankings across datasets.

Within one dataset x strategy (a *comparison group*) every row scored the same test items, so two rows
are compared on paired data: the paired bootstrap of the difference in the ranking metric (its interval
and a p-value), McNemar's exact test for metrics with 0/1 values per item (top1, top5), and Holm's correction across the comparisons of a group.
With several seeds the bootstrap resamples seeds and test items together (see ``Resampler``). Across
datasets (per strategy) the rows are ranked per dataset, and the Friedman test with the Nemenyi post-hoc
test and a critical-difference diagram (Demšar, JMLR 2006) say which backbones differ.
docs/statistics.md says what each number means and what it does not claim.
"""
from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from benchbone.errors import UsageError

ALPHA = 0.05
RESAMPLES = 10_000  # metrics with a per-item form: cheap, and Holm's p can go below alpha for many rows
RESAMPLES_RECOMPUTED = 1_000  # metrics recomputed on each resample (macro F1, ECE): one call per resample
BOOTSTRAP_SEED = 0
CI_METHODS = ("percentile", "basic")
CORRECTION = "holm"
TEST_NAME = "paired bootstrap over seeds and test items"
GROUP = ["dataset", "strategy"]


def check_options(alpha: float, ci_method: str) -> None:
    """Refuse an alpha outside (0, 1) or an unknown interval method, with the flag to fix."""
    if ci_method not in CI_METHODS:
        raise UsageError(f"--ci-method {ci_method!r}: use one of {', '.join(CI_METHODS)}")
    if not 0 < alpha < 1:
        raise UsageError(f"--alpha {alpha!r}: give a significance level between 0 and 1, e.g. 0.05")


def describe(alpha: float, ci_method: str) -> str:
    """The one line written under every table: which test, alpha and correction decide "tied"."""
    return (f"tied: not significantly different from the leader at alpha = {alpha:g} (Holm), by the paired "
            f"bootstrap of the difference in the ranking metric over the same test items ({RESAMPLES:,} "
            f"resamples of seeds and items; {RESAMPLES_RECOMPUTED:,} for metrics recomputed on each resample; "
            f"{ci_method} interval at {1 - alpha:.0%}); McNemar's exact test "
            "(0/1 metrics such as top1, one seed) beside it; not comparable: no predictions, other test items or other seeds "
            "than the leader's, or the only row of its dataset x strategy.")


def library_versions() -> str:
    """``scipy 1.17.1, statsmodels 0.15.0, scikit-posthocs 0.17.1``: what computed the statistics."""
    import importlib.metadata

    return ", ".join(f"{name} {importlib.metadata.version(name)}" for name in ("scipy", "statsmodels", "scikit-posthocs"))


# ---------------------------------------------------------------- per-item data of one row

@dataclass
class Items:
    """One leaderboard row's test predictions, one entry per seed, every seed on the same test items."""

    seeds: list[int]
    y_true: np.ndarray  # [n]
    y_pred: np.ndarray  # [seeds, n]
    y_score: np.ndarray | None  # [seeds, n, classes], None when the strategy gave no scores
    test_key: tuple  # what identifies the test items: data directory, index digest, labels digest


def _predictions_file(record: dict, run_dirs: Sequence[Path]) -> Path | None:
    rel = (record.get("artefacts") or {}).get("predictions")
    for run_dir in reversed(list(run_dirs)):  # later directories win, as in read_records
        if rel and (Path(run_dir) / rel).is_file():
            return Path(run_dir) / rel
    return None


def load_items(records: Sequence[dict], run_dirs: Sequence[Path], scores: bool = True) -> Items | str:
    """The ``Items`` of the ok records of one row, or a reason why they cannot be compared.

    ``scores=False`` leaves ``y_score`` unread (it is items x classes per seed: large for ImageNet).
    """
    records = sorted(records, key=lambda r: r.get("seed", 0))
    arrays = []
    for record in records:
        path = _predictions_file(record, run_dirs)
        if path is None:
            return f"no predictions.npz for cell {record['cell_id']} (seed {record.get('seed')})"
        try:
            with np.load(path, allow_pickle=False) as saved:
                arrays.append({k: saved[k] for k in ("y_true", "y_pred", *(("y_score",) if scores else ()))})
        except (OSError, ValueError, KeyError) as exc:
            return f"unreadable {path}: {exc}"
    digests = {json.dumps([(r.get("cell") or {}).get("data_dir"), (r.get("data") or {}).get("indices_digest",
                                                                                               {}).get("test")])
               for r in records}
    y_true = arrays[0]["y_true"]
    if len(digests) > 1 or any(not np.array_equal(a["y_true"], y_true) for a in arrays):
        return "its seeds scored different test items"
    given = [a["y_score"] for a in arrays] if scores else []
    has_scores = scores and all(s.ndim == 2 and s.shape[1] > 0 for s in given)
    key = (*json.loads(digests.pop()), len(y_true), hash(y_true.tobytes()))
    return Items([int(r.get("seed", 0)) for r in records], y_true, np.stack([a["y_pred"] for a in arrays]),
                 np.stack(given) if has_scores else None, key)


# ---------------------------------------------------------------- resampling

@dataclass
class MetricForm:
    """How a metric is recomputed on a resample: ``per_item`` values whose mean it is, or the metric itself."""

    name: str
    fn: Callable | None = None  # fn(y_true, y_pred, y_score) -> float
    per_item: Callable | None = None  # per_item(y_true, y_pred, y_score) -> [n] values whose mean is the metric
    needs_scores: bool = False

    @classmethod
    def from_registry(cls, name: str, metrics) -> "MetricForm | str":
        """The metric's form from its registration, or why it cannot be resampled."""
        if metrics is None or name not in metrics:
            return f"metric {name!r} is not registered here (install its plugin to compare rows on it)"
        entry = metrics.get(name)
        if entry.meta.get("per_item"):
            return cls(name, entry.obj, entry.meta["per_item"], bool(entry.meta.get("needs_scores")))
        if entry.meta.get("resample"):
            return cls(name, entry.obj, None, bool(entry.meta.get("needs_scores")))
        return (f"metric {name!r} does not declare per_item= or resample=True, so it cannot be recomputed on a "
                "resample of the test items")


class Resampler:
    """The bootstrap replicates of one comparison group, shared by its rows so that differences are paired.

    Each replicate draws the seeds with replacement and, independently, the test items with replacement;
    the items drawn are the same for every seed (seeds and items are crossed, not nested: every seed scores
    every item). A row's replicate statistic is the mean over the drawn seeds of the metric on the drawn
    items. With one seed only the items are resampled: the interval then holds test-set uncertainty and not
    the variation between training seeds. Replicates are drawn in chunks from one seeded stream, so memory
    stays small and every row of the group sees the same resamples.
    """

    def __init__(self, n_items: int, n_seeds: int, resamples: int = RESAMPLES, seed: int = BOOTSTRAP_SEED):
        self.n_items, self.n_seeds, self.resamples, self.seed = n_items, n_seeds, resamples, seed

    def _chunks(self):
        rng = np.random.default_rng(self.seed)
        step = max(1, 4_000_000 // self.n_items)
        for start in range(0, self.resamples, step):
            size = min(step, self.resamples - start)
            yield rng.integers(0, self.n_seeds, size=(size, self.n_seeds)), rng.integers(0, self.n_items,
                                                                                         size=(size, self.n_items))

    def replicates(self, rows: Sequence[Items], form: MetricForm) -> tuple[list[float], np.ndarray]:
        """(point estimate per row, [rows, resamples] replicate statistics) of ``form``."""
        def scores(items, s):
            return None if items.y_score is None else items.y_score[s]

        if form.per_item is not None:
            values = [np.stack([np.asarray(form.per_item(r.y_true, r.y_pred[s], scores(r, s)), np.float64)
                                for s in range(self.n_seeds)]) for r in rows]  # per row [seeds, items]
            points = [float(v.mean()) for v in values]
        else:
            points = [float(np.mean([form.fn(r.y_true, r.y_pred[s], scores(r, s)) for s in range(self.n_seeds)]))
                      for r in rows]
        reps = []
        for seeds, items in self._chunks():
            per_seed = np.empty((len(rows), self.n_seeds, len(items)))  # each seed's metric on each resample
            for i, r in enumerate(rows):
                for s in range(self.n_seeds):
                    if form.per_item is not None:
                        per_seed[i, s] = values[i][s][items].mean(axis=1)
                    else:
                        score = scores(r, s)
                        per_seed[i, s] = [form.fn(r.y_true[idx], r.y_pred[s][idx], None if score is None else score[idx])
                                          for idx in items]
            reps.append(per_seed[:, seeds, np.arange(len(items))[:, None]].mean(axis=2))  # mean over drawn seeds
        return points, np.concatenate(reps, axis=1)


@dataclass
class Difference:
    """``a - b`` in the metric's units, its interval and two-sided p-value (before any correction)."""

    diff: float
    ci_low: float
    ci_high: float
    p: float


def bootstrap_difference(point_a: float, reps_a: np.ndarray, point_b: float, reps_b: np.ndarray,
                         alpha: float = ALPHA, ci_method: str = "percentile") -> Difference:
    """The paired bootstrap of ``a - b`` from replicates drawn on the same resamples.

    ``percentile``: the interval is the alpha/2 and 1 - alpha/2 quantiles of the replicate differences and
    p = 2 min(P*(d <= 0), P*(d >= 0)); ``basic`` (reverse percentile): the interval 2 d - quantiles and
    p = P*(|d* - d| >= |d|). Both p-values count the observed difference as one replicate ((k + 1) / (B + 1)),
    so they never reach 0 and each is dual to its interval.
    """
    check_options(alpha, ci_method)
    diff = point_a - point_b
    reps = reps_a - reps_b
    count = len(reps) + 1
    low, high = np.quantile(reps, [alpha / 2, 1 - alpha / 2])
    if ci_method == "percentile":
        p = 2 * min(np.sum(reps <= 0) + 1, np.sum(reps >= 0) + 1) / count
    else:
        low, high = 2 * diff - high, 2 * diff - low
        p = (np.sum(np.abs(reps - diff) >= abs(diff) - 1e-12) + 1) / count
    return Difference(float(diff), float(low), float(high), float(min(1.0, p)))


def smallest_holm_p(resamples: int, comparisons: int, ci_method: str = "percentile") -> float:
    """The smallest p-value Holm's correction can give ``comparisons`` bootstrap p-values of ``resamples``."""
    return min(1.0, comparisons * (2 if ci_method == "percentile" else 1) / (resamples + 1))


def mcnemar_exact(correct_a: np.ndarray, correct_b: np.ndarray) -> float:
    """McNemar's exact test (statsmodels) on the items one classifier gets right and the other wrong."""
    from statsmodels.stats.contingency_tables import mcnemar

    a, b = np.asarray(correct_a, bool), np.asarray(correct_b, bool)
    table = [[int(np.sum(a & b)), int(np.sum(a & ~b))], [int(np.sum(~a & b)), int(np.sum(~a & ~b))]]
    if table[0][1] + table[1][0] == 0:
        return 1.0
    return float(mcnemar(table, exact=True).pvalue)


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjustment (statsmodels' multipletests); NaN stays NaN."""
    from statsmodels.stats.multitest import multipletests

    p = np.asarray(p_values, dtype=np.float64)
    out = np.full(len(p), np.nan)
    known = ~np.isnan(p)
    if known.any():
        out[known] = multipletests(p[known], method="holm")[1]
    return out


# ---------------------------------------------------------------- comparison groups

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


# ---------------------------------------------------------------- across datasets

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
    import scipy.stats
    import scikit_posthocs

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

    from benchbone.plots import _pyplot

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
