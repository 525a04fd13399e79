"""Per-cell artefacts: confusion matrix, per-class accuracy, predictions; written beside the record."""
from __future__ import annotations

import io
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from benchbone.records import write_atomic

NAMES = {"confusion_csv": "confusion.csv", "per_class_csv": "per_class.csv", "confusion_png": "confusion.png",
         "predictions": "predictions.npz"}


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


def cell_title(record: dict) -> str:
    """``backbone x dataset x strategy (seed N)`` of a record: the confusion PNG's title, and how messages name a cell."""
    return f"{record['backbone']} x {record['dataset']} x {record['strategy']} (seed {record['seed']})"


def missing_lines(record: dict, keys: Iterable[str] | None = None) -> list[str]:
    """One line for each artefact of ``record`` (of ``keys``, default all) that could not be written, and why."""
    missing = record.get("artefacts_missing") or {}
    return [f"{cell_title(record)}: {NAMES[key]} not written: {why}" for key, why in missing.items()
            if keys is None or key in keys]


def write_artefacts(run_dir: Path, cell_id: str, classes: Sequence[str], y_true: np.ndarray, y_pred: np.ndarray,
                    y_score: np.ndarray | None) -> tuple[dict[str, str], dict[str, str]]:
    """Write a finished cell's artefacts under ``run_dir/artefacts/<cell_id>/``, each atomically, but its confusion
    PNG: that one (``DEFERRED``) is drawn by ``write_deferred`` once the leaderboard is out.

    Returns their paths relative to ``run_dir`` for ``record["artefacts"]``, and for each artefact that could
    not be written (a full disk) one line saying why: an artefact never fails its cell.
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

    def predictions() -> bytes:
        buffer = io.BytesIO()
        scores = np.zeros((len(y_true), 0), np.float32) if y_score is None else np.asarray(y_score, np.float32)
        np.savez_compressed(buffer, y_true=np.asarray(y_true, np.int64), y_pred=np.asarray(y_pred, np.int64),
                            y_score=scores)
        return buffer.getvalue()

    return _write(folder, rel, (("confusion_csv", confusion_csv), ("per_class_csv", per_class_csv),
                                ("predictions", predictions)))


def _write(folder: Path, rel: Path, makers) -> tuple[dict[str, str], dict[str, str]]:
    """Each ``(key, make)``'s bytes written atomically to ``folder/NAMES[key]``: (written paths, why the others failed)."""
    written, missing = {}, {}
    for key, make in makers:
        try:
            write_atomic(folder / NAMES[key], make())
        except Exception as exc:  # noqa: BLE001 - a secondary artefact must never destroy the measurement
            missing[key] = why_failed(exc)
        else:
            written[key] = str(rel / NAMES[key])
    return written, missing


DEFERRED = ("confusion_png",)  # drawn after the leaderboard: it needs matplotlib, which nothing before needs


def write_deferred(run_dir: Path, record: dict) -> list[str]:
    """Draw the artefacts that ``record["artefacts_pending"]`` names (the confusion PNG, from the cell's
    confusion.csv) and move each into ``record["artefacts"]`` or ``record["artefacts_missing"]``; return their keys."""
    pending = record.pop("artefacts_pending", None) or []
    rel = Path("artefacts") / record["cell_id"]

    def confusion_png() -> bytes:
        import csv

        from benchbone.reporting.plots import confusion_png as draw

        with open(Path(run_dir) / rel / NAMES["confusion_csv"], newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))[1:]  # the header row repeats the class names
        matrix = np.array([[int(v) for v in row[1:]] for row in rows], dtype=np.int64).reshape(len(rows), len(rows))
        return draw(matrix, [row[0] for row in rows], cell_title(record))

    written, missing = _write(Path(run_dir) / rel, rel, [(key, confusion_png) for key in pending if key in DEFERRED])
    record.setdefault("artefacts", {}).update(written)
    record.setdefault("artefacts_missing", {}).update(missing)
    return list(pending)
