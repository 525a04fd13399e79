"""What a strategy sees of the run: device, seed, parameters, cached features and image batches."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import torch

from benchbone.api import Backbone
from benchbone.errors import UsageError
from benchbone.inputs.corruptions import Corruption
from benchbone.inputs.extraction import ExtractionSettings, extract
from benchbone.inputs.feature_cache import FeatureStore, feature_key
from benchbone.inputs.loading import LoadedImages, iterate_batches
from benchbone.inputs.splits import SplitView
from benchbone.inputs.transforms import Augmentation, Preprocess

SPLITS = ("train", "val", "test")


class Context:
    """What a strategy sees of its cell, handed to it as ``ctx`` (``from benchbone import Context`` for annotations).

    Attributes:
        device (str): the torch device of the run (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``).
        seed (int): the cell's seed; ``ctx.generator(offset)`` gives seeded CPU generators from it.
        params (dict): the strategy's parameters, its declared defaults after ``--set`` (checked and typed).
        classes (list[str]): the class names; ``num_classes`` (int) their count.
        backbone (Backbone): the cell's backbone (the same object the strategy receives first), model in eval mode.
        preprocess (Preprocess): resize, crop and normalisation of the images; ``preprocess.size`` is (H, W)
            and ``preprocess.describe()`` a dict for the record.
        batch_size (int): the harness's ``--set batch_size`` (feature extraction and the default of ``batches``).
        settings (ExtractionSettings): precision, channels-last and compile settings of the extraction.
        augmentation (Augmentation): what ``batches(augment=True)`` applies, as the dataset declared it.
        corruption (Corruption | None): the corruption applied to the test images, or None.
        workdir (pathlib.Path): this cell's scratch directory (created on first use), kept after a failure to
            resume from and removed once the cell's record is written.
        info (dict): written into the record as ``strategy_info`` (plain JSON types).
        extraction (dict): per split read through ``features``, how its features were obtained (source split,
            images, whether cached, seconds); read by the harness for the record's timings.

    Methods:
        features(split) -> (X, y): frozen-backbone features of ``"train"``, ``"val"`` or ``"test"``:
            ``X`` a float32 CPU tensor [N, num_features], ``y`` an int64 CPU tensor [N]; cached on disk.
        batches(split, batch_size=None, *, shuffle=False, augment=False, epoch=0, shard=None): normalised
            image batches ``(x [B, 3, H, W] float32, y [B] int64)`` on ``device``, for strategies that train.
        labels(split) -> int64 CPU tensor [N]; split_size(split) -> int; progress(iterable, desc, total=None).
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
        augmentation: Augmentation | None = None,
        corruption: Corruption | None = None,
    ):
        self.device = device
        self.seed = seed
        self.params = params
        self.classes = list(classes)
        self.backbone = backbone
        self.preprocess = preprocess
        self.batch_size = extraction.batch_size
        self.settings = extraction
        self.info: dict[str, Any] = {}
        self.extraction: dict[str, dict] = {}  # split -> source, images, cached, seconds (of the extraction)
        self._last_stats: dict = {}
        self._views = views
        self._images = images
        self._identity = feature_identity
        self._store = store
        self._memory = memory
        self._progress = progress
        self._workdir = Path(workdir)
        self.augmentation = augmentation or Augmentation()
        self.corruption = corruption  # applied to the test split's images (features and batches)

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
        """The split's labels, the strategy's own copy (the view's may share the dataset's memory)."""
        return torch.tensor(self._view(split).labels)

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

        Extracted once and shared by every strategy, seed and run: for the whole source split, or only for
        the rows this cell reads of it when they are under half of it (e.g. with ``train_per_class``).
        When the split is all of its cache entry (a test split, a dataset's own val split), ``X`` is a
        private copy-on-write memory map of the cache file, so it need not fit in memory; other splits
        (a carved train split) are gathered from it into memory. Writing into ``X`` never changes the cache.
        """
        from benchbone.inputs.splits import whole

        view = self._view(split)
        target = whole(view.source, view.dataset)
        used = np.unique(np.concatenate([v.indices for v in self._views.values() if v.source == view.source]))
        part = 2 * len(used) < len(view.dataset)
        description = dict(self._identity, split=view.source, preprocess=self.preprocess.describe(),
                           items=len(view.dataset), compute=self.settings.describe())
        if part:
            target = SplitView(view.source, view.dataset, used, target.labels[used])
            description["rows"] = target.digest()
        if callable(getattr(view.dataset, "fingerprint", None)):  # image files: changed files, new features
            description["files"] = view.dataset.fingerprint()
        if self._corrupt(view.source):
            description["corruption"] = self.corruption.describe()
        key = repr(sorted(description.items()))
        extracted = []

        def compute(rows) -> dict[str, torch.Tensor]:
            extracted.append(True)
            return self._extract(target, rows)

        if key not in self._memory:
            while len(self._memory) >= 4:  # a few source splits in memory or mapped; the rest stay on disk
                self._memory.pop(next(iter(self._memory)))
            self._memory[key] = self._store.get_or_compute(description, compute,
                                                           (len(target), self.backbone.num_features))
        tensors = self._memory[key]
        self.extraction[split] = {"source": view.source, "images": int(tensors["labels"].numel()),
                                  "cached": not extracted,
                                  "seconds": float(tensors["seconds"][0]) if "seconds" in tensors else None,
                                  **self.settings.describe(),
                                  **({"batch_size": self._last_stats["batch_size"]} if extracted else {})}
        if len(view) == len(target) and np.array_equal(view.indices, target.indices):  # the whole entry
            features = self._store.reopen(feature_key(description))
            return (tensors["features"].clone() if features is None else features), tensors["labels"].clone()
        index = torch.as_tensor(np.searchsorted(target.indices, view.indices))
        return tensors["features"][index], tensors["labels"][index]

    def _extract(self, view: SplitView, rows) -> dict[str, torch.Tensor]:
        """Features of ``view``'s rows written to ``rows`` in order (see ``benchbone.inputs.feature_cache.RowsFile``), and the
        labels and the seconds their extraction took (kept in the cache)."""
        model = self.backbone.model.to(self.device)
        batches = iterate_batches(self._images(view.source), view, self.preprocess,
                                  batch_size=self.batch_size, device=self.device, corrupt=self._corrupt(view.source))
        total_batches = -(-len(view) // self.batch_size)
        _, stats = extract(model, batches, self.backbone.num_features, len(view), self.settings,
                           lambda it, desc: self._progress(it, desc=f"features {view.source}", total=total_batches), rows)
        self._last_stats = stats
        return {"labels": torch.as_tensor(view.labels),
                "seconds": torch.tensor([stats["seconds"]], dtype=torch.float64)}

    def batches(
        self, split: str, batch_size: int | None = None, *, shuffle: bool = False, augment: bool = False,
        epoch: int = 0, shard: tuple[int, int] | None = None,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Normalised image batches ``(x, y)`` of a split on the device, for strategies that train the network.

        ``shuffle`` and ``augment`` (the dataset's ``ctx.augmentation``: crops scaled to the source image and
        a flip where it preserves labels) are seeded by the cell's seed and ``epoch``;
        ``shard=(rank, world_size)`` keeps this rank's part of the (shuffled) order, for data-parallel training.
        """
        view = self._view(split)
        return iterate_batches(
            self._images(view.source), view, self.preprocess,
            batch_size=batch_size or self.batch_size, device=self.device,
            shuffle=self.generator(2 * epoch + 1) if shuffle else None,
            augment=self.augmentation.drawing_from(self.generator(2 * epoch + 2)) if augment else None, shard=shard,
            corrupt=self._corrupt(view.source),
        )

    def _corrupt(self, source: str) -> Corruption | None:
        """The corruption of a source split's images: the test split's only."""
        return self.corruption if source == "test" else None
