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
            self._datasets[key] = data
        return self._datasets[key]

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
            backbone = entry.obj(pretrained=cell.pretrained and not cell.weights, **({"layer": cell.layer} if cell.layer else {}))
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
    """A dataset needs at least two classes and non-empty train and test splits."""
    if len(data.classes) < 2:
        raise UsageError(f"dataset {name!r} has {len(data.classes)} class(es); classification needs at least two")
    for split in ("train", "test"):
        if getattr(data, split) is None or len(getattr(data, split)) == 0:
            raise UsageError(f"dataset {name!r} has an empty {split} split; check its data directory")
    if data.val is not None and len(data.val) == 0:
        raise UsageError(f"dataset {name!r} has an empty val split; remove it or add images")
    from benchbone.inputs.loading import as_uint8_chw

    for split in ("train", "val", "test"):  # the first image of each split decodes (a cheap look before any cell)
        if getattr(data, split) is not None:
            as_uint8_chw(getattr(data, split)[0][0])
