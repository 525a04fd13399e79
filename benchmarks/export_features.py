"""A benchmark-only plugin: strategy ``export-features`` saves a cell's train/val/test features as .npy files.

Load it with ``--plugin benchmarks/export_features.py`` and ``--set export-features.to=DIR``: the features come
through ``ctx.features`` (benchbone's extraction and cache), whatever the cache's file format. Its predictions are
the nearest class mean of the training features, so the cell is a real (if simple) classifier.
"""
from __future__ import annotations

from pathlib import Path

from benchbone import Predictions, UsageError, hookimpl


def export_features(backbone, data, ctx) -> Predictions:
    import numpy as np
    import torch

    if not ctx.params["to"]:
        raise UsageError("export-features: give the folder to write to, --set export-features.to=DIR")
    folder = Path(ctx.params["to"])
    folder.mkdir(parents=True, exist_ok=True)
    for split in ("train", "val", "test"):
        X, y = ctx.features(split)
        np.save(folder / f"{split}_features.npy", X.numpy())
        np.save(folder / f"{split}_labels.npy", y.numpy())
    X, y = ctx.features("train")
    centroids = torch.stack([X[y == k].mean(0) for k in range(ctx.num_classes)])
    Xt, yt = ctx.features("test")
    scores = torch.softmax(-torch.cdist(Xt, centroids), dim=1)
    return Predictions(y_true=yt, y_pred=scores.argmax(1), y_score=scores)


def read_exported(folder: Path) -> dict:
    """``{split: (X, y)}`` as torch tensors from what ``export-features`` wrote to ``folder``."""
    import numpy as np
    import torch

    return {split: (torch.from_numpy(np.load(folder / f"{split}_features.npy")),
                    torch.from_numpy(np.load(folder / f"{split}_labels.npy")))
            for split in ("train", "val", "test")}


@hookimpl
def benchbone_register_strategies(register):
    register("export-features", export_features, to="")
