"""Every torchvision classification model and weights tag, as ``tv/<arch>.<TAG>``.

``tv/<arch>`` is an alias of the arch's DEFAULT tag, and a bare ``resnet50`` is an alias of
``tv/resnet50.IMAGENET1K_V2``. Features are the input of the final classifier (pooled pre-logits);
preprocessing comes from the weights' own transforms. Pretrained files are read from
``$TORCH_HOME/hub/checkpoints``; a missing file is downloaded only when the network answers.
"""
from __future__ import annotations

import contextlib
import os
import sys
from functools import partial

from benchbone import Backbone, hookimpl

BARE_ALIASES = {"tv/resnet50.IMAGENET1K_V2": ("resnet50",)}
HOST = "download.pytorch.org"


def strip_classifier(model) -> tuple[int, str]:
    """Replace the final classifier by an identity; return the feature dimension and the classifier's path."""
    import torch

    linears = [(name, m) for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    if not linears:  # squeezenet: Dropout, 1x1 conv to classes, ReLU, pool; keep only the pooling
        conv = model.classifier[1]
        model.classifier = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1))
        return conv.in_channels, "classifier"
    name, linear = linears[-1]
    model.set_submodule(name, torch.nn.Identity())
    return linear.in_features, name


def arch_kwargs(arch: str, weights) -> dict:
    """What torchvision's builders set from a weights tag, so random init has the tag's exact architecture."""
    kwargs = {"num_classes": len(weights.meta["categories"])}
    if arch.startswith("vit_"):
        kwargs["image_size"] = weights.meta["min_size"][0]
    if arch in ("googlenet", "inception_v3"):
        kwargs.update(transform_input=True, aux_logits=False, init_weights=True)
    return kwargs


def checkpoint_path(weights):
    """Where torch.hub keeps (or would keep) the tag's file."""
    import os
    from pathlib import Path
    from urllib.parse import urlparse

    import torch

    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(weights.url).path)


@contextlib.contextmanager
def weights_only_loading():
    """torch.hub unpickles cached checkpoints with ``weights_only=False``; torch.load honours this variable
    and then reads tensors and plain data only, so a tampered file in the cache cannot run code."""
    before = os.environ.get("TORCH_FORCE_WEIGHTS_ONLY_LOAD")
    os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("TORCH_FORCE_WEIGHTS_ONLY_LOAD", None)
        else:
            os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = before


def build(arch: str, tag: str, pretrained: bool) -> Backbone:
    import torchvision

    from benchbone.weights import is_offline, offline_error

    weights = torchvision.models.get_model_weights(arch)[tag]
    if pretrained:
        path = checkpoint_path(weights)
        if not path.is_file() and is_offline(HOST):
            raise offline_error(f"tv/{arch}.{tag}", f"no {path}")
        with contextlib.redirect_stdout(sys.stderr), weights_only_loading():  # torch.hub prints on stdout
            model = torchvision.models.get_model(arch, weights=weights, progress=False)
    else:
        model = torchvision.models.get_model(arch, weights=None, **arch_kwargs(arch, weights))
    num_features, classifier = strip_classifier(model)
    transforms = weights.transforms()
    crop, resize = transforms.crop_size[0], transforms.resize_size[0]
    return Backbone(
        model=model, num_features=num_features, input_size=crop, mean=transforms.mean, std=transforms.std,
        interpolation=transforms.interpolation.value, crop_pct=crop / resize,
        weights=f"tv/{arch}.{tag}" if pretrained else "random",
        info={"library": "torchvision", "arch": arch, "tag": tag, "classifier": classifier},
    )


def describe(arch: str, weights) -> str:
    metrics = weights.meta.get("_metrics", {}).get("ImageNet-1K", {})
    top1 = f", ImageNet top-1 {metrics['acc@1']:.1f}%" if "acc@1" in metrics else ""
    return f"torchvision {arch}, {weights.name} weights{top1}"


@hookimpl
def benchbone_register_backbones(register):
    import torchvision

    for arch in torchvision.models.list_models(module=torchvision.models):
        tags = torchvision.models.get_model_weights(arch)
        default = tags.DEFAULT.name
        for weights in tags:
            name = f"tv/{arch}.{weights.name}"
            aliases = ((f"tv/{arch}",) if weights.name == default else ()) + BARE_ALIASES.get(name, ())
            register(name, partial(build, arch, weights.name), aliases=aliases, pretrained=True,
                     description=describe(arch, weights))
