"""One cell into its record: data views, the strategy's call through ``Context``, checked predictions, metrics."""
from __future__ import annotations

import datetime as dt
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from benchbone.api import Cell, DatasetSplits, Predictions
from benchbone.errors import PluginError
from benchbone.execution.artefacts import DEFERRED, write_artefacts
from benchbone.execution.provenance import base_record
from benchbone.execution.session import Session, seed_everything
from benchbone.registry import Reading, read_only
from benchbone.reporting.bootstrap import bootstrap_ci

if TYPE_CHECKING:
    from benchbone.inputs.feature_cache import FeatureStore


def resolved_splits(data: DatasetSplits, views: dict) -> DatasetSplits:
    """The splits a strategy sees: train and val as carved for this seed, test as subsampled."""
    from torch.utils.data import Subset

    train = Subset(data.train, views["train"].indices.tolist())
    val = data.val if data.val is not None else Subset(data.train, views["val"].indices.tolist())
    test = data.test if len(views["test"]) == len(data.test) else Subset(data.test, views["test"].indices.tolist())
    return DatasetSplits(train, test, data.classes, val, dict(data.info))


def _as_numpy(values: Any) -> np.ndarray:
    if hasattr(values, "detach"):
        values = values.detach().cpu().float().numpy() if values.is_floating_point() else values.detach().cpu().numpy()
    return np.asarray(values)


def checked_predictions(cell: Cell, predictions: Predictions, num_classes: int, n_test: int, truth=None):
    """``(y_true, y_pred, y_score or None)`` as numpy arrays of the harness's own (copies, never the strategy's), after
    checking their shapes, and that ``y_true`` is the test split's labels (``truth``) in its order (paired statistics compare
    item by item); read-only, since every metric, the bootstrap and the artefacts read the same arrays."""
    if not isinstance(predictions, Predictions):
        raise PluginError(f"strategy {cell.strategy!r} returned {type(predictions).__name__}, not Predictions")
    y_true, y_pred = _as_numpy(predictions.y_true).astype(np.int64), _as_numpy(predictions.y_pred).astype(np.int64)
    y_score = None if predictions.y_score is None else _as_numpy(predictions.y_score).astype(np.float64)
    if y_score is not None and not np.isfinite(y_score).all():
        raise PluginError(f"strategy {cell.strategy!r} diverged: {int((~np.isfinite(y_score)).sum())} of its "
                          f"test scores are NaN or infinite")
    if len(y_true) != n_test or len(y_pred) != n_test:
        raise PluginError(f"strategy {cell.strategy!r} returned {len(y_pred)} predictions for {n_test} test images")
    for name, labels in (("y_true", y_true), ("y_pred", y_pred)):  # before any metric or artefact reads them
        outside = (labels < 0) | (labels >= num_classes)
        if outside.any():
            raise PluginError(f"strategy {cell.strategy!r} returned {name} with {int(outside.sum())} label(s) outside "
                              f"0..{num_classes - 1} (e.g. {labels[outside][0]}); labels are class indices")
    if truth is not None and not np.array_equal(y_true, truth := np.asarray(truth)):
        wrong = np.flatnonzero(y_true != truth)
        raise PluginError(f"strategy {cell.strategy!r} returned y_true that differs from the test split's labels at "
                          f"{len(wrong)} of {n_test} items (first: item {wrong[0]}, {y_true[wrong[0]]} for "
                          f"{truth[wrong[0]]}); predictions follow the test split's order, item by item")
    if y_score is not None and y_score.shape != (n_test, num_classes):
        raise PluginError(f"strategy {cell.strategy!r} returned y_score of shape {y_score.shape}, "
                          f"expected ({n_test}, {num_classes})")
    return read_only(y_true), read_only(y_pred), read_only(y_score)


def score(cell: Cell, registries, y_true: np.ndarray, y_pred: np.ndarray, y_score: np.ndarray | None) -> dict[str, float]:
    """Every metric of the cell on the strategy's checked test predictions."""
    reading = Reading({"y_true": y_true, "y_pred": y_pred, "y_score": y_score}, keep=True)
    return {name: float(reading.call("metric", (entry := registries.metrics.get(name)).plugin, entry.obj))
            for name in cell.metrics}


def intervals(cell: Cell, registries, y_true: np.ndarray, y_pred: np.ndarray, y_score: np.ndarray | None) -> dict:
    """The 95% bootstrap interval over test items of each metric of the cell that has per-item values
    (``register(..., per_item=fn)``: top1, top5, nll) where they are all finite."""
    out, reading = {}, Reading({"y_true": y_true, "y_pred": y_pred, "y_score": y_score}, keep=True)
    for name in cell.metrics:
        per_item = registries.metrics.get(name).meta.get("per_item")
        if per_item is None or (registries.metrics.get(name).meta.get("needs_scores") and y_score is None):
            continue
        values = np.asarray(reading.call("metric", registries.metrics.get(name).plugin, per_item), dtype=np.float64)
        if len(values) == len(y_true) and np.isfinite(values).all():
            out[name] = bootstrap_ci(values)
    return out


def measured(cell: Cell, registries, predictions: Predictions) -> dict[str, float]:
    """The registered metrics the strategy measured itself (``Predictions.metrics``), checked."""
    out = {}
    for name, value in (predictions.metrics or {}).items():
        if name not in registries.metrics:
            raise PluginError(f"strategy {cell.strategy!r} measured {name!r}, which no plugin registered as a metric")
        out[registries.metrics.get(name).name] = float(value)
    return out


def _reset_peak_memory(device: str) -> None:
    import torch

    if str(device).startswith("cuda"):
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory(device: str) -> dict:
    """``peak_mem_mb`` and what it means: the cell's peak CUDA allocation, or on other devices the peak
    resident memory of the whole process so far (it never goes down, so later cells show at least as much)."""
    import torch

    if str(device).startswith("cuda"):
        return {"peak_mem_mb": round(torch.cuda.max_memory_allocated(device) / 2**20, 1),
                "peak_mem_kind": "cuda max_memory_allocated of this cell"}
    import resource

    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    mb = kb / 2**20 if sys.platform == "darwin" else kb / 2**10
    return {"peak_mem_mb": round(mb, 1), "peak_mem_kind": "process peak RSS so far"}


def feature_timings(extraction: dict[str, dict]) -> dict:
    """Extraction seconds and images/s of the features a cell used, as measured when they were extracted
    (also when this cell read them from the cache); empty when the strategy used no cached features."""
    timed = list({e["source"]: e for e in extraction.values() if e.get("seconds")}.values())  # train and val share one
    if not timed:
        return {}
    images, seconds = sum(e["images"] for e in timed), sum(e["seconds"] for e in timed)
    return {"features_s": seconds, "features_images_per_s": images / seconds}


def work_dir(run_dir: Path, cell: Cell) -> Path:
    """The scratch directory of ``cell`` in ``run_dir`` (``ctx.workdir``)."""
    return Path(run_dir) / "work" / cell.id


def split_views(cell: Cell, data: DatasetSplits, store: FeatureStore | None = None) -> dict:
    """The rows of each split that ``cell`` uses: the validation carve (``val_fraction``, or exactly
    ``val_size`` images), the training subset (``train_per_class``, ``train_fraction`` or exactly
    ``train_size``) and the test subset (``test_per_class``). Impossible sizes raise UsageError.
    ``store`` keeps the carves (``Session.splits``)."""
    from benchbone.inputs.splits import carve_validation, exact_subset, subsample, whole

    options = dict(cell.options)
    val_size, train_size = options.get("val_size"), options.get("train_size")
    views = {"train": whole("train", data.train), "test": whole("test", data.test)}
    if data.val is None:
        views["train"], views["val"] = carve_validation(views["train"], val_size or options["val_fraction"],
                                                        cell.seed, "val_size" if val_size else "val_fraction", store)
    else:
        views["val"] = whole("val", data.val)
        if val_size:
            views["val"] = exact_subset(views["val"], val_size, cell.seed, "val_size", store)
    views["train"] = subsample(views["train"], per_class=options["train_per_class"],
                               fraction=options["train_fraction"], seed=cell.seed)
    if train_size:
        views["train"] = exact_subset(views["train"], train_size, cell.seed, "train_size", store)
    views["test"] = subsample(views["test"], per_class=options.get("test_per_class"), fraction=None, seed=0,
                              option="test_per_class")  # seed 0: every seed and backbone scores the same images
    return views


def check_cells_against_data(cells: list[Cell], session: Session) -> None:
    """Before the first cell: every cell's splits can be drawn, and what its strategy asks of the training
    labels (``fn.check_train_labels(params, {class name: images})``, e.g. linear-probe's shots) holds."""
    from benchbone.inputs.feature_cache import FeatureStore

    kept = FeatureStore(session.splits.root, folder="splits")
    kept.writable = False  # carves already kept are read; none is written before the input is known to be sound
    drawn: dict[tuple, dict] = {}
    for cell in cells:
        key = (cell.dataset, cell.data_dir, cell.dataset_params, cell.seed, cell.options)
        if key not in drawn:
            data = session.dataset(cell.dataset, cell.data_dir, cell.dataset_params)
            labels = split_views(cell, data, kept)["train"].labels
            drawn[key] = {name: int((labels == k).sum()) for k, name in enumerate(data.classes)}
        check = getattr(session.registries.strategies.get(cell.strategy).obj, "check_train_labels", None)
        if callable(check):
            check(dict(cell.params), drawn[key])


def run_cell(cell: Cell, session: Session, run_dir: Path) -> dict:
    """Run one cell and return its record (status "ok"); plugin failures propagate to the caller."""
    from benchbone.execution.context import Context
    from benchbone.inputs.corruptions import Corruption
    from benchbone.inputs.extraction import ExtractionSettings
    from benchbone.inputs.transforms import Augmentation, Preprocess

    registries = session.registries
    options = dict(cell.options)
    started = dt.datetime.now(dt.timezone.utc)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    data = session.dataset(cell.dataset, cell.data_dir, cell.dataset_params)
    timings["data_s"] = time.perf_counter() - t0

    t = time.perf_counter()
    backbone = session.backbone(cell)
    timings["build_s"] = time.perf_counter() - t

    views = split_views(cell, data, session.splits)
    strategy = registries.strategies.get(cell.strategy)
    preprocess = Preprocess.for_backbone(backbone, options["image_size"], options.get("native_size", False))
    efficiency = session.efficiency(backbone, preprocess.size)
    identity = {
        "backbone": cell.backbone, "weights": backbone.weights or ("pretrained" if cell.pretrained else "random"),
        "init_seed": None if cell.pretrained else cell.seed, "dataset": cell.dataset_key, "data_dir": session.feature_data_key(cell),
        "state_sha256": session.backbone_digest,
        **({"dataset_params": dict(cell.dataset_params)} if cell.dataset_params else {}),
        **({"layer": cell.layer} if cell.layer else {}),
    }
    ctx = Context(
        device=session.device, seed=cell.seed, params=dict(cell.params), classes=list(data.classes),
        backbone=backbone, views=views,
        images=lambda source: session.images(cell.dataset, cell.data_dir, source, cell.dataset_params),
        preprocess=preprocess, feature_identity=identity, store=session.store, memory=session._features,
        extraction=ExtractionSettings(session.device, options["batch_size"], options["precision"],
                                      options["channels_last"], options["compile"]),
        progress=session.progress, workdir=work_dir(run_dir, cell),
        augmentation=Augmentation.declared_by(cell.dataset, registries.datasets.get(cell.dataset).meta.get("augment")),
        corruption=Corruption(*cell.corruption) if cell.corruption else None,
    )
    seed_everything(cell.seed)
    _reset_peak_memory(session.device)
    t = time.perf_counter()
    predictions = strategy.obj(backbone, resolved_splits(data, views), ctx)
    timings["strategy_s"] = time.perf_counter() - t
    timings.update(feature_timings(ctx.extraction))
    y_true, y_pred, y_score = checked_predictions(cell, predictions, len(data.classes), len(views["test"]),
                                                   views["test"].labels)
    metrics = {**score(cell, registries, y_true, y_pred, y_score), **measured(cell, registries, predictions)}
    t = time.perf_counter()
    artefacts, missing = write_artefacts(run_dir, cell.id, data.classes, y_true, y_pred, y_score)
    timings["artefacts_s"] = time.perf_counter() - t
    timings["total_s"] = time.perf_counter() - t0

    record = base_record(cell, session, extra_metrics=[m for m in metrics if m not in cell.metrics])
    return {
        **record,
        "status": "ok",
        "metrics": metrics,
        "ci": intervals(cell, registries, y_true, y_pred, y_score),
        "artefacts": artefacts,
        "artefacts_missing": missing,
        "artefacts_pending": list(DEFERRED),  # drawn once the leaderboard is out (``runner.run_cells``)
        "timings": {k: round(v, 4) for k, v in timings.items()},
        "features": ctx.extraction,
        "resources": peak_memory(session.device),
        "backbone_info": {
            "input_size": list(preprocess.size), "weights": identity["weights"],
            "preprocess": preprocess.describe(), **efficiency,
            "plugin_info": dict(backbone.info),  # under its own key: it never replaces the harness's fields
        },
        "data": {"train": len(views["train"]), "val": len(views["val"]), "test": len(views["test"]),
                 "num_classes": len(data.classes), "val_carved": data.val is None,
                 "train_per_class": options["train_per_class"], "train_fraction": options["train_fraction"],
                 "test_per_class": options.get("test_per_class"),
                 **{name: options[name] for name in ("train_size", "val_size") if options.get(name)},
                 "indices_digest": {split: view.digest() for split, view in views.items()},
                 "plugin_info": dict(data.info)},
        "strategy_info": {**ctx.info, **predictions.info},
        "started_at": started.isoformat(timespec="seconds"),
        "finished_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }


def run_cell_hooked(cell: Cell, session: Session, run_dir: Path) -> dict:
    """``run_cell`` as the answer of ``benchbone_run_cell``, so that its wrappers (``cell_timing``) wrap it."""

    def harness_runner(cell: Cell, run_dir: Path) -> dict:
        return run_cell(cell, session, run_dir)

    return session.pm.hook.benchbone_run_cell.call_extra([harness_runner], {"cell": cell, "run_dir": Path(run_dir)})
