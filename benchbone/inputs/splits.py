"""A split's rows: its labels, the validation carve, exact subsets and per-class subsamples."""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from benchbone.api import ImageTensorDataset
from benchbone.errors import UsageError
from benchbone.inputs.feature_cache import FeatureStore, feature_key
from benchbone.versions import package_version


def labels_of(dataset: Any) -> np.ndarray:
    """The labels of a split, without decoding images where the dataset exposes them."""
    if isinstance(dataset, ImageTensorDataset):
        return np.asarray(dataset.labels, dtype=np.int64)
    if isinstance(dataset, torch.utils.data.Subset):
        return labels_of(dataset.dataset)[np.asarray(dataset.indices, dtype=np.int64)]
    for attr in ("targets", "labels"):
        values = getattr(dataset, attr, None)
        if values is not None and len(values) == len(dataset):
            return np.asarray(values, dtype=np.int64)
    return np.asarray([int(dataset[i][1]) for i in range(len(dataset))], dtype=np.int64)


@dataclass
class SplitView:
    """The rows ``indices`` of a plugin's split ``source`` ("train", "val" or "test")."""

    source: str
    dataset: Any
    indices: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.indices)

    def digest(self) -> str:
        return hashlib.sha256(self.indices.tobytes()).hexdigest()[:16]


def whole(source: str, dataset: Any) -> SplitView:
    labels = labels_of(dataset)
    return SplitView(source, dataset, np.arange(len(labels)), labels)


def carve_validation(view: SplitView, size: float | int, seed: int, option: str = "val_fraction",
                     store: FeatureStore | None = None) -> tuple[SplitView, SplitView]:
    """A seeded validation split carved out of ``view``: ``size`` a fraction of it (float) or a number of images
    (int), stratified by class where every class has two images and both parts can hold every class.

    The carve is scikit-learn's ``train_test_split`` (every published split is its); with ``store`` (a
    ``FeatureStore`` of folder "splits") its positions are kept there, so that a rerun reads them back
    instead of importing scikit-learn."""
    if isinstance(size, float) and not 0 < size < 1:
        raise UsageError(f"val_fraction must lie between 0 and 1, not {size}; use e.g. --set val_fraction=0.1")
    if isinstance(size, int) and not 0 < size < len(view):
        raise UsageError(f"--set {option}={size}: the {view.source} split has {len(view)} images, and a "
                         f"validation carve needs fewer; ask for at most {len(view) - 1}")
    classes, counts = np.unique(view.labels, return_counts=True)
    n_val = size if isinstance(size, int) else math.ceil(size * len(view))
    stratify = bool(counts.min() >= 2 and min(n_val, len(view) - n_val) >= len(classes))
    train_pos, val_pos = _carved_positions(view.labels, size, seed, stratify, store)
    return _rows(view, train_pos), _rows(view, val_pos)


def _carved_positions(labels: np.ndarray, size: float | int, seed: int, stratify: bool,
                      store: FeatureStore | None) -> tuple[np.ndarray, np.ndarray]:
    """``train_test_split`` of the positions of ``labels``, read from ``store`` when it holds the carve of
    exactly these labels, size, seed, stratification and scikit-learn version, else computed (and kept)."""
    labels = np.ascontiguousarray(labels, dtype=np.int64)
    description = None
    if store is not None and store.root is not None:
        description = {"validation_carve": {
            "labels_sha256": hashlib.sha256(labels.tobytes()).hexdigest(), "n": len(labels),
            "size": size, "size_is_count": isinstance(size, int), "seed": seed, "stratify": stratify,
            "scikit-learn": package_version("scikit-learn")}}
        kept = store.load(feature_key(description), description)
        if kept is not None:
            return kept["train"].numpy(), kept["val"].numpy()
    from sklearn.model_selection import train_test_split

    train_pos, val_pos = train_test_split(np.arange(len(labels)), test_size=size, random_state=seed,
                                          stratify=labels if stratify else None)
    if description is not None:
        store.save(feature_key(description), {"train": torch.from_numpy(train_pos), "val": torch.from_numpy(val_pos)},
                   description)
    return train_pos, val_pos


def _rows(view: SplitView, pos: np.ndarray) -> SplitView:
    pos = np.sort(pos)
    return SplitView(view.source, view.dataset, view.indices[pos], view.labels[pos])


def exact_subset(view: SplitView, size: int, seed: int, option: str, store: FeatureStore | None = None) -> SplitView:
    """Exactly ``size`` images of ``view``, seeded, stratified by class as ``carve_validation`` is (VTAB-1k's
    800 training and 200 validation images: ``--set train_size=800 val_size=200``)."""
    if size > len(view):
        raise UsageError(f"--set {option}={size}: the {view.source} split has only {len(view)} images"
                         f"{' after the validation carve' if option == 'train_size' else ''}; ask for at most "
                         f"{len(view)}")
    if size == len(view):
        return view
    _, kept = carve_validation(view, size, seed, option, store)
    return kept


def subsample(view: SplitView, *, per_class: int | None, fraction: float | None, seed: int,
              option: str = "train_per_class") -> SplitView:
    """A seeded subset of ``view``: ``per_class`` images of every class (few-shot) or ``fraction`` of each class.

    ``grid.expand`` has checked the values (one of them, a positive int or a fraction in (0, 1]).
    """
    if per_class is None and fraction is None:
        return view
    rng = np.random.default_rng([seed, 1])  # a stream of its own, apart from the validation carve
    picked = []
    for label in np.unique(view.labels):
        pos = np.flatnonzero(view.labels == label)
        k = per_class if per_class is not None else max(1, math.floor(fraction * len(pos) + 0.5))
        if k > len(pos):
            raise UsageError(f"--set {option}={per_class}: class {label} has only {len(pos)} {view.source} "
                             f"images (after any validation split); ask for at most {len(pos)}")
        picked.append(rng.choice(pos, size=k, replace=False))
    pos = np.sort(np.concatenate(picked))
    return SplitView(view.source, view.dataset, view.indices[pos], view.labels[pos])
