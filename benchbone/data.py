"""From a plugin's datasets to normalised batches on the device: splits, decoding, resizing, augmenting."""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from benchbone.api import Backbone, ImageTensorDataset
from benchbone.errors import UsageError

_MODES = {"bilinear": "bilinear", "bicubic": "bicubic", "nearest": "nearest", "area": "area"}


def as_uint8_chw(image: Any) -> torch.Tensor:
    """A PIL image, an HWC/HW numpy array or a CHW tensor as a uint8 tensor [C, H, W]."""
    if isinstance(image, torch.Tensor):
        tensor = image
    elif isinstance(image, np.ndarray):
        tensor = torch.from_numpy(np.ascontiguousarray(image))
        tensor = tensor[None] if tensor.ndim == 2 else tensor.permute(2, 0, 1)
    else:  # PIL
        if image.mode not in ("L", "RGB"):
            image = image.convert("RGB")
        array = np.asarray(image)
        tensor = torch.from_numpy(array.copy())
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


def carve_validation(view: SplitView, fraction: float, seed: int) -> tuple[SplitView, SplitView]:
    """A seeded, stratified validation split carved out of ``view``."""
    from sklearn.model_selection import train_test_split

    if not 0 < fraction < 1:
        raise UsageError(f"val_fraction must lie between 0 and 1, not {fraction}; use e.g. --set val_fraction=0.1")
    classes, counts = np.unique(view.labels, return_counts=True)
    n_val = math.ceil(fraction * len(view))
    stratify = view.labels if counts.min() >= 2 and n_val >= len(classes) else None
    train_pos, val_pos = train_test_split(
        np.arange(len(view)), test_size=fraction, random_state=seed, stratify=stratify
    )
    train_pos, val_pos = np.sort(train_pos), np.sort(val_pos)

    def pick(pos: np.ndarray) -> SplitView:
        return SplitView(view.source, view.dataset, view.indices[pos], view.labels[pos])

    return pick(train_pos), pick(val_pos)


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

    def __call__(self, images: torch.Tensor, augment: torch.Generator | None = None) -> torch.Tensor:
        """uint8 [N, C, h, w] (C = 1 or 3) to a normalised float batch; ``augment`` adds crop and flip."""
        x = images.float().div_(255)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        x = random_resized_crop_flip(x, self.size, augment) if augment is not None else self.resize_crop(x)
        return self.normalise(x.clamp(0, 1))  # bicubic overshoots


def random_resized_crop_flip(
    x: torch.Tensor, size: tuple[int, int], generator: torch.Generator, scale: tuple[float, float] = (0.35, 1.0)
) -> torch.Tensor:
    """Per-image random resized crop (aspect 3/4..4/3) and horizontal flip, batched with roi_align."""
    from torchvision.ops import roi_align

    n, _, h, w = x.shape
    area = torch.empty(n).uniform_(*scale, generator=generator) * h * w
    log_ratio = torch.empty(n).uniform_(math.log(3 / 4), math.log(4 / 3), generator=generator)
    ratio = torch.exp(log_ratio)
    cw = torch.sqrt(area * ratio).clamp(max=w)
    ch = torch.sqrt(area / ratio).clamp(max=h)
    x0 = torch.rand(n, generator=generator) * (w - cw)
    y0 = torch.rand(n, generator=generator) * (h - ch)
    boxes = torch.stack([torch.arange(n, dtype=torch.float), x0, y0, x0 + cw, y0 + ch], dim=1).to(x.device)
    out = roi_align(x, boxes, output_size=size, spatial_scale=1.0, sampling_ratio=2, aligned=True)
    flip = (torch.rand(n, generator=generator) < 0.5).to(x.device)
    return torch.where(flip.view(n, 1, 1, 1), out.flip(-1), out)


class LoadedImages:
    """A split's images decoded once: a uint8 tensor [N, C, h, w] when all share one size."""

    def __init__(self, dataset: Any):
        self.dataset = dataset
        self.tensor: torch.Tensor | None = None
        if isinstance(dataset, ImageTensorDataset):
            self.tensor = torch.as_tensor(dataset.images)
            if self.tensor.dtype != torch.uint8 or self.tensor.ndim != 4 or self.tensor.shape[1] not in (1, 3):
                raise UsageError(
                    f"ImageTensorDataset images must be uint8 [N, C, H, W] with C = 1 or 3, "
                    f"not {self.tensor.dtype} {tuple(self.tensor.shape)}"
                )
        else:
            first = as_uint8_chw(dataset[0][0]) if len(dataset) else None
            if first is not None and first.shape[-1] * first.shape[-2] <= 128 * 128:
                images = [as_uint8_chw(dataset[i][0]) for i in range(len(dataset))]
                if all(im.shape == first.shape for im in images):
                    self.tensor = torch.stack(images)

    def batch(self, indices: Sequence[int], preprocess: Preprocess) -> torch.Tensor:
        """uint8 images for ``indices``, each at one size (the preprocessing's resize for streamed sets)."""
        if self.tensor is not None:
            return self.tensor[torch.as_tensor(indices)]
        images = [as_uint8_chw(self.dataset[int(i)][0]) for i in indices]
        x = [preprocess.resize_crop(im[None].float()).round().clamp(0, 255).to(torch.uint8) for im in images]
        return torch.cat([im.expand(-1, 3, -1, -1) for im in x])


def iterate_batches(
    images: LoadedImages,
    view: SplitView,
    preprocess: Preprocess,
    *,
    batch_size: int,
    device: str,
    shuffle: torch.Generator | None = None,
    augment: torch.Generator | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Normalised image batches and labels of ``view`` on ``device``."""
    order = torch.randperm(len(view), generator=shuffle) if shuffle is not None else torch.arange(len(view))
    labels = torch.as_tensor(view.labels)
    pin = device.startswith("cuda")
    for start in range(0, len(view), batch_size):
        pos = order[start:start + batch_size]
        x = images.batch(view.indices[pos.numpy()], preprocess)
        if pin:
            x = x.pin_memory()
        x = x.to(device, non_blocking=pin)
        yield preprocess(x, augment), labels[pos].to(device, non_blocking=pin)
