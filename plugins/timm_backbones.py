"""Backbones from timm, with pretrained weights through timm's own mechanism (Hugging Face hub)."""
from __future__ import annotations

from functools import partial

from benchbone import Backbone, OfflineError, hookimpl

# timm names with their pretrained tag; the first tag of an architecture is its default
MODELS = ("resnet50.a1_in1k",)


def build(name: str, pretrained: bool) -> Backbone:
    import timm
    from timm.data import resolve_data_config

    try:
        model = timm.create_model(name, pretrained=pretrained, num_classes=0)
    except Exception as exc:  # hub errors, no network
        if not pretrained:
            raise
        raise OfflineError(
            f"could not download timm weights {name} ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); "
            "put them in the Hugging Face cache (HF_HOME, then HF_HUB_OFFLINE=1) "
            f"or use timm/{name}@random"
        ) from None
    config = resolve_data_config({}, model=model)
    return Backbone(
        model=model, num_features=model.num_features, input_size=config["input_size"], mean=config["mean"],
        std=config["std"], interpolation=config["interpolation"], crop_pct=config["crop_pct"],
        weights=name if pretrained else "random",
        info={"params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 3)},
    )


@hookimpl
def benchbone_register_backbones(register):
    defaults = set()
    for name in MODELS:
        arch = name.split(".")[0]
        aliases = () if arch in defaults else (f"timm/{arch}",)
        defaults.add(arch)
        register(f"timm/{name}", partial(build, name), aliases=aliases, pretrained=True,
                 description=f"timm {name}")
