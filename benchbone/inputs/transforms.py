"""From uint8 images to the backbone's normalised input: resize, centre crop, augmentation."""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F

from benchbone.api import Backbone
from benchbone.errors import UsageError

_MODES = {"bilinear": "bilinear", "bicubic": "bicubic", "nearest": "nearest", "area": "area"}


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
