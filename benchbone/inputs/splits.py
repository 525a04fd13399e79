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


def as_labels(values: Any) -> np.ndarray:
    """``values`` as int64 class indices; anything but whole numbers (0.7, "cat", None) is a UsageError, never
    truncated (a float label of 1.7 read as 1 would score as if it were right)."""
    array = np.asarray(values.detach().cpu() if torch.is_tensor(values) else values)
    if array.dtype.kind in "iu":
        return array.astype(np.int64, copy=False)
    if array.dtype.kind == "f" and np.isfinite(array).all() and (array == np.round(array)).all():
        return array.astype(np.int64)
    if array.dtype.kind == "O":  # a list of tensors or Python numbers: each checked
        try:
            return as_labels(np.asarray([v.item() if hasattr(v, "item") else v for v in array.ravel()]))
        except (TypeError, ValueError):
            pass
    bad = next((v for v in array.ravel().tolist() if not (isinstance(v, int) and not isinstance(v, bool))),
               array.ravel()[0] if array.size else None)
    raise UsageError(f"labels must be integers (class indices 0..classes-1), not {bad!r} ({array.dtype})")


def labels_of(dataset: Any) -> np.ndarray:
    """The labels of a split, without decoding images where the dataset exposes them; labels that are not
    whole numbers raise a UsageError (``as_labels``)."""
    if isinstance(dataset, ImageTensorDataset):
        return as_labels(dataset.labels)
    if isinstance(dataset, torch.utils.data.Subset):
        return labels_of(dataset.dataset)[np.asarray(dataset.indices, dtype=np.int64)]
    for attr in ("targets", "labels"):
        values = getattr(dataset, attr, None)
        if values is not None and len(values) == len(dataset):
            return as_labels(values)
    return as_labels([dataset[i][1] for i in range(len(dataset))])


def data_fingerprint(data: Any, data_dir: str | None, name: str) -> str:
    """What a dataset's build read, as a digest: for image files their real paths, sizes, mtimes and labels
    (``ImageFiles.fingerprint``), for images in memory their pixels and labels, else the split's labels with the
    real data directory, the dataset's name and ``info``. A plugin may add ``info["fingerprint"]``, a string that
    stands for its content. Keys cell ids and features, so that other data never get a cell's records."""
    import json
    import os

    from benchbone.digests import array_digest, json_digest

    parts: dict[str, Any] = {"classes": list(data.classes)}
    info = data.info if isinstance(data.info, dict) else {}
    if info.get("fingerprint"):
        parts["plugin"] = str(info["fingerprint"])
    opaque = False
    for source in ("train", "val", "test"):
        split = getattr(data, source, None)
        if split is None:
            continue
        if callable(getattr(split, "fingerprint", None)):  # image files, images in memory, hf: tables
            parts[source] = {"files": split.fingerprint()}
        else:  # contents benchbone cannot see without decoding: where they came from and their labels
            parts[source] = {"labels": array_digest(labels_of(split)), "type": type(split).__qualname__}
            opaque = True
    if opaque:  # the name too (``hf:user/set``): only a fingerprint of contents stands for a prefix dataset's value
        parts["name"] = name
        parts["data_dir"] = os.path.realpath(data_dir) if data_dir else None
        parts["info"] = json.dumps(info, sort_keys=True, default=str)
    return json_digest(parts, length=16)


OVERLAP_BYTES = 256 << 20  # image files read to find copies across splits: only files whose size matches, at most this


def identical_across(train: Any, test: Any) -> int | None:
    """How many ``test`` images are identical to a ``train`` image, or None when it is not looked at.

    Images in memory (``ImageTensorDataset``) are compared by a hash of their pixels; image files by a hash of
    their bytes, read only for the files whose size equals that of a file in the other split (sizes come from
    the fingerprint's stat), at most ``OVERLAP_BYTES`` in all. Other datasets are not looked at."""
    import xxhash

    if isinstance(train, ImageTensorDataset) and isinstance(test, ImageTensorDataset):
        a, b = (np.ascontiguousarray(torch.as_tensor(s.images).numpy()) for s in (train, test))
        if a.shape[1:] != b.shape[1:] or a.dtype != b.dtype:
            return 0
        seen = {xxhash.xxh3_128_digest(row) for row in a.reshape(len(a), -1)}
        return sum(xxhash.xxh3_128_digest(row) in seen for row in b.reshape(len(b), -1))
    sizes = [getattr(s, "sizes", None) for s in (train, test)]
    if not all(callable(f) for f in sizes):
        return None
    train_sizes, test_sizes = sizes[0](), sizes[1]()
    shared = set(train_sizes) & set(test_sizes)
    wanted = [(p, n) for split, listed in ((train, train_sizes), (test, test_sizes))
              for p, n in zip(split.paths, listed) if n in shared]
    if sum(n for _, n in wanted) > OVERLAP_BYTES:
        return None

    def digest(path) -> bytes | None:
        try:
            with open(path, "rb") as f:
                return xxhash.xxh3_128_digest(f.read())
        except OSError:
            return None

    seen = {digest(p) for p, n in zip(train.paths, train_sizes) if n in shared} - {None}
    return sum(digest(p) in seen for p, n in zip(test.paths, test_sizes) if n in shared)


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
