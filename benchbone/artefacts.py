"""Per-cell artefacts (confusion matrix, per-class accuracy, predictions) and the bootstrap interval of a
metric's mean over test items."""
from __future__ import annotations

import io
from pathlib import Path
from typing import Sequence

import numpy as np

from benchbone.records import write_atomic

BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 0
NAMES = {"confusion_csv": "confusion.csv", "per_class_csv": "per_class.csv", "confusion_png": "confusion.png",
         "predictions": "predictions.npz"}


def bootstrap_ci(correct: np.ndarray, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED,
                 level: float = 0.95) -> list[float]:
    """Percentile bootstrap interval of the mean of ``correct`` (a value per test item: 0/1 for top1), resampling items.

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


def why_failed(exc: BaseException) -> str:
    """One line on why an artefact could not be written, naming the package to install when one is missing."""
    if isinstance(exc, ModuleNotFoundError) and exc.name:
        return f"{exc.name} is not installed (pip install {exc.name.split('.')[0]})"
    first = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def write_artefacts(run_dir: Path, cell_id: str, classes: Sequence[str], y_true: np.ndarray, y_pred: np.ndarray,
                    y_score: np.ndarray | None, title: str) -> tuple[dict[str, str], dict[str, str]]:
    """Write a finished cell's artefacts under ``run_dir/artefacts/<cell_id>/``, each atomically.

    Returns their paths relative to ``run_dir`` for ``record["artefacts"]``, and for each artefact that could
    not be written (matplotlib missing, a full disk) one line saying why: an artefact never fails its cell.
    ``predictions.npz`` holds ``y_true``, ``y_pred`` (int64) and ``y_score`` (float32; shape [N, 0] when the
    strategy gave none).
    """
    rel = Path("artefacts") / cell_id
    folder = Path(run_dir) / rel
    classes = [str(c) for c in classes]
    matrix = confusion(y_true, y_pred, len(classes))

    def confusion_csv() -> str:
        import pandas as pd

        return pd.DataFrame(matrix, index=pd.Index(classes, name="true"), columns=classes).to_csv()

    def per_class_csv() -> str:
        import pandas as pd

        support = matrix.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            accuracy = np.where(support > 0, np.diag(matrix) / np.maximum(support, 1), np.nan)
        return pd.DataFrame({"class": classes, "support": support, "accuracy": accuracy}).to_csv(index=False)

    def confusion_png() -> bytes:
        from benchbone.plots import confusion_png as draw

        return draw(matrix, classes, title)

    def predictions() -> bytes:
        buffer = io.BytesIO()
        scores = np.zeros((len(y_true), 0), np.float32) if y_score is None else np.asarray(y_score, np.float32)
        np.savez_compressed(buffer, y_true=np.asarray(y_true, np.int64), y_pred=np.asarray(y_pred, np.int64),
                            y_score=scores)
        return buffer.getvalue()

    written, missing = {}, {}
    for key, make in (("confusion_csv", confusion_csv), ("per_class_csv", per_class_csv),
                      ("confusion_png", confusion_png), ("predictions", predictions)):
        try:
            write_atomic(folder / NAMES[key], make())
        except Exception as exc:  # noqa: BLE001 - a secondary artefact must never destroy the measurement
            missing[key] = why_failed(exc)
        else:
            written[key] = str(rel / NAMES[key])
    return written, missing
