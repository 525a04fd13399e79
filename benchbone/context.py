"""What a strategy sees of the run: device, seed, parameters, cached features and image batches."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import torch

from benchbone.api import Backbone
from benchbone.data import LoadedImages, Preprocess, SplitView, iterate_batches
from benchbone.errors import UsageError
from benchbone.features import ExtractionSettings, FeatureStore, extract

SPLITS = ("train", "val", "test")


class Context:
    """Handed to every strategy as ``ctx``.

    ``ctx.device``, ``ctx.seed``, ``ctx.params`` (the strategy's parameters after overrides),
    ``ctx.classes``, ``ctx.num_classes``; ``ctx.features(split)`` and ``ctx.batches(split, ...)``;
    ``ctx.workdir``, a scratch directory of this cell for checkpoints.
    """

    def __init__(
        self,
        *,
        device: str,
        seed: int,
        params: dict,
        classes: list[str],
        backbone: Backbone,
        views: dict[str, SplitView],
        images: Callable[[str], LoadedImages],
        preprocess: Preprocess,
        feature_identity: dict,
        store: FeatureStore,
        memory: dict,
        extraction: ExtractionSettings,
        progress: Callable[..., Iterable],
        workdir: Path,
    ):
        self.device = device
        self.seed = seed
        self.params = params
        self.classes = list(classes)
        self.backbone = backbone
        self.preprocess = preprocess
        self.batch_size = extraction.batch_size
        self.extraction = extraction
        self.extracted: dict[str, dict] = {}  # source split -> how its features were computed, or "cached"
        self.info: dict[str, Any] = {}
        self._views = views
        self._images = images
        self._identity = feature_identity
        self._store = store
        self._memory = memory
        self._progress = progress
        self._workdir = Path(workdir)

    @property
    def workdir(self) -> Path:
        """This cell's scratch directory, created on first use. It survives a failed or interrupted
        cell (so the strategy can resume from what it saved) and is removed once the cell's record is written."""
        self._workdir.mkdir(parents=True, exist_ok=True)
        return self._workdir

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def split_size(self, split: str) -> int:
        return len(self._view(split))

    def labels(self, split: str) -> torch.Tensor:
        return torch.as_tensor(self._view(split).labels)

    def progress(self, iterable: Iterable, desc: str, total: int | None = None) -> Iterable:
        """Wrap a long loop in a progress bar (silent with -q)."""
        return self._progress(iterable, desc=desc, total=total)

    def generator(self, offset: int = 0) -> torch.Generator:
        """A CPU generator seeded from the cell's seed (plus ``offset`` for independent streams)."""
        return torch.Generator().manual_seed(self.seed * 1_000_003 + offset)

    def _view(self, split: str) -> SplitView:
        if split not in SPLITS:
            raise UsageError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
        return self._views[split]

    def features(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Frozen-backbone features ``(X [N, D] float32, y [N] int64)`` of a split, on the CPU.

        Extracted once for the whole source split and shared by every strategy, seed and run.
        """
        view = self._view(split)
        description = dict(self._identity, split=view.source, preprocess=self.preprocess.describe(),
                           items=len(view.dataset), compute=self.extraction.describe())
        if callable(getattr(view.dataset, "fingerprint", None)):  # image files: changed files, new features
            description["files"] = view.dataset.fingerprint()
        key = repr(sorted(description.items()))
        if key not in self._memory:
            while len(self._memory) >= 4:  # a few source splits in memory; the rest stay on disk
                self._memory.pop(next(iter(self._memory)))
            self.extracted.setdefault(view.source, {"cached": True})
            self._memory[key] = self._store.get_or_compute(description, lambda: self._extract(view))
        tensors = self._memory[key]
        index = torch.as_tensor(view.indices)
        return tensors["features"][index], tensors["labels"][index]

    def _extract(self, view: SplitView) -> dict[str, torch.Tensor]:
        from benchbone.data import whole

        full = whole(view.source, view.dataset)
        model = self.backbone.model.to(self.device)
        batches = iterate_batches(self._images(view.source), full, self.preprocess,
                                  batch_size=self.batch_size, device=self.device)
        total_batches = -(-len(full) // self.batch_size)
        feats, stats = extract(model, batches, self.backbone.num_features, len(full), self.extraction,
                               lambda it, desc: self._progress(it, desc=f"features {view.source}", total=total_batches))
        self.extracted[view.source] = stats
        return {"features": feats, "labels": torch.as_tensor(full.labels)}

    def batches(
        self, split: str, batch_size: int | None = None, *, shuffle: bool = False, augment: bool = False,
        epoch: int = 0, shard: tuple[int, int] | None = None,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Normalised image batches ``(x, y)`` of a split on the device, for strategies that train the network.

        ``shuffle`` and ``augment`` (random resized crop and flip) are seeded by the cell's seed and ``epoch``;
        ``shard=(rank, world_size)`` keeps this rank's part of the (shuffled) order, for data-parallel training.
        """
        view = self._view(split)
        return iterate_batches(
            self._images(view.source), view, self.preprocess,
            batch_size=batch_size or self.batch_size, device=self.device,
            shuffle=self.generator(2 * epoch + 1) if shuffle else None,
            augment=self.generator(2 * epoch + 2) if augment else None, shard=shard,
        )
