"""From a plugin's datasets to normalised batches on the device: splits, decoding, resizing, augmenting."""
from __future__ import annotations

import functools
import hashlib
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from benchbone.api import Backbone, ImageTensorDataset
from benchbone.errors import UsageError
from benchbone.features import FeatureStore, feature_key

_MODES = {"bilinear": "bilinear", "bicubic": "bicubic", "nearest": "nearest", "area": "area"}


def as_uint8_chw(image: Any) -> torch.Tensor:
    """A PIL image, an HWC/HW numpy array or a CHW tensor as a uint8 tensor [C, H, W]."""
    if isinstance(image, torch.Tensor):
        tensor = image
    elif isinstance(image, np.ndarray):
        tensor = torch.from_numpy(np.ascontiguousarray(image))
        tensor = tensor[None] if tensor.ndim == 2 else tensor.permute(2, 0, 1)
    else:  # PIL
        from benchbone.folders import pil_to_uint8

        tensor = torch.from_numpy(pil_to_uint8(image).copy())
        tensor = tensor[None] if tensor.ndim == 2 else tensor.permute(2, 0, 1)
    if tensor.ndim == 2:
        tensor = tensor[None]
    if tensor.dtype != torch.uint8 or tensor.ndim != 3 or tensor.shape[0] not in (1, 3):
        raise UsageError(
            f"a dataset gave an image of dtype {tensor.dtype} and shape {tuple(tensor.shape)}; "
            "images must be PIL images or uint8 tensors [C, H, W] with C = 1 or 3"
        )
    return tensor


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
        import importlib.metadata

        description = {"validation_carve": {
            "labels_sha256": hashlib.sha256(labels.tobytes()).hexdigest(), "n": len(labels),
            "size": size, "size_is_count": isinstance(size, int), "seed": seed, "stratify": stratify,
            "scikit-learn": importlib.metadata.version("scikit-learn")}}
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


@dataclass(frozen=True)
class Preprocess:
    """Resize (shorter side to size / crop_pct), centre-crop and normalise, in batches on the device."""

    size: tuple[int, int]
    crop_pct: float
    interpolation: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @classmethod
    def for_backbone(cls, backbone: Backbone, image_size: int | None = None) -> "Preprocess":
        size = (image_size, image_size) if image_size else tuple(backbone.input_size)
        if backbone.interpolation not in _MODES:
            raise UsageError(f"unsupported interpolation {backbone.interpolation!r}; use one of {sorted(_MODES)}")
        return cls(size, float(backbone.crop_pct), backbone.interpolation, tuple(backbone.mean), tuple(backbone.std))

    def describe(self) -> dict:
        return {"size": list(self.size), "crop_pct": self.crop_pct, "interpolation": self.interpolation,
                "mean": list(self.mean), "std": list(self.std)}

    def resize_crop(self, x: torch.Tensor) -> torch.Tensor:
        """Float images [N, C, h, w] to [N, C, H, W]; images already at the target size pass unchanged."""
        height, width = self.size
        h, w = x.shape[-2:]
        if (h, w) == (height, width):
            return x
        if height == width:
            scale = math.floor(height / self.crop_pct)
            new = (scale, max(1, round(w * scale / h))) if h <= w else (max(1, round(h * scale / w)), scale)
        else:
            new = (math.floor(height / self.crop_pct), math.floor(width / self.crop_pct))
        if new != (h, w):
            mode = _MODES[self.interpolation]
            kwargs = {"antialias": True, "align_corners": False} if mode in ("bilinear", "bicubic") else {}
            x = F.interpolate(x, size=new, mode=mode, **kwargs)
        top, left = (x.shape[-2] - height) // 2, (x.shape[-1] - width) // 2
        return x[..., top:top + height, left:left + width]

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor(self.mean, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        return (x - mean) / std

    def field_of_view(self, h: int, w: int) -> tuple[float, float]:
        """The height and width, in source pixels, of the centred region of an h x w image that
        ``resize_crop`` shows (all of it when the image is already at the target size)."""
        height, width = self.size
        if (h, w) == (height, width):
            return float(h), float(w)
        if height == width:
            side = min(h, w) * height / math.floor(height / self.crop_pct)
            return side, side
        return h * height / math.floor(height / self.crop_pct), w * width / math.floor(width / self.crop_pct)

    def __call__(self, images: torch.Tensor, augment: Callable[..., torch.Tensor] | None = None) -> torch.Tensor:
        """uint8 [N, C, h, w] (C = 1 or 3) to a normalised float batch; ``augment`` (from
        ``Augmentation.drawing_from``) replaces the resize and centre crop with random crops."""
        x = images.float().div_(255)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        x = augment(x, self.size, self.field_of_view(*x.shape[-2:])) if augment is not None else self.resize_crop(x)
        return self.normalise(x.clamp(0, 1))  # bicubic overshoots


AUGMENT_KEYS = {"hflip": "a bool", "translate": "a fraction of the side in [0, 0.5]",
                "crop_scale": "a pair 0 < min <= max <= 1 of area fractions"}


@dataclass(frozen=True)
class Augmentation:
    """The label-preserving training augmentation a dataset allows, declared at registration with
    ``register(name, build, augment={...})`` (keys as in ``AUGMENT_KEYS``, missing ones from these defaults).

    Crops are relative to the source image (the region evaluation shows of it), so they scale with its
    resolution: ``translate`` shifts the crop by up to that fraction of the side, padding with black
    (CIFAR's 4-pixel pad-and-crop of 32 px is 0.125); ``crop_scale`` is the random resized crop's range of
    area fractions (aspect 3/4..4/3 when it is under 1); ``hflip`` mirrors half the images. The defaults,
    for datasets that declare nothing, are the safe ones: a 1/8 shift, no flip (which changes the meaning
    of text, digits and handedness), no rescaling.
    """

    hflip: bool = False
    translate: float = 0.125
    crop_scale: tuple[float, float] = (1.0, 1.0)
    declared: bool = False

    @classmethod
    def declared_by(cls, dataset: str, augment: Any) -> "Augmentation":
        """The augmentation of ``dataset`` from its metadata ``augment``: None (the safe default),
        False (none at all) or a dict; anything else is a PluginError naming the dataset."""
        if augment is None:
            return cls()
        if augment is False:
            return cls(hflip=False, translate=0.0, declared=True)
        problem = "it is not a dict" if not isinstance(augment, dict) else next(
            (f"unknown key {k!r}" for k in augment if k not in AUGMENT_KEYS), None)
        if problem is None:
            hflip, translate = augment.get("hflip", cls.hflip), augment.get("translate", cls.translate)
            scale = augment.get("crop_scale", cls.crop_scale)
            if not isinstance(hflip, bool):
                problem = f"hflip={hflip!r} must be {AUGMENT_KEYS['hflip']}"
            elif isinstance(translate, bool) or not isinstance(translate, (int, float)) or not 0 <= translate <= 0.5:
                problem = f"translate={translate!r} must be {AUGMENT_KEYS['translate']}"
            elif (not isinstance(scale, (list, tuple)) or len(scale) != 2 or not all(isinstance(v, (int, float)) for v in scale)
                  or not 0 < scale[0] <= scale[1] <= 1):
                problem = f"crop_scale={scale!r} must be {AUGMENT_KEYS['crop_scale']}"
            else:
                return cls(hflip, float(translate), (float(scale[0]), float(scale[1])), declared=True)
        from benchbone.errors import PluginError

        keys = "; ".join(f"{k}: {v}" for k, v in AUGMENT_KEYS.items())
        raise PluginError(f"dataset {dataset!r} registered augment={augment!r}: {problem} (use None, False or a dict of {keys})")

    @property
    def is_identity(self) -> bool:
        return not self.hflip and not self.translate and self.crop_scale == (1.0, 1.0)

    def drawing_from(self, generator: torch.Generator) -> Callable[..., torch.Tensor] | None:
        """This augmentation with its random draws from ``generator``, for ``Preprocess``; None when it changes nothing."""
        return None if self.is_identity else functools.partial(self.apply, generator=generator)

    def describe(self) -> dict:
        return {"hflip": self.hflip, "translate": self.translate, "crop_scale": list(self.crop_scale),
                "declared_by_dataset": self.declared}

    def apply(self, x: torch.Tensor, size: tuple[int, int], view: tuple[float, float],
              generator: torch.Generator) -> torch.Tensor:
        """Per-image random crops of ``x`` [N, C, h, w] within the centred ``view`` (height, width), resampled
        to ``size`` with roi_align, then flipped when allowed; all draws from ``generator``."""
        from torchvision.ops import roi_align

        n, _, h, w = x.shape
        vh, vw = view
        lo, hi = self.crop_scale
        area = torch.empty(n).uniform_(lo, hi, generator=generator) * vh * vw
        ratio = torch.exp(torch.empty(n).uniform_(math.log(3 / 4), math.log(4 / 3), generator=generator)) if lo < 1 \
            else torch.ones(n)
        cw, ch = torch.sqrt(area * ratio).clamp(max=vw), torch.sqrt(area / ratio).clamp(max=vh)
        pad_x, pad_y = math.ceil(self.translate * vw), math.ceil(self.translate * vh)
        # a centre anywhere the crop stays inside the view, shifted by up to translate x the side
        cx = w / 2 + (torch.rand(n, generator=generator) - 0.5) * (vw - cw + 2 * self.translate * vw) + pad_x
        cy = h / 2 + (torch.rand(n, generator=generator) - 0.5) * (vh - ch + 2 * self.translate * vh) + pad_y
        if pad_x or pad_y:
            x = F.pad(x, (pad_x, pad_x, pad_y, pad_y))
        boxes = torch.stack([torch.arange(n, dtype=torch.float), cx - cw / 2, cy - ch / 2, cx + cw / 2, cy + ch / 2], 1)
        out = roi_align(x, boxes.to(x.device), output_size=size, spatial_scale=1.0, sampling_ratio=2, aligned=True)
        if not self.hflip:
            return out
        flip = (torch.rand(n, generator=generator) < 0.5).to(x.device)
        return torch.where(flip.view(n, 1, 1, 1), out.flip(-1), out)


SMALL_PIXELS = 128 * 128  # images up to this size are decoded once and held in memory
PARALLEL_FROM = 2000  # decode with worker processes from this many images on
CORRUPTED_BYTES = 512 * 2**20  # corrupted in-memory images kept per split, shared by the backbones of a run


def loader_workers() -> int:
    """Worker processes for decoding: the CPUs this process may use, at most 8."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return min(8, cpus)


def _one_thread(_: int) -> None:
    torch.set_num_threads(1)


class _Decoded(torch.utils.data.Dataset):
    """Index -> uint8 image [C, H, W]; with ``preprocess``, resized and cropped to its size with 3 channels;
    with ``corrupt`` (a ``benchbone.corruptions.Corruption``), corrupted at its source size first."""

    def __init__(self, dataset: Any, preprocess: Preprocess | None = None, corrupt: Callable | None = None):
        self.dataset, self.preprocess, self.corrupt = dataset, preprocess, corrupt

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> torch.Tensor:
        image = as_uint8_chw(self.dataset[int(index)][0])
        if self.corrupt is not None:
            image = self.corrupt(image, int(index))
        if self.preprocess is None:
            return image
        x = self.preprocess.resize_crop(image[None].float()).round_().clamp_(0, 255).to(torch.uint8)[0]
        return x.expand(3, -1, -1).contiguous() if x.shape[0] == 1 else x


def _one_line(loader) -> Iterator:
    """Iterate ``loader``; a UsageError raised in one of its worker processes comes back as its own one line.

    (torch re-raises a worker's error with "Caught UsageError in DataLoader worker process N" and the
    worker's traceback in the message; the original message is its last line.)
    """
    try:
        yield from loader
    except UsageError as exc:
        last = str(exc).strip().splitlines()[-1] if str(exc).strip() else ""
        raise UsageError(last.removeprefix(f"{UsageError.__module__}.{UsageError.__name__}: ")) from None


def _stack(images: list[torch.Tensor]) -> torch.Tensor | None:
    """Images of one size as a uint8 batch (grey joins RGB as 3 channels), or None when sizes differ."""
    if any(im.shape[-2:] != images[0].shape[-2:] for im in images):
        return None
    channels = max(im.shape[0] for im in images)
    return torch.stack([im.expand(channels, -1, -1) for im in images])


class LoadedImages:
    """A split's images for batching: in memory or streamed.

    Small images of one size (CIFAR, MNIST) are decoded once into a uint8 tensor [N, C, h, w]; with
    ``cache_root`` and a dataset that has ``fingerprint()`` (``benchbone.folders.ImageFiles``), that
    tensor is kept on disk as safetensors under ``cache_root/images``, checked by digest on load.
    Other datasets stream through a DataLoader whose ``workers`` decode, resize and crop each image.
    """

    def __init__(self, dataset: Any, cache_root: str | Path | None = None, workers: int | None = None):
        self.dataset = dataset
        self.workers = workers if workers is not None else (loader_workers() if len(dataset) >= PARALLEL_FROM else 0)
        self.tensor: torch.Tensor | None = None
        self.source = "streamed"
        self._corrupted_cache: dict[tuple, torch.Tensor] = {}
        self._corrupted_bytes = 0
        if isinstance(dataset, ImageTensorDataset):
            self.tensor = torch.as_tensor(dataset.images)
            self.source = "in memory"
            if self.tensor.dtype != torch.uint8 or self.tensor.ndim != 4 or self.tensor.shape[1] not in (1, 3):
                raise UsageError(
                    f"ImageTensorDataset images must be uint8 [N, C, H, W] with C = 1 or 3, "
                    f"not {self.tensor.dtype} {tuple(self.tensor.shape)}"
                )
            return
        fingerprint = getattr(dataset, "fingerprint", None)
        store = FeatureStore(Path(cache_root), folder="images") if cache_root and callable(fingerprint) else None
        description = {"decoded_images": fingerprint()} if store else None
        if store is not None:
            cached = store.load(feature_key(description), description)
            if cached is not None and len(cached["images"]) == len(dataset):
                self.tensor, self.source = cached["images"], "decode cache"
                return
        first = as_uint8_chw(dataset[0][0]) if len(dataset) else None
        if first is None or first.shape[-1] * first.shape[-2] > SMALL_PIXELS:
            return
        self.tensor = self._decode_all(first.shape[-2:])
        if self.tensor is not None:
            self.source = "decoded"
            if store is not None:
                store.save(feature_key(description), {"images": self.tensor}, description)

    def _corrupted(self, corrupt: Callable, image: torch.Tensor, index: int) -> torch.Tensor:
        """``corrupt(image, index)``, kept (up to CORRUPTED_BYTES) for the next backbone that reads the same images."""
        key = (corrupt, int(index))
        if key in self._corrupted_cache:
            return self._corrupted_cache[key]
        out = corrupt(image, int(index))
        if self._corrupted_bytes + out.numel() <= CORRUPTED_BYTES:
            self._corrupted_cache[key] = out
            self._corrupted_bytes += out.numel()
        return out

    def _decode_all(self, size: torch.Size) -> torch.Tensor | None:
        """Every image stacked as uint8 [N, C, h, w], or None when sizes differ."""
        loader = torch.utils.data.DataLoader(_Decoded(self.dataset), batch_size=256, num_workers=self.workers,
                                             collate_fn=_stack, worker_init_fn=_one_thread)
        parts = []
        for batch in _one_line(loader):
            if batch is None or batch.shape[-2:] != size:
                return None
            parts.append(batch)
        channels = max(part.shape[1] for part in parts)
        return torch.cat([part.expand(-1, channels, -1, -1) for part in parts])

    def batches(self, indices: np.ndarray, batch_size: int, preprocess: Preprocess,
                corrupt: Callable | None = None) -> Iterator[torch.Tensor]:
        """uint8 batches of ``indices`` in order: the in-memory images, or streamed ones at the preprocessing's size;
        ``corrupt(image, index)`` is applied to each image at its source size first."""
        chunks = [indices[i:i + batch_size] for i in range(0, len(indices), batch_size)]
        if self.tensor is not None:
            for chunk in chunks:
                batch = self.tensor[torch.as_tensor(chunk)]
                if corrupt is not None:
                    batch = torch.stack([self._corrupted(corrupt, image, i) for image, i in zip(batch, chunk)])
                yield batch
            return
        yield from _one_line(torch.utils.data.DataLoader(
            _Decoded(self.dataset, preprocess, corrupt), batch_sampler=[c.tolist() for c in chunks],
            num_workers=self.workers, worker_init_fn=_one_thread, prefetch_factor=4 if self.workers else None,
        ))


def iterate_batches(
    images: LoadedImages,
    view: SplitView,
    preprocess: Preprocess,
    *,
    batch_size: int,
    device: str,
    shuffle: torch.Generator | None = None,
    augment: Callable[..., torch.Tensor] | None = None,
    shard: tuple[int, int] | None = None,
    corrupt: Callable | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Normalised image batches and labels of ``view`` on ``device``, through ``augment`` when given
    (and ``corrupt``, a ``benchbone.corruptions.Corruption``, at the source size before preprocessing).

    Only the batch being yielded lives on the device: the generator keeps no reference to it.
    ``shard=(rank, world_size)`` keeps every world_size-th image of the order from ``rank`` on, the order
    wrapped round to a multiple of world_size first, as torch's DistributedSampler does.
    """
    order = torch.randperm(len(view), generator=shuffle) if shuffle is not None else torch.arange(len(view))
    if shard is not None:
        rank, world = shard
        order = order[torch.arange(rank, math.ceil(len(order) / world) * world, world) % len(order)]
    labels = torch.as_tensor(view.labels)
    pin = device.startswith("cuda")
    batches = images.batches(view.indices[order.numpy()], batch_size, preprocess, corrupt)
    for start, x in zip(range(0, len(order), batch_size), batches):
        pos = order[start:start + batch_size]
        if pin:
            x = x.pin_memory()
        yield preprocess(x.to(device, non_blocking=pin), augment), labels[pos].to(device, non_blocking=pin)
