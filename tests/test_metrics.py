import math

import numpy as np
import pytest
import sklearn.metrics as skm

from benchbone.execution.artefacts import confusion
from benchbone.reporting.bootstrap import bootstrap_ci
from benchbone_plugins import classification_metrics as cm

RNG = np.random.default_rng(0)
N, K = 300, 7
LOGITS = RNG.normal(size=(N, K)) * 2
PROBS = np.exp(LOGITS) / np.exp(LOGITS).sum(1, keepdims=True)
Y_TRUE = np.where(RNG.random(N) < 0.6, PROBS.argmax(1), RNG.integers(0, K, N))
Y_PRED = PROBS.argmax(1)


@pytest.mark.parametrize("ours, theirs", [
    (cm.top1, lambda: skm.accuracy_score(Y_TRUE, Y_PRED)),
    (cm.top5, lambda: skm.top_k_accuracy_score(Y_TRUE, PROBS, k=5, labels=range(K))),
    (cm.balanced_accuracy, lambda: skm.balanced_accuracy_score(Y_TRUE, Y_PRED)),
    (cm.nll, lambda: skm.log_loss(Y_TRUE, PROBS, labels=range(K))),
    (cm._macro("f1_score"), lambda: skm.f1_score(Y_TRUE, Y_PRED, average="macro", zero_division=0)),
    (cm._macro("precision_score"), lambda: skm.precision_score(Y_TRUE, Y_PRED, average="macro", zero_division=0)),
    (cm._macro("recall_score"), lambda: skm.recall_score(Y_TRUE, Y_PRED, average="macro", zero_division=0)),
])
def test_metrics_equal_scikit_learn(ours, theirs):
    assert ours(Y_TRUE, Y_PRED, PROBS) == pytest.approx(theirs(), abs=1e-12)


def test_logits_go_through_softmax():
    assert cm.nll(Y_TRUE, Y_PRED, LOGITS) == pytest.approx(skm.log_loss(Y_TRUE, PROBS, labels=range(K)))
    assert cm.ece(Y_TRUE, Y_PRED, LOGITS) == pytest.approx(cm.ece(Y_TRUE, Y_PRED, PROBS))


def test_top5_with_five_classes_or_fewer_is_one_and_scores_are_optional():
    assert cm.top5(np.array([0, 1]), np.array([1, 0]), np.array([[0.2, 0.8], [0.9, 0.1]])) == 1.0
    for metric in (cm.top5, cm.nll, cm.ece):
        assert math.isnan(metric(Y_TRUE, Y_PRED, None))


def test_ece_by_hand():
    # confidences 0.9, 0.9 (bin 14: one right, accuracy 0.5) and 0.6, 0.6 (bin 8: both right, accuracy 1)
    probs = np.array([[0.9, 0.1], [0.1, 0.9], [0.6, 0.4], [0.4, 0.6]])
    y_true = np.array([0, 0, 0, 1])
    expected = 0.5 * abs(0.5 - 0.9) + 0.5 * abs(1.0 - 0.6)
    assert cm.ece(y_true, probs.argmax(1), probs) == pytest.approx(expected)


def test_bootstrap_ci_contains_the_estimate_and_narrows_with_more_data():
    small = (np.arange(200) % 4 != 0)  # 75% correct
    large = (np.arange(5000) % 4 != 0)
    lo_s, hi_s = bootstrap_ci(small)
    lo_l, hi_l = bootstrap_ci(large)
    assert lo_s < 0.75 < hi_s and lo_l < 0.75 < hi_l
    assert hi_l - lo_l < (hi_s - lo_s) / 3
    assert bootstrap_ci(small) == [lo_s, hi_s]  # fixed bootstrap seed


def test_confusion_matches_scikit_learn():
    assert (confusion(Y_TRUE, Y_PRED, K) == skm.confusion_matrix(Y_TRUE, Y_PRED, labels=range(K))).all()
