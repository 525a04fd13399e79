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
from benchbone.records import PREPROCESS_VERSION  # in every feature-cache key and record (describe)

_MODES = {"bilinear": "bilinear", "bicubic": "bicubic", "nearest": "nearest", "area": "area"}
CROP_MODES = ("center", "squash", "border")  # timm's


@dataclass(frozen=True)
class Preprocess:
    """Resize (shorter side to size / crop_pct), centre-crop and normalise, in batches on the device.

    The geometry is that of the backbone library's eval transform, whatever the image's size (an image already
    at the input size is resized to size / crop_pct and cropped like any other):

    - a square input size S: the shorter side to ``floor(S / crop_pct)``, the longer in proportion, rounded
      down (torchvision's and transformers' ``Resize(int)``); a non-square (H, W): the side whose ratio to
      ``floor(H / crop_pct)``, ``floor(W / crop_pct)`` is smaller to its target, the other in proportion, rounded
      to nearest (timm's ``ResizeKeepRatio``);
    - the centred crop's offset ``round(d / 2)`` (torchvision's ``CenterCrop``: timm, open_clip) or, with
      ``crop_offset="floor"``, ``floor(d / 2)`` (transformers' image processors); an image smaller than the
      crop (crop_pct > 1) is padded with black first;
    - ``crop_mode`` (``backbone.info["crop_mode"]``: timm's pretrained config, or the hf/ plugin's reading of an
      image processor), as timm's ``transforms_imagenet_eval``: "center" as above; "squash", both sides to
      ``floor(side / crop_pct)`` whatever the aspect (transformers' resize to a height and width), then the
      centre crop; "border", the longer side (relative to ``floor(side / crop_pct)``) to it, the other in
      proportion, rounded to nearest (``ResizeKeepRatio(longest=1)``), then the centre crop, padded with the
      mean colour ``round(255 * mean)`` where the image is smaller (``CenterCropOrPad``).

    Images are resized as tensors on the device (``torch.nn.functional.interpolate``, antialiased), in PIL's
    two passes rounded to whole grey levels (``resize_crop``), so that they agree with PIL's resize to a grey
    level at most (tests/test_preprocessing.py).
    ``native_size=True`` (``--set native_size=true``) keeps the old rule: an image already at the input size
    passes unresized.
    """

    size: tuple[int, int]
    crop_pct: float
    interpolation: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    native_size: bool = False
    crop_offset: str = "round"
    crop_mode: str = "center"

    def __post_init__(self):
        if self.crop_mode not in CROP_MODES:
            raise UsageError(f"unsupported crop_mode {self.crop_mode!r}; use one of {list(CROP_MODES)}")

    @classmethod
    def for_backbone(cls, backbone: Backbone, image_size: int | None = None, native_size: bool = False) -> "Preprocess":
        size = (image_size, image_size) if image_size else tuple(backbone.input_size)
        if backbone.interpolation not in _MODES:
            raise UsageError(f"unsupported interpolation {backbone.interpolation!r}; use one of {sorted(_MODES)}")
        info = backbone.info or {}  # transformers' image processors (the hf/ plugin's backbones) floor the offset
        offset = "floor" if info.get("library") == "transformers" or "processor" in info else "round"
        return cls(size, float(backbone.crop_pct), backbone.interpolation, tuple(backbone.mean), tuple(backbone.std),
                   bool(native_size), offset, info.get("crop_mode") or "center")

    def describe(self) -> dict:
        return {"size": list(self.size), "crop_pct": self.crop_pct, "interpolation": self.interpolation,
                "mean": list(self.mean), "std": list(self.std), "native_size": self.native_size,
                "crop_offset": self.crop_offset, "crop_mode": self.crop_mode, "version": PREPROCESS_VERSION}

    def scale(self, side: int) -> int:
        """``floor(side / crop_pct)``, timm's ``scale_size``; the 1e-6 keeps a crop_pct given as crop / resize
        (torchvision's and transformers', e.g. 384 / 450) from flooring to resize - 1; it changes no timm config's"""
        return math.floor(side / self.crop_pct + 1e-6)

    def resized(self, h: int, w: int) -> tuple[int, int]:
        """The size an h x w image is resized to before the centre crop."""
        height, width = self.size
        if self.crop_mode == "squash":
            return self.scale(height), self.scale(width)
        if height == width and self.crop_mode == "center":
            scale = self.scale(height)
            if h <= w:
                return scale, max(1, int(scale * w / h))
            return max(1, int(scale * h / w)), scale
        target_h, target_w = self.scale(height), self.scale(width)
        ratio = (max if self.crop_mode == "border" else min)(h / target_h, w / target_w)
        return max(1, round(h / ratio)), max(1, round(w / ratio))

    def _offset(self, d: int) -> int:
        return d // 2 if self.crop_offset == "floor" else round(d / 2)  # Python rounds half to even, as CenterCrop

    def resize_crop(self, x: torch.Tensor) -> torch.Tensor:
        """Images [N, C, h, w] of grey levels 0..255 (uint8 or float) to float grey levels [N, C, H, W], whole
        numbers in 0..255; with ``native_size``, images already at the target size pass unchanged (as floats).

        Resized as PIL resizes (torchvision's ``Resize`` on a PIL image, in timm's eval transform): the width
        first, then the height, each pass antialiased and rounded to whole grey levels. Without the rounding,
        the difference from PIL is under a grey level on average, but it moves a pretrained EfficientNet-Lite0's
        features to cosine 0.985 of timm's; with it they agree to 0.9999 (tests/test_preprocessing.py).
        """
        height, width = self.size
        h, w = x.shape[-2:]
        x = x.float()
        if self.native_size and (h, w) == (height, width):
            return x
        new_h, new_w = self.resized(h, w)
        mode = _MODES[self.interpolation]
        kwargs = {"antialias": True, "align_corners": False} if mode in ("bilinear", "bicubic") else {}
        if new_w != w:
            x = F.interpolate(x, size=(h, new_w), mode=mode, **kwargs).round_().clamp_(0, 255)
        if new_h != h:
            x = F.interpolate(x, size=(new_h, new_w), mode=mode, **kwargs).round_().clamp_(0, 255)
        if new_h < height or new_w < width:  # crop_pct > 1 or "border": pad, then crop the other side
            ph, pw = max(0, height - new_h), max(0, width - new_w)
            pad = (pw // 2, (pw + 1) // 2, ph // 2, (ph + 1) // 2)
            if self.crop_mode == "border":  # the mean colour, a grey image as its RGB conversion (timm's fill)
                fill = torch.tensor([round(255 * m) for m in self.mean], dtype=x.dtype, device=x.device)
                x = F.pad(x.expand(-1, 3, -1, -1) - fill.view(1, 3, 1, 1), pad) + fill.view(1, 3, 1, 1)
            else:  # black, as CenterCrop does
                x = F.pad(x, pad)
        top, left = self._offset(x.shape[-2] - height), self._offset(x.shape[-1] - width)
        return x[..., top:top + height, left:left + width]

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor(self.mean, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        return (x - mean) / std

    def field_of_view(self, h: int, w: int) -> tuple[float, float]:
        """The height and width, in source pixels, of the centred region of an h x w image that
        ``resize_crop`` shows (all of it when ``native_size`` keeps it unresized)."""
        height, width = self.size
        if self.native_size and (h, w) == (height, width):
            return float(h), float(w)
        new_h, new_w = self.resized(h, w)
        return min(h, height * h / new_h), min(w, width * w / new_w)

    def __call__(self, images: torch.Tensor, augment: Callable[..., torch.Tensor] | None = None, *,
                 prepared: bool = False) -> torch.Tensor:
        """uint8 [N, C, h, w] (C = 1 or 3) to a normalised float batch; ``augment`` (from
        ``Augmentation.drawing_from``) replaces the resize and centre crop with random crops. ``prepared``:
        the images were resized and cropped already (streamed ones, in the loader's workers), so all of each
        is the view."""
        if augment is None and not prepared:
            x = self.resize_crop(images).div_(255)
        else:
            x = images.float().div_(255)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if augment is not None:
            view = (float(x.shape[-2]), float(x.shape[-1])) if prepared else self.field_of_view(*x.shape[-2:])
            x = augment(x, self.size, view)
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
