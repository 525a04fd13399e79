"""The resize modes besides timm's default "center": timm's crop_mode "squash" and "border", and the geometry of
transformers' image processors (ViT's and DeiT's exact-size resize, ConvNeXt's crop_pct rule, CLIP's shortest
edge, PoolFormer's crop_pct), each against the library's own pipeline on the same images (test_preprocessing.py
has the default mode).

Per image, benchbone's batch and the library's differ by at most ``MAX_GREY`` = 2 grey levels of 0..255 (2/255 on
the [0, 1] scale: each resampler rounds each of its two passes to whole levels; measured 0 to 2, where a wrong
geometry is 150 to 250 apart), and the features of a tiny random conv net (a 4 x 4 grid of pooled activations,
so it sees where things are) have a cosine >= 0.999 (measured 1.0000; 0.66 to 0.99 for the wrong geometry).
"""
from __future__ import annotations

import pytest
import torch
from test_preprocessing import MIN_COSINE, benchbone_batch, photos, saved

from benchbone import UsageError
from benchbone.inputs.transforms import Preprocess
from benchbone.plugins import get_plugin_manager

MAX_GREY = 2.0


def grey_levels(x: torch.Tensor, mean, std) -> torch.Tensor:
    return (x * torch.tensor(std).view(1, 3, 1, 1) + torch.tensor(mean).view(1, 3, 1, 1)) * 255


def tiny_net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, 2, 1), torch.nn.ReLU(), torch.nn.Conv2d(16, 32, 3, 2, 1),
                               torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(4), torch.nn.Flatten()).eval()


def check(x: torch.Tensor, reference: torch.Tensor, mean, std) -> None:
    assert x.shape == reference.shape
    grey = (grey_levels(x, mean, std) - grey_levels(reference, mean, std)).abs().amax((1, 2, 3))
    net = tiny_net()
    with torch.inference_mode():
        cosine = torch.nn.functional.cosine_similarity(net(x), net(reference))
    assert grey.max() <= MAX_GREY + 1e-3 and cosine.min() >= MIN_COSINE, (grey, cosine)  # + float rounding


# W x H of the images for a 64 x 64 input (64 x 48 for the non-square one): smaller, equal, larger, wide, tall
SIZES = {"smaller": (40, 40), "equal": (64, 64), "larger": (96, 96), "wide": (100, 61), "tall": (45, 90)}


# ---------------------------------------------------------------- timm

@pytest.mark.parametrize("case", list(SIZES))
@pytest.mark.parametrize("mode, crop_pct, interpolation, input_size", [
    ("squash", 0.875, "bicubic", (64, 64)),
    ("squash", 1.0, "bilinear", (64, 48)),
    ("border", 0.875, "bicubic", (64, 64)),
    ("border", 1.0, "bilinear", (64, 64)),
    ("border", 0.95, "bilinear", (64, 48)),
])
def test_timm_crop_modes_match_create_transform(tmp_path, case, mode, crop_pct, interpolation, input_size):
    """A model whose pretrained_cfg says the mode: the timm plugin's Backbone gives it to Preprocess."""
    timm = pytest.importorskip("timm")
    from PIL import Image
    from timm.data import create_transform, resolve_data_config

    from benchbone_plugins.timm_backbones import to_backbone

    model = timm.create_model("test_resnet.r160_in1k", pretrained=False, num_classes=0, pretrained_cfg_overlay={
        "crop_mode": mode, "crop_pct": crop_pct, "interpolation": interpolation, "input_size": (3, *input_size)})
    backbone = to_backbone(model, "random", {})
    preprocess = Preprocess.for_backbone(backbone)
    assert (preprocess.crop_mode, preprocess.size) == (mode, input_size)
    config = resolve_data_config({}, model=model)
    assert config["crop_mode"] == mode
    transform = create_transform(**config)
    paths = saved(photos(6), tmp_path / case, SIZES[case])
    reference = torch.stack([transform(Image.open(p).convert("RGB")) for p in paths])
    check(benchbone_batch(paths, preprocess), reference, backbone.mean, backbone.std)


def test_border_pads_grey_images_with_the_mean_colour(tmp_path):
    """A grey image is padded with the (coloured) mean fill as timm pads its RGB conversion."""
    pytest.importorskip("timm")
    from PIL import Image
    from timm.data import create_transform

    paths = []
    for i, image in enumerate(photos(4)):
        paths.append(tmp_path / f"{i}.png")
        image.convert("L").resize((100, 61)).save(paths[-1])
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    transform = create_transform(input_size=(3, 64, 64), crop_pct=0.875, crop_mode="border", interpolation="bilinear",
                                 mean=mean, std=std)
    reference = torch.stack([transform(Image.open(p).convert("RGB")) for p in paths])
    preprocess = Preprocess((64, 64), 0.875, "bilinear", mean, std, crop_mode="border")
    check(benchbone_batch(paths, preprocess), reference, mean, std)


def test_each_mode_has_its_own_cache_key():
    """Features of another mode (or of the old "center" for these) are never reused."""
    described = {repr(Preprocess((64, 64), 0.875, "bicubic", (0.5,) * 3, (0.5,) * 3, crop_mode=m).describe())
                 for m in ("center", "squash", "border")}
    assert len(described) == 3
    with pytest.raises(UsageError, match="crop_mode"):
        Preprocess((64, 64), 0.875, "bicubic", (0.5,) * 3, (0.5,) * 3, crop_mode="letterbox")


# ---------------------------------------------------------------- transformers

def processors() -> dict:
    """Each processor family at a 64 px output (ConvNeXt's at 384 too, where its rule squashes)."""
    t = pytest.importorskip("transformers")
    return {
        "vit": lambda: t.ViTImageProcessor(size={"height": 64, "width": 64}),
        "vit-non-square": lambda: t.ViTImageProcessor(size={"height": 64, "width": 48}, resample=3),
        "deit": lambda: t.DeiTImageProcessor(size={"height": 73, "width": 73}, crop_size={"height": 64, "width": 64}),
        "convnext": lambda: t.ConvNextImageProcessor(size={"shortest_edge": 64}),
        "convnext-384": lambda: t.ConvNextImageProcessor(),
        "clip": lambda: t.CLIPImageProcessor(size={"shortest_edge": 64}, crop_size={"height": 64, "width": 64}),
        "poolformer": lambda: t.PoolFormerImageProcessor(size={"shortest_edge": 64},
                                                         crop_size={"height": 64, "width": 64}),
    }


def hf_backbone(folder, processor):
    """A tiny transformers model saved with ``processor`` and built by the hf/ plugin from the folder."""
    import transformers

    torch.manual_seed(0)
    model = transformers.ConvNextModel(transformers.ConvNextConfig(hidden_sizes=[8, 16], depths=[1, 1], num_stages=2))
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return get_plugin_manager(entrypoints=False).registries().backbones.get(f"hf/{folder}").obj(pretrained=True)


@pytest.mark.parametrize("case", list(SIZES))
@pytest.mark.parametrize("kind", ["vit", "vit-non-square", "deit", "convnext", "convnext-384", "clip", "poolformer"])
def test_hf_processors_pixel_values(offline, tmp_path, kind, case):
    import transformers
    from PIL import Image

    processor = processors()[kind]()
    ours = hf_backbone(tmp_path / kind, processor)
    scale = 6 if kind == "convnext-384" else 1  # images around 384 px for it
    paths = saved(photos(6), tmp_path / case, tuple(scale * s for s in SIZES[case]))
    loaded = transformers.AutoImageProcessor.from_pretrained(tmp_path / kind)
    assert type(loaded) is type(processor)
    reference = loaded(images=[Image.open(p).convert("RGB") for p in paths], return_tensors="pt")["pixel_values"]
    check(benchbone_batch(paths, Preprocess.for_backbone(ours)), reference, ours.mean, ours.std)


def test_a_geometry_benchbone_cannot_reproduce_is_one_line():
    """Height and width cropped in different proportions (one crop_pct cannot say it): refused, not approximated."""
    t = pytest.importorskip("transformers")
    from benchbone_plugins.hf_transformers import preprocessing

    deit = t.DeiTImageProcessor(size={"height": 256, "width": 320}, crop_size={"height": 224, "width": 224})
    with pytest.raises(UsageError, match="one crop_pct for both sides"):
        preprocessing(deit, "hf/x/deit")
    wide = t.DeiTImageProcessor(size={"height": 256, "width": 320}, crop_size={"height": 224, "width": 280})
    assert preprocessing(wide, "hf/x/deit")["info"]["crop_mode"] == "squash"
