"""hf/ORG/NAME (transformers) and openclip/ backbones: tiny random-init models saved in the Hugging Face
cache's own layout, loaded offline by the real code, checked against the libraries' own forward passes."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import hub_snapshot

from benchbone import OfflineError, UsageError
from benchbone.plugins import get_plugin_manager

CIFAR = next((p for p in [Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpeg",
                          Path("/work/shared/data/cifar10-jpeg")] if p.is_dir()), None)
COMMIT = "1" * 40


def backbone(name: str, pretrained: bool = True):
    return get_plugin_manager(entrypoints=False).registries().backbones.get(name).obj(pretrained=pretrained)


# ---------------------------------------------------------------- transformers

def tiny_models():
    t = pytest.importorskip("transformers")
    vit = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, image_size=32,
               patch_size=8)
    return {
        "vit": (t.ViTModel(t.ViTConfig(**vit)), t.ViTImageProcessor(size={"height": 32, "width": 32})),
        "dinov2": (t.Dinov2Model(t.Dinov2Config(**{**vit, "intermediate_size": 0, "image_size": 40}, mlp_ratio=2)),
                   t.BitImageProcessor(size={"shortest_edge": 48}, crop_size={"height": 40, "width": 40},
                                       image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225])),
        "convnext": (t.ConvNextModel(t.ConvNextConfig(hidden_sizes=[8, 16], depths=[1, 1], num_stages=2)),
                     t.ConvNextImageProcessor(size={"shortest_edge": 32})),
        "dino-v1": (t.ViTModel(t.ViTConfig(**vit), add_pooling_layer=False),  # saved without pooler weights
                    t.ViTImageProcessor(size={"height": 32, "width": 32}, resample=3)),
    }


def save_tiny(cache: Path, kind: str) -> tuple[str, Path]:
    torch.manual_seed(0)
    model, processor = tiny_models()[kind]
    repo = f"tinyorg/{kind}"
    folder = hub_snapshot(cache, repo, COMMIT)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return repo, folder


@pytest.mark.parametrize("kind, size, crop_pct, interpolation, mean", [
    ("vit", (32, 32), 1.0, "bilinear", (0.5,) * 3),
    ("dinov2", (40, 40), 40 / 48, "bicubic", (0.485, 0.456, 0.406)),
    ("convnext", (32, 32), 0.875, "bicubic", (0.5,) * 3),
])
def test_transformers_features_are_the_librarys_pooled_output(offline, kind, size, crop_pct, interpolation, mean):
    import transformers

    repo, folder = save_tiny(offline, kind)
    ours = backbone(f"hf/{repo}")
    assert ours.weights == f"hf/{repo}@{COMMIT}" and ours.info["pooling"] == "pooler_output"
    assert (ours.input_size, ours.interpolation, ours.mean) == (size, interpolation, mean)
    assert ours.crop_pct == pytest.approx(crop_pct)
    reference = transformers.AutoModel.from_pretrained(folder).eval()
    x = torch.randn(5, 3, *size, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        expected = reference(pixel_values=x).pooler_output
        got = ours.model(x)
    assert got.shape == (5, ours.num_features)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_checkpoint_without_pooler_gives_the_class_token(offline):
    import transformers

    repo, folder = save_tiny(offline, "dino-v1")
    ours = backbone(f"hf/{repo}")
    assert ours.info["pooling"].startswith("class token") and ours.interpolation == "bicubic"
    reference = transformers.ViTModel.from_pretrained(folder, add_pooling_layer=False).eval()
    x = torch.randn(3, 3, 32, 32)
    with torch.inference_mode():
        torch.testing.assert_close(ours.model(x), reference(pixel_values=x).last_hidden_state[:, 0], rtol=0, atol=0)


@pytest.mark.skipif(CIFAR is None, reason="the CIFAR-10 JPEG copy is not here")
def test_harness_preprocessing_matches_the_image_processor_on_real_images(offline):
    """Real photos through benchbone's resize/crop/normalise vs the processor's own: the same features.

    32 px photos, resized to 48 and centre-cropped to 40 by both."""
    import transformers
    from PIL import Image

    from benchbone.inputs.folders import ImageFiles
    from benchbone.inputs.loading import LoadedImages, iterate_batches
    from benchbone.inputs.splits import whole
    from benchbone.inputs.transforms import Preprocess

    repo, folder = save_tiny(offline, "dinov2")
    ours = backbone(f"hf/{repo}")
    paths = sorted((CIFAR / "test" / "cat").glob("*.jpg"))[:16]
    files = ImageFiles(paths, [0] * len(paths))
    (x, _), = list(iterate_batches(LoadedImages(files), whole("test", files), Preprocess.for_backbone(ours),
                                   batch_size=16, device="cpu"))
    processor = transformers.AutoImageProcessor.from_pretrained(folder)
    reference = transformers.AutoModel.from_pretrained(folder).eval()
    pixels = processor(images=[Image.open(p).convert("RGB") for p in paths], return_tensors="pt")["pixel_values"]
    assert pixels.shape == x.shape
    assert (x - pixels).abs().mean() < 0.02  # resamplers differ by a grey level or so, not in geometry
    with torch.inference_mode():
        got, expected = ours.model(x), reference(pixel_values=pixels).pooler_output
    cosine = torch.nn.functional.cosine_similarity(got, expected)
    assert cosine.min() > 0.995, cosine


def test_transformers_offline_errors_are_one_line(offline, monkeypatch):
    pytest.importorskip("transformers")
    started = time.perf_counter()
    with pytest.raises(OfflineError) as info:
        backbone("hf/tinyorg/absent")
    message = str(info.value)
    assert time.perf_counter() - started < 5 and "\n" not in message
    assert all(w in message for w in ("hf/tinyorg/absent", "HF_HOME", "hf download tinyorg/absent", "hf/PATH"))
    repo, folder = save_tiny(offline, "vit")
    (folder / "model.safetensors").unlink()  # config and processor only: random init still builds
    assert backbone(f"hf/{repo}", pretrained=False).weights == "random"
    with pytest.raises(OfflineError, match="config.json, preprocessor_config.json and weights"):
        backbone(f"hf/{repo}")
    with pytest.raises(UsageError, match=r"hf/ORG/NAME \(e.g. hf/facebook/dinov2-small\)"):
        backbone("hf/just-a-name")
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(UsageError, match=r"pip install 'benchbone\[transformers\]'"):
        backbone(f"hf/{repo}")


def test_save_pretrained_folder_runs_in_a_grid(offline, tmp_path, cli):
    _, folder = save_tiny(offline, "convnext")
    result = cli("run", "-b", f"hf/{folder}", "-b", f"hf/{folder}@random", "-p", "benchbone.testing",
                 "-d", "test/blobs", "-s", "knn", "-q", "--out", tmp_path / "run")
    assert result.code == 0, result.err
    board = json.loads((tmp_path / "run" / "leaderboard.json").read_text())
    assert {row["status"] for row in board} == {"ok"} and len(board) == 2


# ---------------------------------------------------------------- open_clip

def save_tiny_clip(cache: Path) -> tuple[str, Path]:
    open_clip = pytest.importorskip("open_clip")
    from safetensors.torch import save_file

    model_cfg = {"embed_dim": 16, "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "patch_size": 8,
                                                 "head_width": 16},
                 "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 16, "heads": 2, "layers": 1}}
    preprocess = {"mean": [0.48145466, 0.4578275, 0.40821073], "std": [0.26862954, 0.26130258, 0.27577711],
                  "interpolation": "bicubic", "resize_mode": "shortest"}
    repo = "tinyorg/clip"
    folder = hub_snapshot(cache, repo, COMMIT)
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": model_cfg, "preprocess_cfg": preprocess}))
    torch.manual_seed(0)
    model = open_clip.CLIP(**model_cfg)
    save_file(model.state_dict(), str(folder / "open_clip_model.safetensors"))
    return repo, folder


def test_openclip_features_are_encode_image(offline):
    import open_clip

    pytest.importorskip("open_clip")
    repo, folder = save_tiny_clip(offline)
    ours = backbone(f"openclip/hf-hub:{repo}")
    assert ours.weights == f"openclip/hf-hub:{repo}@{COMMIT}" and ours.num_features == 16
    assert ours.input_size == (32, 32) and ours.interpolation == "bicubic" and ours.mean[0] == pytest.approx(0.48145466)
    reference = open_clip.create_model(f"local-dir:{folder}").eval()
    x = torch.randn(4, 3, 32, 32)
    with torch.inference_mode():
        torch.testing.assert_close(ours.model(x), reference.encode_image(x), rtol=0, atol=0)
    assert not torch.equal(backbone(f"openclip/hf-hub:{repo}", pretrained=False).model(x), ours.model(x))


def test_openclip_names_and_offline_errors(offline):
    pytest.importorskip("open_clip")
    with pytest.raises(UsageError, match=r"unknown open_clip architecture 'ViT-B-33'; did you mean ViT-B-32"):
        backbone("openclip/ViT-B-33:openai")
    with pytest.raises(UsageError, match=r"RN50 has no pretrained tag 'nope'; its tags: openai, "):
        backbone("openclip/RN50:nope")
    with pytest.raises(UsageError, match=r"names no pretrained tag; ask for openclip/RN50:TAG"):
        backbone("openclip/RN50")
    for name in ("openclip/RN50:openai", "openclip/hf-hub:tinyorg/absent"):
        started = time.perf_counter()
        with pytest.raises(OfflineError) as info:
            backbone(name)
        assert time.perf_counter() - started < 5 and "\n" not in str(info.value)
        assert all(w in str(info.value) for w in (name, "HF_HOME", "~/.cache/clip", f"{name}@random"))
