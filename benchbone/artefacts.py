"""Per-cell artefacts (confusion matrix, per-class accuracy, predictions) and the bootstrap interval of top1."""
from __future__ import annotations

import io
from pathlib import Path
from typing import Sequence

import numpy as np

from benchbone.records import atomic_path, write_atomic

BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 0
NAMES = {"confusion_csv": "confusion.csv", "per_class_csv": "per_class.csv", "confusion_png": "confusion.png",
         "predictions": "predictions.npz"}


def bootstrap_ci(correct: np.ndarray, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED,
                 level: float = 0.95) -> list[float]:
    """Percentile bootstrap interval of the mean of ``correct`` (0/1 per test item), resampling items.

    Resampled in chunks so that memory stays below ~100 MB whatever the test size.
    """
    correct = np.asarray(correct, dtype=np.float64)
    if len(correct) == 0:
        return [float("nan"), float("nan")]
    rng = np.random.default_rng(seed)
    chunk = max(1, 10_000_000 // len(correct))
    means = np.concatenate([
        correct[rng.integers(0, len(correct), size=(min(chunk, resamples - done), len(correct)))].mean(axis=1)
        for done in range(0, resamples, chunk)])
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return [float(low), float(high)]


def confusion(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts [true class, predicted class]."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (y_true, y_pred), 1)
    return matrix


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see ``records.atomic_path``)."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_artefacts(run_dir: Path, cell_id: str, classes: Sequence[str], y_true: np.ndarray, y_pred: np.ndarray,
                    y_score: np.ndarray | None, title: str) -> dict[str, str]:
    """Write a finished cell's artefacts under ``run_dir/artefacts/<cell_id>/``, each atomically.

    Returns their paths relative to ``run_dir`` for ``record["artefacts"]``. ``predictions.npz`` holds
    ``y_true``, ``y_pred`` (int64) and ``y_score`` (float32; shape [N, 0] when the strategy gave none).
    """
    import pandas as pd

    from benchbone.plots import confusion_png

    rel = Path("artefacts") / cell_id
    folder = Path(run_dir) / rel
    classes = [str(c) for c in classes]
    matrix = confusion(y_true, y_pred, len(classes))
    frame = pd.DataFrame(matrix, index=pd.Index(classes, name="true"), columns=classes)
    write_atomic(folder / NAMES["confusion_csv"], frame.to_csv())
    support = matrix.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        accuracy = np.where(support > 0, np.diag(matrix) / np.maximum(support, 1), np.nan)
    per_class = pd.DataFrame({"class": classes, "support": support, "accuracy": accuracy})
    write_atomic(folder / NAMES["per_class_csv"], per_class.to_csv(index=False))
    write_bytes_atomic(folder / NAMES["confusion_png"], confusion_png(matrix, classes, title))
    buffer = io.BytesIO()
    scores = np.zeros((len(y_true), 0), np.float32) if y_score is None else np.asarray(y_score, np.float32)
    np.savez_compressed(buffer, y_true=np.asarray(y_true, np.int64), y_pred=np.asarray(y_pred, np.int64),
                        y_score=scores)
    write_bytes_atomic(folder / NAMES["predictions"], buffer.getvalue())
    return {key: str(rel / name) for key, name in NAMES.items()}
