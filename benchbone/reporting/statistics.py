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

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from benchbone.errors import UsageError
from benchbone.registry import call_reading, read_only
from benchbone.reporting.bootstrap import BOOTSTRAP_SEED
from benchbone.versions import package_version

ALPHA = 0.05


RESAMPLES = 10_000  # metrics with a per-item form: cheap, and Holm's p can go below alpha for many rows


RESAMPLES_RECOMPUTED = 1_000  # metrics recomputed on each resample (macro F1, ECE): one call per resample


CI_METHODS = ("percentile", "basic")


CORRECTION = "holm"


TEST_NAME = "paired bootstrap over seeds and test items"




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
    return ", ".join(f"{name} {package_version(name)}" for name in ("scipy", "statsmodels", "scikit-posthocs"))


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
    """Never a file outside the record's run directory (``records.artefact_file``)."""
    from benchbone.records import artefact_file

    return artefact_file(record, "predictions", run_dirs)


def items_key(record: dict) -> str:
    """What identifies the test items a record scored: its data (the fingerprint of what its dataset read; an
    older record's data directory) and the digest of its test rows. Records of one leaderboard row or one
    comparison must share it."""
    cell = record.get("cell") or {}
    data = (cell.get("data_fingerprint") or None) if "data_fingerprint" in cell else cell.get("data_dir")
    return json.dumps([data, (record.get("data") or {}).get("indices_digest", {}).get("test")])


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
    digests = {items_key(r) for r in records}
    y_true = arrays[0]["y_true"]
    if len(digests) > 1 or any(not np.array_equal(a["y_true"], y_true) for a in arrays):
        return "its seeds scored different test items"
    given = [a["y_score"] for a in arrays] if scores else []
    has_scores = scores and all(s.ndim == 2 and s.shape[1] > 0 for s in given)
    key = (*json.loads(digests.pop()), len(y_true), hash(y_true.tobytes()))
    return Items([int(r.get("seed", 0)) for r in records], read_only(y_true),  # every metric's paired test reads them
                 read_only(np.stack([a["y_pred"] for a in arrays])), read_only(np.stack(given) if has_scores else None),
                 key)


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
            return cls(name, _reading(entry.plugin, entry.obj), _reading(entry.plugin, entry.meta["per_item"]),
                       bool(entry.meta.get("needs_scores")))
        if entry.meta.get("resample"):
            return cls(name, _reading(entry.plugin, entry.obj), None, bool(entry.meta.get("needs_scores")))
        return (f"metric {name!r} does not declare per_item= or resample=True, so it cannot be recomputed on a "
                "resample of the test items")


def _reading(plugin: str, fn: Callable) -> Callable:
    """``fn`` called through ``call_reading``: a metric that writes into the read-only items is named."""
    return lambda y_true, y_pred, y_score: call_reading("metric", plugin, fn,
                                                        {"y_true": y_true, "y_pred": y_pred, "y_score": y_score})


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
    """Holm's step-down adjustment, computed as statsmodels' ``multipletests(method="holm")`` computes it (which
    also runs ``gc.collect()`` on every call: 0.1 to 0.5 s in a process holding many objects); NaN stays NaN."""
    p = np.asarray(p_values, dtype=np.float64)
    out = np.full(len(p), np.nan)
    known = np.flatnonzero(~np.isnan(p))
    order = known[np.argsort(p[known])]
    out[order] = np.minimum(np.maximum.accumulate(p[order] * np.arange(len(order), 0, -1)), 1.0)
    return out
