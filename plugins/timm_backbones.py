"""Every timm model, as ``timm/<arch>.<tag>`` per pretrained tag, plus ``timm/hf-hub:org/name``.

``timm/<arch>`` is an alias of timm's default tag; an arch without pretrained tags is listed as
``timm/<arch>`` for random init or ``--weights``. Features are ``forward_head(..., pre_logits=True)``
(``num_classes=0``); pretrained weights keep their ImageNet classifier, from the same checkpoint, as the source
head (``Backbone.source_head``); preprocessing comes from the pretrained config. Weights are read from the local
caches (Hugging Face under HF_HOME, torch.hub under TORCH_HOME) before any network access, and a
missing file fails at once when the hub cannot be reached.
"""
from __future__ import annotations

from functools import partial
from pathlib import Path

from benchbone import Backbone, UsageError, hookimpl
from benchbone.helpers import at_layer, hub_cached, layer_names

HUB_HOST = "huggingface.co"
HUB_FILES = ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin")


def local_weights(name: str) -> str | None:
    """A cached weights file for a ``arch.tag`` name, looked up without touching the network."""
    import os
    from urllib.parse import urlparse

    import torch
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(name)
    if cfg is None:
        return None
    if cfg.file and Path(cfg.file).is_file():
        return cfg.file
    if cfg.hf_hub_id:
        found = hub_cached(cfg.hf_hub_id, [f for f in (cfg.hf_hub_filename, *HUB_FILES) if f])
        if found:
            return found
    if cfg.url:
        path = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(cfg.url).path)
        if path.is_file():
            return str(path)
    return None


def create(source: str, pretrained: bool, **kwargs):
    """timm's model of ``source`` without its classifier (as ``num_classes=0`` builds it) and, for pretrained
    weights whose classifier predicts an ImageNet label set, that classifier as a source head (``source_head``);
    None for random init and other heads (CLIP's projection to its embedding is not a classifier)."""
    import timm
    from timm.data import infer_imagenet_subset

    if not pretrained:
        return timm.create_model(source, pretrained=False, num_classes=0, **kwargs), None
    model = timm.create_model(source, pretrained=True, **kwargs)  # the checkpoint's classifier loaded too
    classifier = model.get_classifier() if infer_imagenet_subset(model) else None
    model.reset_classifier(0)
    return model, source_head(classifier)


def source_head(classifier):
    """``classifier`` as a map of pooled features [N, D] to logits: a Linear, or BiT's 1x1 convolution; None for
    anything else (no classifier, a distilled model's pair of heads)."""
    import torch

    if isinstance(classifier, torch.nn.Linear):
        return classifier.eval()
    if isinstance(classifier, torch.nn.Conv2d) and classifier.kernel_size == (1, 1):
        return torch.nn.Sequential(torch.nn.Unflatten(1, (classifier.in_channels, 1, 1)), classifier,
                                   torch.nn.Flatten(1)).eval()
    return None


def to_backbone(model, weights: str, info: dict, head=None) -> Backbone:
    from timm.data import resolve_data_config

    config = resolve_data_config({}, model=model)
    return Backbone(
        model=model, num_features=getattr(model, "head_hidden_size", None) or model.num_features,
        input_size=config["input_size"], mean=config["mean"], std=config["std"],
        interpolation=config["interpolation"], crop_pct=config["crop_pct"], weights=weights,
        info={"library": "timm", "classifier": model.pretrained_cfg.get("classifier"),
              "crop_mode": config.get("crop_mode", "center"), **info}, source_head=head,
    )


def build(name: str, pretrained: bool, layer: str | None = None) -> Backbone:
    from benchbone.helpers import is_offline, offline_error

    overlay = {}
    if pretrained:
        file = local_weights(name)
        if file:
            overlay = {"file": file}
        elif is_offline(HUB_HOST):
            raise offline_error(f"timm/{name}", "not in the Hugging Face or torch.hub cache")
    model, head = create(name, pretrained, pretrained_cfg_overlay=overlay or None)
    backbone = to_backbone(model, f"timm/{name}" if pretrained else "random", {"arch": name.split(".")[0], "name": name},
                           head)
    return at_layer(backbone, model, layer) if layer else backbone


def build_hub(repo: str, pretrained: bool) -> Backbone:
    """A model from a Hugging Face repo holding a timm config.json (and weights)."""
    from benchbone.helpers import is_offline, offline_error

    config = hub_cached(repo, ["config.json"])
    weights = hub_cached(repo, HUB_FILES)
    if config and (weights or not pretrained):
        source = f"local-dir:{Path(config).parent}"
    elif is_offline(HUB_HOST):
        raise offline_error(f"timm/hf-hub:{repo}", "its config.json and weights are not in the Hugging Face cache")
    else:
        source = f"hf-hub:{repo}"
    model, head = create(source, pretrained)
    return to_backbone(model, f"hf-hub:{repo}" if pretrained else "random", {"hf_hub_id": repo}, head)


def hub_entry(repo: str):
    """The factory behind ``timm/hf-hub:org/name``."""
    if repo.count("/") != 1 or not all(repo.split("/")):
        raise UsageError(f"timm/hf-hub:{repo}: give a Hugging Face repo as org/name, e.g. timm/hf-hub:timm/resnet50.a1_in1k")
    return partial(build_hub, repo)


@hookimpl
def benchbone_register_backbones(register):
    import timm
    from timm.models import get_pretrained_cfg

    with_weights = set()
    for name in timm.list_models(pretrained=True):
        arch, _, tag = name.partition(".")
        with_weights.add(arch)
        default = get_pretrained_cfg(arch)
        aliases = (f"timm/{arch}",) if default is not None and default.tag == tag else ()
        register(f"timm/{name}", partial(build, name), aliases=aliases, pretrained=True, text=False,
                 layers=partial(layer_names, arch), description=f"timm {arch}, {tag} weights")
    for arch in timm.list_models():
        if arch not in with_weights:
            register(f"timm/{arch}", partial(build, arch), pretrained=False, text=False, layers=partial(layer_names, arch),
                     description=f"timm {arch}, no pretrained weights in timm: @random or --weights")
    register("timm/hf-hub:", hub_entry, prefix=True, pretrained=True, text=False,
             description="any timm model on the Hugging Face hub: timm/hf-hub:org/name")
