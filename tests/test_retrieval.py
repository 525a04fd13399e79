"""retrieval: recall@k and mAP checked against scikit-learn / numpy, alone and through the harness on real digits."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score

from benchbone import Predictions, hookimpl
from benchbone_plugins.retrieval import retrieval_metrics


def reference(gallery, gallery_labels, queries, query_labels, ks=(1, 5, 10)) -> dict[str, float]:
    """scikit-learn's average precision per query, numpy's sort for recall@k; cosine similarity."""
    g = gallery / np.linalg.norm(gallery, axis=1, keepdims=True)
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    sims = q @ g.T
    relevant = gallery_labels[None, :] == query_labels[:, None]
    out = {f"recall_at_{k}": float(np.mean([relevant[i, np.argsort(-sims[i], kind="stable")[:k]].any()
                                            for i in range(len(q))])) for k in ks}
    out["map"] = float(np.mean([average_precision_score(relevant[i], sims[i]) for i in range(len(q))]))
    return out


@pytest.mark.parametrize("chunk", [1, 7, 1000])
def test_metrics_match_sklearn_and_numpy(chunk):
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(5, 16))
    gallery_labels, query_labels = rng.integers(0, 5, 300), rng.integers(0, 5, 40)
    gallery = centres[gallery_labels] + 1.5 * rng.normal(size=(300, 16))
    queries = centres[query_labels] + 1.5 * rng.normal(size=(40, 16))
    expected = reference(gallery, gallery_labels, queries, query_labels)
    got, nearest = retrieval_metrics(torch.from_numpy(gallery), torch.from_numpy(gallery_labels),
                                     torch.from_numpy(queries), torch.from_numpy(query_labels), chunk=chunk)
    assert got.keys() == expected.keys()
    for name in expected:
        assert got[name] == pytest.approx(expected[name], abs=1e-6), name
    assert 0.2 < expected["map"] < 0.95 and expected["recall_at_1"] < expected["recall_at_10"]  # not degenerate
    assert (nearest.numpy() == query_labels).mean() == pytest.approx(got["recall_at_1"])


def test_a_query_whose_class_is_absent_from_the_gallery_scores_zero():
    got, _ = retrieval_metrics(torch.eye(3), torch.tensor([0, 0, 1]), torch.eye(3)[[0, 2]], torch.tensor([0, 2]))
    assert got == {"recall_at_1": 0.5, "recall_at_5": 0.5, "recall_at_10": 0.5, "map": 0.5}


class Capture:
    """A strategy that keeps the features it was handed, to recompute the metrics with scikit-learn."""

    __name__ = "capture"

    def __init__(self):
        self.seen = {}

    def capture(self, backbone, data, ctx):
        (Xtr, ytr), (Xva, yva), (Xte, yte) = (ctx.features(s) for s in ("train", "val", "test"))
        self.seen = {"gallery": torch.cat([Xtr, Xva]).numpy(), "gallery_labels": torch.cat([ytr, yva]).numpy(),
                     "queries": Xte.numpy(), "query_labels": yte.numpy()}
        return Predictions(y_true=yte, y_pred=yte)

    @hookimpl
    def benchbone_register_strategies(self, register):
        register("capture", self.capture)


def test_retrieval_strategy_on_real_digits_reaches_the_leaderboard(benchbone_pm, run_tiny_benchmark, tmp_path):
    capture = Capture()
    benchbone_pm.register(capture, name="capture")
    board = run_tiny_benchmark(backbones=["pixels:8"], datasets=["digits"], strategies=["retrieval", "capture"])
    row = board[board.strategy == "retrieval"].iloc[0]
    expected = reference(**capture.seen)
    assert len(capture.seen["queries"]) == 540 and len(capture.seen["gallery"]) == 1257
    for name, value in expected.items():
        assert row[name] == pytest.approx(value, abs=1e-6), name
    assert row["top1"] == pytest.approx(expected["recall_at_1"]) and 0.5 < expected["map"] < 1
    assert np.isnan(board[board.strategy == "capture"].iloc[0]["map"])  # other strategies: "-"
    record = next(json.loads(p.read_text()) for p in (tmp_path / "run" / "records").glob("*.json")
                  if json.loads(p.read_text())["strategy"] == "retrieval")
    assert record["higher_is_better"]["map"] is True and record["strategy_info"]["gallery_size"] == 1257


def test_classification_runs_show_no_retrieval_columns(run_tiny_benchmark):
    board = run_tiny_benchmark(strategies=["knn"])
    assert "map" not in board.attrs["metrics"] and "top1" in board.attrs["metrics"]
