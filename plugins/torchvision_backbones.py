"""Backbones from torchvision, with ImageNet weights through torchvision's own weights mechanism."""
from __future__ import annotations

from functools import partial

from benchbone import Backbone, OfflineError, hookimpl

# arch -> (weights tags, the default tag)
MODELS = {"resnet50": (("IMAGENET1K_V2", "IMAGENET1K_V1"), "IMAGENET1K_V2")}


def build(arch: str, tag: str, pretrained: bool) -> Backbone:
    import torch
    import torchvision

    weights = torchvision.models.get_model_weights(arch)[tag]
    try:
        model = torchvision.models.get_model(arch, weights=weights if pretrained else None)
    except Exception as exc:  # URLError, timeouts: no network
        hub = torch.hub.get_dir()
        raise OfflineError(
            f"could not download torchvision weights {arch}.{tag} ({type(exc).__name__}: {exc}); "
            f"place {weights.url.rsplit('/', 1)[-1]} in {hub}/checkpoints (set TORCH_HOME to move it) "
            f"or use tv/{arch}.{tag}@random"
        ) from None
    num_features = model.fc.in_features
    model.fc = torch.nn.Identity()
    transforms = weights.transforms()
    crop, resize = transforms.crop_size[0], transforms.resize_size[0]
    return Backbone(
        model=model, num_features=num_features, input_size=crop, mean=transforms.mean, std=transforms.std,
        interpolation=transforms.interpolation.value, crop_pct=crop / resize,
        weights=f"{arch}.{tag}" if pretrained else "random",
        info={"params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 3)},
    )


@hookimpl
def benchbone_register_backbones(register):
    for arch, (tags, default) in MODELS.items():
        for tag in tags:
            aliases = (arch, f"tv/{arch}") if tag == default else ()
            register(f"tv/{arch}.{tag}", partial(build, arch, tag), aliases=aliases, pretrained=True,
                     description=f"torchvision {arch}, {tag} weights")
