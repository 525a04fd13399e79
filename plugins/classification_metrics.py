"""Classification metrics: top1, top5, macro precision/recall/F1, balanced accuracy, NLL and ECE.

Each metric takes ``(y_true, y_pred, y_score)`` as numpy arrays; ``y_score`` [N, K] may be None. Metrics
that need scores (top5, nll, ece) return NaN when the strategy gave none: the cell still counts, and the
leaderboard shows "-" for them. Where scikit-learn has the metric, it computes it.
"""
from __future__ import annotations

import math

import numpy as np

from benchbone import hookimpl

ECE_BINS = 15


def top1(y_true, y_pred, y_score) -> float:
    from sklearn.metrics import accuracy_score

    return accuracy_score(y_true, y_pred)


def top1_items(y_true, y_pred, y_score) -> np.ndarray:
    """1 for each test item predicted right, else 0 (their mean is top1)."""
    return (np.asarray(y_pred) == np.asarray(y_true)).astype(np.float64)


def top5(y_true, y_pred, y_score) -> float:
    """Share of items whose class is among the 5 highest scores; 1.0 when there are 5 classes or fewer."""
    from sklearn.metrics import top_k_accuracy_score

    if y_score is None:
        return math.nan
    k = y_score.shape[1]
    if k <= 5:  # every class is in the top five
        return 1.0
    return top_k_accuracy_score(y_true, y_score, k=5, labels=np.arange(k))


def top5_items(y_true, y_pred, y_score) -> np.ndarray:
    """1 for each item whose class is among its 5 highest scores (their mean is top5)."""
    y_score = np.asarray(y_score)
    if y_score.shape[1] <= 5:
        return np.ones(len(y_true))
    true_score = y_score[np.arange(len(y_true)), y_true]
    return ((y_score > true_score[:, None]).sum(axis=1) < 5).astype(np.float64)


def balanced_accuracy(y_true, y_pred, y_score) -> float:
    from sklearn.metrics import balanced_accuracy_score

    return balanced_accuracy_score(y_true, y_pred)


def probabilities(y_score: np.ndarray) -> np.ndarray:
    """Scores as probabilities: rows summing to 1 (within float32 error) are renormalised, others go through a softmax."""
    y_score = np.asarray(y_score, dtype=np.float64)
    if (y_score >= 0).all() and np.allclose(y_score.sum(axis=1), 1.0, atol=1e-4):
        return y_score / y_score.sum(axis=1, keepdims=True)
    shifted = np.exp(y_score - y_score.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def nll(y_true, y_pred, y_score) -> float:
    """Mean negative log-likelihood of the true class (scikit-learn's log_loss), in nats."""
    from sklearn.metrics import log_loss

    if y_score is None:
        return math.nan
    probs = probabilities(y_score)
    return log_loss(y_true, probs, labels=np.arange(probs.shape[1]))


def nll_items(y_true, y_pred, y_score) -> np.ndarray:
    """-log p(true class) per item, clipped as scikit-learn's log_loss clips (their mean is nll)."""
    probs = probabilities(y_score)
    eps = np.finfo(probs.dtype).eps
    return -np.log(np.clip(probs[np.arange(len(y_true)), y_true], eps, 1 - eps))


def ece(y_true, y_pred, y_score) -> float:
    """Expected calibration error: 15 equal-width bins of the top probability, |accuracy - confidence|
    weighted by the share of items in each bin. Confidence and correctness both use the arg-max class."""
    if y_score is None:
        return math.nan
    probs = probabilities(y_score)
    confidence, predicted = probs.max(axis=1), probs.argmax(axis=1)
    correct = (predicted == np.asarray(y_true)).astype(np.float64)
    bins = np.clip(np.ceil(confidence * ECE_BINS).astype(int) - 1, 0, ECE_BINS - 1)  # (0, 1/15] is bin 0
    total = 0.0
    for b in np.unique(bins):
        inside = bins == b
        total += inside.mean() * abs(correct[inside].mean() - confidence[inside].mean())
    return total


def _macro(fn_name: str):
    def metric(y_true, y_pred, y_score) -> float:
        import sklearn.metrics

        return getattr(sklearn.metrics, fn_name)(y_true, y_pred, average="macro", zero_division=0)

    metric.__name__ = fn_name
    return metric


@hookimpl
def benchbone_register_metrics(register):
    # per_item: values whose mean is the metric (the paired bootstrap resamples them); resample=True: the
    # metric is recomputed on each resample of the test items (macro averages, calibration)
    register("top1", top1, higher_is_better=True, percent=True, per_item=top1_items, description="top-1 accuracy")
    register("top5", top5, higher_is_better=True, percent=True, per_item=top5_items, needs_scores=True,
             description="top-5 accuracy (1 with 5 classes or fewer; needs scores)")
    register("precision", _macro("precision_score"), higher_is_better=True, percent=True, resample=True,
             description="macro-averaged precision")
    register("recall", _macro("recall_score"), higher_is_better=True, percent=True, resample=True,
             description="macro-averaged recall")
    register("f1", _macro("f1_score"), higher_is_better=True, percent=True, resample=True,
             description="macro-averaged F1")
    register("balanced_accuracy", balanced_accuracy, higher_is_better=True, percent=True, resample=True,
             description="balanced accuracy (mean per-class recall)")
    register("nll", nll, higher_is_better=False, percent=False, per_item=nll_items, needs_scores=True,
             description="negative log-likelihood in nats (softmax of scores unless they are probabilities)")
    register("ece", ece, higher_is_better=False, percent=True, resample=True, needs_scores=True,
             description=f"expected calibration error, {ECE_BINS} equal-width confidence bins")
