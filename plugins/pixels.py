"""The ``pixels`` baseline: raw pixels, resized and normalised, as features. No weights, nothing learnt.

``pixels`` uses 32 x 32 images (3,072 features); ``pixels:N`` uses N x N. Every leaderboard can
show it beside the pretrained backbones, to measure what pretraining adds.
"""
from __future__ import annotations

from functools import partial

from benchbone import Backbone, UsageError, hookimpl

DEFAULT_SIZE = 32
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def build(size: int, pretrained: bool) -> Backbone:
    """Pool to ``size`` x ``size`` (a no-op at the preprocessed size) and flatten; ``pretrained`` changes nothing."""
    import torch

    model = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(size), torch.nn.Flatten())
    return Backbone(model=model, num_features=3 * size * size, input_size=size, mean=IMAGENET_MEAN,
                    std=IMAGENET_STD, interpolation="bilinear", crop_pct=1.0, weights="none",
                    info={"library": "benchbone", "pixels": size})


def sized(value: str):
    """The factory behind ``pixels:N``."""
    if not value.isdigit() or not 4 <= int(value) <= 256:
        raise UsageError(f"pixels:{value}: give an image side between 4 and 256, e.g. pixels:16")
    return partial(build, int(value))


@hookimpl
def benchbone_register_backbones(register):
    register("pixels", partial(build, DEFAULT_SIZE), pretrained=True, text=False,
             description=f"baseline: raw {DEFAULT_SIZE}x{DEFAULT_SIZE} pixels, normalised (no weights)")
    register("pixels:", sized, prefix=True, pretrained=True, text=False, description="baseline: raw NxN pixels, e.g. pixels:16")
