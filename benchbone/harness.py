"""Cells into records: build the backbone and data, call the strategy, score it, write the record."""
from __future__ import annotations

import contextlib
import datetime as dt
import functools
import os
import platform
import random
import shutil
import sys
import time
import traceback
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np

from benchbone.api import Backbone, DatasetSplits, Predictions
from benchbone.artefacts import NAMES, bootstrap_ci, why_failed, write_artefacts
from benchbone.errors import BenchboneError, PluginError, UsageError
from benchbone.grid import Cell
from benchbone.plugins import PluginManager, announce_record, warn_load_problems
from benchbone.records import OUT_OF_SPACE, check_run_dir, finished_record, remove_stale_tmp, write_record

DEFAULT_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "benchbone"


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for dist in ("benchbone", "torch", "torchvision", "timm", "numpy", "scikit-learn", "pluggy"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            pass
    return out


@functools.lru_cache(maxsize=1)
def git_commit() -> str | None:
    """The commit of the benchbone source tree when it is a git checkout, else None."""
    import subprocess

    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent,
                             capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return (out.stdout.strip() or None) if out.returncode == 0 else None


class Session:
    """Shared state of one run: plugins, device, caches of built datasets, backbones and features."""

    def __init__(
        self,
        pm: PluginManager,
        *,
        device: str | None = None,
        cache_dir: str | Path | None = None,
        download: bool = True,
        quiet: bool = False,
        command: str | None = None,
    ):
        from benchbone.features import FeatureStore

        self.pm = pm
        self.registries = pm.registries()
        self.device = pm.hook.benchbone_pick_device(requested=device)
        cache = cache_dir if cache_dir is not None else os.environ.get("BENCHBONE_CACHE_DIR", DEFAULT_CACHE)
        self.store = FeatureStore(Path(cache) if str(cache) else None)
        for folder in ("features", "images", "efficiency") if self.store.root else ():
            remove_stale_tmp(self.store.root / folder)  # what killed writers left
        self.download = download
        self.quiet = quiet
        self.command = command  # the command line that started the run, written into every record
        self._datasets: dict[tuple, DatasetSplits] = {}
        self._images: dict[tuple, Any] = {}
        self._backbone: tuple[tuple, Backbone] | None = None
        self.backbone_digest: str | None = None  # of the last built backbone's parameters and buffers
        self._features: dict = {}
        self._efficiency: dict[tuple, dict] = {}

    def progress(self, iterable, desc: str, total: int | None = None):
        from tqdm.auto import tqdm

        return tqdm(iterable, desc=desc, total=total, disable=self.quiet, leave=False, file=sys.stderr)

    def dataset(self, name: str, data_dir: str | None, params: tuple = ()) -> DatasetSplits:
        """Build a dataset once per run; bad or missing data raise UsageError before any cell runs.

        ``params`` are the dataset's declared parameters (``register(..., params={...})``) after ``--set``."""
        from benchbone.data import Augmentation

        key = (name, data_dir, params)
        if key not in self._datasets:
            entry = self.registries.datasets.get(name)
            data = entry.obj(data_dir=Path(data_dir) if data_dir else None, download=self.download, **dict(params))
            if not isinstance(data, DatasetSplits):
                raise PluginError(f"dataset {name!r} (plugin {entry.plugin}) returned {type(data).__name__}, not DatasetSplits")
            check_splits(name, data)
            Augmentation.declared_by(name, entry.meta.get("augment"))  # a bad declaration fails before any cell
            self._datasets[key] = data
        return self._datasets[key]

    def images(self, dataset: str, data_dir: str | None, source: str, params: tuple = ()):
        from benchbone.data import LoadedImages

        key = (dataset, data_dir, source, params)
        if key not in self._images:
            self._images[key] = LoadedImages(getattr(self.dataset(dataset, data_dir, params), source), self.store.root)
        return self._images[key]

    def backbone(self, cell: Cell) -> Backbone:
        """Build a backbone, keeping the last one for the next cells that share it."""
        key = (cell.backbone, cell.pretrained, None if cell.pretrained else cell.seed, cell.weights_sha256, cell.layer)
        if self._backbone is None or self._backbone[0] != key:
            self._backbone = None
            entry = self.registries.backbones.get(cell.backbone)
            seed_everything(cell.seed)
            backbone = entry.obj(pretrained=cell.pretrained and not cell.weights, **({"layer": cell.layer} if cell.layer else {}))
            if not isinstance(backbone, Backbone):
                raise PluginError(f"backbone {cell.backbone!r} (plugin {entry.plugin}) returned "
                                  f"{type(backbone).__name__}, not Backbone")
            if cell.weights:
                from benchbone.weights import CLASSIFIER_PREFIXES, load_backbone_weights, load_state_dict_file

                classifier = backbone.info.get("classifier") or CLASSIFIER_PREFIXES
                load_backbone_weights(backbone.model, load_state_dict_file(cell.weights), classifier)
                backbone.weights = f"file:{Path(cell.weights).name}@sha256:{cell.weights_sha256}"
            backbone.model.eval()
            from benchbone.features import state_digest

            self.backbone_digest = state_digest(backbone.model)  # keys its features: changed weights, new features
            self._backbone = (key, backbone)
        return self._backbone[1]

    def efficiency(self, backbone: Backbone, size: tuple[int, int]) -> dict:
        """Parameters, GMACs at ``size`` and feature dimension, measured once per backbone and size."""
        from benchbone.efficiency import describe

        key = (self._backbone[0] if self._backbone else id(backbone), tuple(size))
        if key not in self._efficiency:  # on the run's device, where the model goes next anyway
            kept = self._kept_efficiency(backbone, size)
            if kept is None:
                kept = describe(backbone.model.to(self.device), size, backbone.num_features)
                self._kept_efficiency(backbone, size, kept)
            self._efficiency[key] = kept
        return self._efficiency[key]

    def _kept_efficiency(self, backbone: Backbone, size: tuple[int, int], measured: dict | None = None) -> dict | None:
        """Read (or with ``measured``, keep) a backbone's efficiency in the cache, keyed as its features are (the
        digest of its state): counting GMACs imports torch's tracing machinery, a second or more at start."""
        import hashlib
        import json

        if self.store.root is None or self.backbone_digest is None:
            return None
        described = json.dumps({"state_sha256": self.backbone_digest, "size": list(size),
                                "num_features": backbone.num_features, "torch": versions().get("torch")}, sort_keys=True)
        path = self.store.root / "efficiency" / f"{hashlib.sha256(described.encode()).hexdigest()[:32]}.json"
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):  # absent or damaged: measured again
            if measured is None:
                kept = json.loads(path.read_text(encoding="utf-8"))
                return dict(kept["efficiency"]) if kept["key"] == described else None
            if self.store.writable:
                from benchbone.records import atomic_path

                with atomic_path(path) as tmp:
                    tmp.write_text(json.dumps({"key": described, "efficiency": measured}), encoding="utf-8")
        return None


def check_splits(name: str, data: DatasetSplits) -> None:
    """A dataset needs at least two classes and non-empty train and test splits."""
    if len(data.classes) < 2:
        raise UsageError(f"dataset {name!r} has {len(data.classes)} class(es); classification needs at least two")
    for split in ("train", "test"):
        if getattr(data, split) is None or len(getattr(data, split)) == 0:
            raise UsageError(f"dataset {name!r} has an empty {split} split; check its data directory")
    if data.val is not None and len(data.val) == 0:
        raise UsageError(f"dataset {name!r} has an empty val split; remove it or add images")
    from benchbone.data import as_uint8_chw

    for split in ("train", "val", "test"):  # the first image of each split decodes (a cheap look before any cell)
        if getattr(data, split) is not None:
            as_uint8_chw(getattr(data, split)[0][0])


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


def checked_predictions(cell: Cell, predictions: Predictions, num_classes: int, n_test: int):
    """``(y_true, y_pred, y_score or None)`` as numpy arrays, after checking their shapes."""
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
    if y_score is not None and y_score.shape != (n_test, num_classes):
        raise PluginError(f"strategy {cell.strategy!r} returned y_score of shape {y_score.shape}, "
                          f"expected ({n_test}, {num_classes})")
    return y_true, y_pred, y_score


def score(cell: Cell, registries, y_true: np.ndarray, y_pred: np.ndarray, y_score: np.ndarray | None) -> dict[str, float]:
    """Every metric of the cell on the strategy's checked test predictions."""
    return {name: float(registries.metrics.get(name).obj(y_true, y_pred, y_score)) for name in cell.metrics}


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


def remove_work_dir(run_dir: Path, cell: Cell) -> None:
    """Remove a finished cell's scratch directory, and ``work/`` once it is empty."""
    shutil.rmtree(work_dir(run_dir, cell), ignore_errors=True)
    with contextlib.suppress(OSError):
        (Path(run_dir) / "work").rmdir()


def run_cell(cell: Cell, session: Session, run_dir: Path) -> dict:
    """Run one cell and return its record (status "ok"); plugin failures propagate to the caller."""
    from benchbone.context import Context
    from benchbone.corruptions import Corruption
    from benchbone.features import ExtractionSettings
    from benchbone.data import Augmentation, Preprocess, carve_validation, subsample, whole

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

    views = {"train": whole("train", data.train), "test": whole("test", data.test)}
    if data.val is None:
        views["train"], views["val"] = carve_validation(views["train"], options["val_fraction"], cell.seed)
    else:
        views["val"] = whole("val", data.val)
    views["train"] = subsample(views["train"], per_class=options["train_per_class"],
                               fraction=options["train_fraction"], seed=cell.seed)
    views["test"] = subsample(views["test"], per_class=options.get("test_per_class"), fraction=None, seed=0,
                              option="test_per_class")  # seed 0: every seed and backbone scores the same images
    strategy = registries.strategies.get(cell.strategy)
    preprocess = Preprocess.for_backbone(backbone, options["image_size"])
    efficiency = session.efficiency(backbone, preprocess.size)
    identity = {
        "backbone": cell.backbone, "weights": backbone.weights or ("pretrained" if cell.pretrained else "random"),
        "init_seed": None if cell.pretrained else cell.seed, "dataset": cell.dataset, "data_dir": cell.data_dir,
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
    y_true, y_pred, y_score = checked_predictions(cell, predictions, len(data.classes), len(views["test"]))
    metrics = {**score(cell, registries, y_true, y_pred, y_score), **measured(cell, registries, predictions)}
    t = time.perf_counter()
    artefacts, missing = write_artefacts(run_dir, cell.id, data.classes, y_true, y_pred, y_score,
                                f"{cell.backbone_label} x {cell.dataset_label} x {cell.strategy} (seed {cell.seed})")
    timings["artefacts_s"] = time.perf_counter() - t
    timings["total_s"] = time.perf_counter() - t0

    record = base_record(cell, session, extra_metrics=[m for m in metrics if m not in cell.metrics])
    return {
        **record,
        "status": "ok",
        "metrics": metrics,
        "ci": {"top1": bootstrap_ci(y_true == y_pred)},
        "artefacts": artefacts,
        "artefacts_missing": missing,
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
                 "indices_digest": {split: view.digest() for split, view in views.items()},
                 "plugin_info": dict(data.info)},
        "strategy_info": {**ctx.info, **predictions.info},
        "started_at": started.isoformat(timespec="seconds"),
        "finished_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }


def base_record(cell: Cell, session: Session, extra_metrics: list[str] = ()) -> dict:
    """The part of a record known before the cell runs: what it is, where and with what
    (and the direction of ``extra_metrics``, those the strategy measured beyond the cell's)."""
    from benchbone.corruptions import Corruption
    from benchbone.records import SCHEMA

    regs = session.registries
    names = [*cell.metrics, *extra_metrics]
    plugins = {"backbone": regs.backbones.get(cell.backbone).plugin, "dataset": regs.datasets.get(cell.dataset).plugin,
               "strategy": regs.strategies.get(cell.strategy).plugin}
    return {
        "schema": SCHEMA,
        "cell_id": cell.id,
        "cell": cell.to_json(),
        "backbone": cell.backbone_label,
        "dataset": cell.dataset_label,
        **({"corruption": Corruption(*cell.corruption).describe()} if cell.corruption else {}),
        "strategy": cell.strategy,
        "seed": cell.seed,
        "params": dict(cell.params),
        "options": dict(cell.options),
        "higher_is_better": {m: bool(regs.metrics.get(m).meta.get("higher_is_better", True)) for m in names},
        "percent": {m: bool(regs.metrics.get(m).meta.get("percent", False)) for m in names},
        "plugins": {kind: {"name": name, "version": session.pm.versions.get(name, "unknown")}
                    for kind, name in plugins.items()},
        "command": session.command,
        "device": session.device,
        "host": platform.node(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cpus",
        "versions": versions(),
        "git_commit": git_commit(),
    }


def failed_record(cell: Cell, session: Session, exc: BaseException) -> dict:
    return {
        **base_record(cell, session),
        "status": "failed",
        "error": f"{type(exc).__name__}: {exc}",
        "traceback": traceback.format_exc(limit=20),
        "metrics": {},
        "finished_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }


def run_cells(
    cells: list[Cell],
    session: Session,
    run_dir: Path,
    *,
    fail_fast: bool = False,
    on_record: Callable[[dict, str], None] | None = None,
) -> list[dict]:
    """Run each cell not yet finished in ``run_dir``; a usage error stops the run, other errors fail one cell.

    Every dataset is built before the first cell, so bad data fails before anything is written. A cell's
    scratch directory (``ctx.workdir``) is removed after its "ok" record and kept after a failure, to resume from.
    Under torchrun only rank 0 writes; the other ranks return their records unwritten.
    """
    for key in {(c.dataset, c.data_dir, c.dataset_params) for c in cells}:
        session.dataset(*key)  # built once per session: cheap when run_grid already did
    for folder in (Path(run_dir), Path(run_dir) / "records"):
        remove_stale_tmp(folder)  # what a killed run left
    writer = int(os.environ.get("RANK", "0")) == 0
    records = []
    for cell in cells:
        done = finished_record(run_dir, cell.id)
        if done is not None:
            records.append(done)
            if on_record:
                on_record(done, "cached")
            continue
        try:
            record = run_cell(cell, session, run_dir)
        except (UsageError, KeyboardInterrupt):
            raise
        except Exception as exc:  # a plugin may fail in any way: record it and go on
            if isinstance(exc, OSError) and exc.errno in OUT_OF_SPACE:  # but a full disk fails every cell: stop
                raise UsageError(f"{exc.strerror} while running cell {cell.id}"
                                 f"{f' (writing {exc.filename})' if exc.filename else ''}; free space there or "
                                 f"under {run_dir}, then run the same command to resume") from None
            done = finished_record(run_dir, cell.id)
            if done is not None:  # a run sharing run_dir finished this cell meanwhile: keep its record
                remove_work_dir(run_dir, cell)
                records.append(done)
                if on_record:
                    on_record(done, "cached")
                continue
            record = failed_record(cell, session, exc)
            if writer:
                announce_record(session.pm, write_record(run_dir, record), run_dir)
            records.append(record)
            if on_record:
                on_record(record, "failed")
            if fail_fast:
                raise BenchboneError(f"cell {cell.backbone_label} x {cell.dataset_label} x {cell.strategy} "
                                     f"(seed {cell.seed}) failed: {record['error']}") from exc
            continue
        if writer:
            announce_record(session.pm, write_record(run_dir, record), run_dir)
            remove_work_dir(run_dir, cell)
        records.append(record)
        if on_record:
            on_record(record, "ok")
    return records


def run_spec(spec: dict) -> dict:
    """Run the cell of a spec (see ``benchbone.executors.write_spec``) in its run directory; return its record.

    What ``benchbone run-cell SPEC.json`` and every executor's worker call: the same path as a local run.
    """
    from benchbone.names_index import narrow
    from benchbone.plugins import get_plugin_manager

    pm = get_plugin_manager(**spec["plugins"])
    narrow(pm, "backbones", [spec["cell"]["backbone"]], spec["cache_dir"] or None)  # only this backbone's plugin
    session = Session(pm, device=spec["device"], cache_dir=spec["cache_dir"], download=spec["download"], quiet=True,
                      command=spec["command"])
    if session.device == "cuda" and "LOCAL_RANK" in os.environ:
        import torch

        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))  # torchrun: one GPU per rank
    return run_cells([Cell.from_json(spec["cell"])], session, Path(spec["run_dir"]))[0]


def run_grid(
    spec,
    *,
    out: Path,
    pm: PluginManager | None = None,
    device: str | None = None,
    cache_dir: str | Path | None = None,
    download: bool = True,
    quiet: bool = False,
    fail_fast: bool = False,
    sort_by: str | None = None,
    command: str | None = None,
    echo: bool = True,
    executor: str = "local",
    executor_options: dict | None = None,
    alpha: float = 0.05,
    ci_method: str = "percentile",
):
    """Expand ``spec`` into cells, run those not yet finished in ``out``, and return the leaderboard.

    ``alpha`` and ``ci_method`` are those of the leaderboard's paired tests (``benchbone.statistics``).

    ``executor`` is "local" (this process), "submitit", "ray" or "specs" (see ``benchbone.executors``). The
    leaderboard (CSV, markdown, JSON) is written to ``out`` from the records of this grid.
    """
    from benchbone import executors, leaderboard, names_index
    from benchbone.grid import expand, split_backbone
    from benchbone.plugins import get_plugin_manager
    from benchbone.records import write_atomic
    from benchbone.report import page as report_page
    from benchbone.statistics import check_options

    check_options(alpha, ci_method)  # before any cell runs
    pm = pm or get_plugin_manager()
    asked = [split_backbone(b)[0] for b in [*spec.backbones, *spec.weights]]
    index_root = names_index.DEFAULT if cache_dir is None else cache_dir or None  # the run's cache directory
    names_index.narrow(pm, "backbones", asked, index_root)  # fill the registry from only these backbones' plugins
    warn_load_problems(pm)
    cells = expand(spec, pm.registries())
    runner = executors.get(executor, executor_options or {})
    if fail_fast and executor != "local":
        raise UsageError(f"--fail-fast needs --executor local; {executor} runs cells concurrently")
    if sort_by is not None and sort_by not in cells[0].metrics:
        raise UsageError(f"--sort-by {sort_by!r} is not a metric of this run ({', '.join(cells[0].metrics)})")
    check_run_dir(Path(out))  # a run directory that cannot be written fails before any cell, as bad data does
    session = Session(pm, device=device, cache_dir=cache_dir, download=download, quiet=quiet, command=command)
    for key in {(c.dataset, c.data_dir, c.dataset_params) for c in cells}:  # bad data fails here, before anything is written
        session.dataset(*key)
    for cell in {(c.backbone, c.weights): c for c in cells if c.weights}.values():
        session.backbone(cell)  # and so do weights files that do not fit their backbone
    if session.store.root is not None:  # the input is sound: keep the name index for the next run (not --no-cache)
        names_index.rows(pm, "backbones", root=session.store.root)
    say = (lambda msg: print(msg, file=sys.stderr)) if echo and not quiet else (lambda msg: None)

    def warn(msg: str) -> None:  # shown even with -q (one line through the CLI): something asked for is missing
        warnings.warn(msg, stacklevel=2)
    say(f"benchbone: {len(cells)} cell(s) on {session.device}, run directory {out}")

    def report(record: dict, how: str) -> None:
        head = f"{record['backbone']} x {record['dataset']} x {record['strategy']} (seed {record['seed']})"
        if how == "failed":  # also with -q a failed cell says so (with --fail-fast, the error that stops the run)
            if not fail_fast:
                print(f"  FAILED {head}: {record['error']}", file=sys.stderr)
        else:
            shown = ", ".join(f"{k}={v:.4f}" for k, v in record["metrics"].items())
            say(f"  {'cached' if how == 'cached' else 'done'} {head}: {shown}")
        for key, why in (record.get("artefacts_missing") or {}).items():
            warn(f"{head}: {NAMES[key]} not written: {why}")

    records = runner.submit(
        cells, session, Path(out), requested_device=device, fail_fast=fail_fast, on_record=report)
    if executor == "specs":  # nothing ran: the specs are written, and their commands printed
        return leaderboard.build(records)
    board = leaderboard.build(records, sort_by=sort_by, run_dirs=[Path(out)], metric_registry=pm.registries().metrics,
                              alpha=alpha, ci_method=ci_method)
    leaderboard.write(board, records, Path(out))
    written = "leaderboard.csv, leaderboard.md, leaderboard.json"
    try:  # a secondary page: its failure never costs the leaderboard or the records
        write_atomic(Path(out) / "report.html", report_page(board, records, [Path(out)]))
        written += ", report.html"
    except Exception as exc:  # noqa: BLE001
        warn(f"report.html not written: {why_failed(exc)}; the records and leaderboard files are complete")
    if echo:
        print(leaderboard.to_text(board, "table"))
        say(f"benchbone: wrote {out}/{{{written}}} and records/")
    return board
