"""Every torchvision classification model and weights tag, as ``tv/<arch>.<TAG>``.

``tv/<arch>`` is an alias of the arch's DEFAULT tag, and a bare ``resnet50`` is an alias of
``tv/resnet50.IMAGENET1K_V2``. Features are the input of the final classifier (pooled pre-logits), and with
pretrained weights that classifier (a Linear) is the source head (``Backbone.source_head``); preprocessing
comes from the weights' own transforms. Pretrained files are read from ``$TORCH_HOME/hub/checkpoints``; a
missing file is downloaded only when the network answers.
"""
from __future__ import annotations

import contextlib
import os
import sys
from functools import partial

from benchbone import Backbone, hookimpl

BARE_ALIASES = {"tv/resnet50.IMAGENET1K_V2": ("resnet50",)}
HOST = "download.pytorch.org"


def strip_classifier(model) -> tuple[int, str, object]:
    """Replace the final classifier by an identity; return the feature dimension, the classifier's path and the
    classifier (a Linear from features to logits; None for squeezenet's, which pools after it)."""
    import torch

    linears = [(name, m) for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    if not linears:  # squeezenet: Dropout, 1x1 conv to classes, ReLU, pool; keep only the pooling
        conv = model.classifier[1]
        model.classifier = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1))
        return conv.in_channels, "classifier", None
    name, linear = linears[-1]
    model.set_submodule(name, torch.nn.Identity())
    return linear.in_features, name, linear.eval()


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


def blocks(model) -> list[str]:
    """Module paths of the blocks a layer-wise probe may pick: non-leaf children of the model or of a container."""
    import torch

    containers = (torch.nn.Sequential, torch.nn.ModuleList, torch.nn.ModuleDict)
    modules = dict(model.named_modules())
    return [name for name, module in modules.items() if name and any(True for _ in module.children())
            and (("." not in name) or isinstance(modules[name.rpartition(".")[0]], containers))]


def layer_names(arch: str, tag: str) -> list[str]:
    """The blocks of ``arch`` (built on the meta device: no weights, no memory)."""
    import torch
    import torchvision

    weights = torchvision.models.get_model_weights(arch)[tag]
    try:
        with torch.device("meta"):
            return blocks(torchvision.models.get_model(arch, weights=None, **arch_kwargs(arch, weights)))
    except Exception:  # an init that needs real tensors (inception's truncated normal): build it on the CPU
        return blocks(torchvision.models.get_model(arch, weights=None, **arch_kwargs(arch, weights)))


def at_layer(backbone: Backbone, model, layer: str) -> Backbone:
    """``backbone`` cut at block ``layer`` by ``create_feature_extractor``, average pooled; token outputs
    [N, L, C] (ViT) give [class token, mean patch token]."""
    import torch
    from torchvision.models.feature_extraction import create_feature_extractor

    extractor = create_feature_extractor(model, return_nodes={layer: "out"})

    class Intermediate(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = extractor

        def forward(self, x):
            out = self.net(x)["out"]
            if out.ndim == 4:
                return out.mean((2, 3))
            return torch.cat([out[:, 0], out[:, 1:].mean(1)], dim=1) if out.ndim == 3 else out.flatten(1)

    module = Intermediate().eval()
    with torch.inference_mode():
        sample = module.net(torch.zeros(1, 3, *backbone.input_size))["out"]
        num_features = module(torch.zeros(1, 3, *backbone.input_size)).shape[1]
    pooling = {4: "global average", 3: "class token + mean patch token"}.get(sample.ndim, "flattened")
    backbone.model, backbone.num_features, backbone.info = module, int(num_features), {
        **backbone.info, "layer": layer, "layer_pooling": pooling, "classifier": None}
    backbone.source_head = None  # it reads the final features, not this layer's
    return backbone


def build(arch: str, tag: str, pretrained: bool, layer: str | None = None) -> Backbone:
    import torchvision

    from benchbone.helpers import is_offline, offline_error

    weights = torchvision.models.get_model_weights(arch)[tag]
    if pretrained:
        path = checkpoint_path(weights)
        if not path.is_file() and is_offline(HOST):
            raise offline_error(f"tv/{arch}.{tag}", f"no {path}")
        with contextlib.redirect_stdout(sys.stderr), weights_only_loading():  # torch.hub prints on stdout
            model = torchvision.models.get_model(arch, weights=weights, progress=False)
    else:
        model = torchvision.models.get_model(arch, weights=None, **arch_kwargs(arch, weights))
    num_features, classifier, head = strip_classifier(model)
    transforms = weights.transforms()
    crop, resize = transforms.crop_size[0], transforms.resize_size[0]
    backbone = Backbone(
        model=model, num_features=num_features, input_size=crop, mean=transforms.mean, std=transforms.std,
        interpolation=transforms.interpolation.value, crop_pct=crop / resize,
        weights=f"tv/{arch}.{tag}" if pretrained else "random",
        info={"library": "torchvision", "arch": arch, "tag": tag, "classifier": classifier},
        source_head=head if pretrained else None,
    )
    return at_layer(backbone, model, layer) if layer else backbone


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
            register(name, partial(build, arch, weights.name), aliases=aliases, pretrained=True, text=False,
                     layers=partial(layer_names, arch, weights.name), description=describe(arch, weights))
