"""One run's shared state: plugins, device, caches of built datasets and backbones, checks of the splits."""
from __future__ import annotations

import os
import random
import sys
from pathlib import Path
from typing import Any

import numpy as np

from benchbone.api import Backbone, Cell, DatasetSplits
from benchbone.errors import PluginError, UsageError
from benchbone.plugins import PluginManager
from benchbone.records import remove_stale_tmp

DEFAULT_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "benchbone"


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


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
        from benchbone.inputs.feature_cache import FeatureStore

        self.pm = pm
        self.device = pm.hook.benchbone_pick_device(requested=device)
        cache = cache_dir if cache_dir is not None else os.environ.get("BENCHBONE_CACHE_DIR", DEFAULT_CACHE)
        self.store = FeatureStore(Path(cache) if str(cache) else None)
        self.splits = FeatureStore(self.store.root, folder="splits")  # validation carves (``data.carve_validation``)
        for folder in ("features", "images", "efficiency", "splits") if self.store.root else ():
            remove_stale_tmp(self.store.root / folder)  # what killed writers left
        self.download = download
        self.quiet = quiet
        self.command = command  # the command line that started the run, written into every record
        self._datasets: dict[tuple, DatasetSplits] = {}
        self._fingerprints: dict[tuple, str] = {}
        self._images: dict[tuple, Any] = {}
        self._backbone: tuple[tuple, Backbone] | None = None
        self.backbone_digest: str | None = None  # of the last built backbone's parameters and buffers
        self._features: dict = {}
        self._efficiency: dict[tuple, dict] = {}

    @property
    def registries(self):
        """The plugin manager's registries now (they follow plugins registered after the session began)."""
        return self.pm.registries()

    def progress(self, iterable, desc: str, total: int | None = None):
        from tqdm.auto import tqdm

        return tqdm(iterable, desc=desc, total=total, disable=self.quiet, leave=False, file=sys.stderr)

    def dataset(self, name: str, data_dir: str | None, params: tuple = ()) -> DatasetSplits:
        """Build a dataset once per run; bad or missing data raise UsageError before any cell runs.

        ``params`` are the dataset's declared parameters (``register(..., params={...})``) after ``--set``."""
        from benchbone.inputs.transforms import Augmentation

        key = (name, data_dir, params)
        if key not in self._datasets:
            entry = self.registries.datasets.get(name)
            data = entry.obj(data_dir=Path(data_dir) if data_dir else None, download=self.download, **dict(params))
            if not isinstance(data, DatasetSplits):
                raise PluginError(f"dataset {name!r} (plugin {entry.plugin}) returned {type(data).__name__}, not DatasetSplits")
            check_splits(name, data)
            Augmentation.declared_by(name, entry.meta.get("augment"))  # a bad declaration fails before any cell
            warn_identical_images(name, data)
            self._datasets[key] = data
        return self._datasets[key]

    def data_fingerprint(self, name: str, data_dir: str | None, params: tuple = ()) -> str:
        """What identifies the data a dataset's build read (``inputs.splits.data_fingerprint``), once per run;
        "" for a dataset registered with ``uses_data_dir=False``, whose data come with its code."""
        from benchbone.inputs.splits import data_fingerprint

        key = (name, data_dir, params)
        if key not in self._fingerprints:
            data = self.dataset(name, data_dir, params)
            reads = self.registries.datasets.get(name).meta.get("uses_data_dir") is not False
            self._fingerprints[key] = data_fingerprint(data, data_dir, name) if reads else ""
        return self._fingerprints[key]

    def feature_data_key(self, cell: Cell) -> str | None:
        """The data in a cell's feature-cache key: none where every split fingerprints itself (image files,
        images in memory: the split's own fingerprint is in the key, so a changed test split leaves the train
        features valid), else the cell's data key."""
        if cell.data_fingerprint:
            data = self.dataset(cell.dataset, cell.data_dir, cell.dataset_params)
            splits = [s for s in (data.train, data.val, data.test) if s is not None]
            if all(callable(getattr(s, "fingerprint", None)) for s in splits):
                return None
        return cell.data_key

    def bind(self, cell: Cell) -> Cell:
        """``cell`` keyed by the data its dataset read here (its id and features then follow the data, not how a
        path was spelled); a cell bound elsewhere (a worker's spec) whose data differ here is a UsageError."""
        import dataclasses

        found = self.data_fingerprint(cell.dataset, cell.data_dir, cell.dataset_params)
        if cell.data_fingerprint is None:
            return dataclasses.replace(cell, data_fingerprint=found)
        if cell.data_fingerprint != found:
            where = f" in {cell.data_dir}" if cell.data_dir else ""
            raise UsageError(f"the data of dataset {cell.dataset!r}{where} changed since this cell was planned "
                             f"(fingerprint {cell.data_fingerprint or 'none'}, here {found or 'none'}); run the grid "
                             "again to plan its cells on these data")
        return cell

    def images(self, dataset: str, data_dir: str | None, source: str, params: tuple = ()):
        from benchbone.inputs.loading import LoadedImages

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
            from benchbone.inputs.weights import refused_checkpoint

            with refused_checkpoint(f"the checkpoint of backbone {cell.backbone!r},", "delete the file (it is "
                                    "downloaded again) and check who can write that cache"):
                backbone = entry.obj(pretrained=cell.pretrained and not cell.weights,
                                     **({"layer": cell.layer} if cell.layer else {}))
            if not isinstance(backbone, Backbone):
                raise PluginError(f"backbone {cell.backbone!r} (plugin {entry.plugin}) returned "
                                  f"{type(backbone).__name__}, not Backbone")
            if cell.weights:
                from benchbone.inputs.weights import CLASSIFIER_PREFIXES, load_backbone_weights, load_state_dict_file

                classifier = backbone.info.get("classifier") or CLASSIFIER_PREFIXES
                state = load_state_dict_file(cell.weights)
                try:  # a plugin's own loader (both towers of a CLIP), else strictly into the model
                    if backbone.load_weights is not None:
                        backbone.load_weights(state)
                    else:
                        load_backbone_weights(backbone.model, state, classifier)
                except UsageError as exc:
                    raise UsageError(f"--weights {cell.backbone}={cell.weights}: {exc}") from None
                backbone.weights = f"file:{Path(cell.weights).name}@sha256:{cell.weights_sha256}"
            backbone.model.eval()
            from benchbone.inputs.feature_cache import state_digest

            self.backbone_digest = state_digest(backbone.model)  # keys its features: changed weights, new features
            self._backbone = (key, backbone)
        return self._backbone[1]

    def efficiency(self, backbone: Backbone, size: tuple[int, int]) -> dict:
        """Parameters, GMACs at ``size`` and feature dimension, measured once per backbone and size."""
        from benchbone.execution.efficiency import describe

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
        import contextlib
        import json

        from benchbone.digests import json_digest
        from benchbone.versions import package_version

        if self.store.root is None or self.backbone_digest is None:
            return None
        key = {"state_sha256": self.backbone_digest, "size": list(size), "num_features": backbone.num_features,
               "torch": package_version("torch")}
        described = json.dumps(key, sort_keys=True)
        path = self.store.root / "efficiency" / f"{json_digest(key, length=32)}.json"
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
    """A dataset needs at least two classes, each named once, non-empty train and test splits, and labels that
    are whole numbers in 0..classes-1 (checked here, once, before the grid: never truncated or failed per cell)."""
    from benchbone.inputs.splits import labels_of

    if len(data.classes) < 2:
        raise UsageError(f"dataset {name!r} has {len(data.classes)} class(es); classification needs at least two")
    from collections import Counter

    twice = sorted(str(c) for c, n in Counter(data.classes).items() if n > 1)
    if twice:
        raise UsageError(f"dataset {name!r} names class {twice[0]!r} twice{f' (and {len(twice) - 1} more)' if len(twice) > 1 else ''}; "
                         "every class needs a name of its own")
    for split in ("train", "test"):
        if getattr(data, split) is None or len(getattr(data, split)) == 0:
            raise UsageError(f"dataset {name!r} has an empty {split} split; check its data directory")
    if data.val is not None and len(data.val) == 0:
        raise UsageError(f"dataset {name!r} has an empty val split; remove it or add images")
    for split in ("train", "val", "test"):
        if getattr(data, split) is None:
            continue
        try:
            labels = labels_of(getattr(data, split))
        except UsageError as exc:
            raise UsageError(f"dataset {name!r}, {split} split: {exc}") from None
        outside = labels[(labels < 0) | (labels >= len(data.classes))]
        if len(outside):
            raise UsageError(f"dataset {name!r}, {split} split: label {int(outside[0])} is outside 0..{len(data.classes) - 1} "
                             f"({len(outside)} such label(s), {len(data.classes)} classes); labels index the class names")
    from benchbone.inputs.loading import as_uint8_chw

    for split in ("train", "val", "test"):  # the first image of each split decodes (a cheap look before any cell)
        if getattr(data, split) is not None:
            as_uint8_chw(getattr(data, split)[0][0])


def warn_identical_images(name: str, data: DatasetSplits) -> None:
    """One warning line when test images are identical to train images (``inputs.splits.identical_across``: the
    pixels of images in memory, the bytes of same-size image files; no extra pass over large data)."""
    import warnings

    from benchbone.inputs.splits import identical_across

    found = identical_across(data.train, data.test)
    if found:
        warnings.warn(f"dataset {name!r}: {found} test image{'s are' if found > 1 else ' is'} identical to train "
                      f"images (same {'pixels' if hasattr(data.test, 'images') else 'file content'}); scores on "
                      "them measure memory, not generalisation", stacklevel=2)
