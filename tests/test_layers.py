"""Layer-wise probing: --set layer=NAME / layers=all, checked against forward hooks on the named modules."""
from __future__ import annotations

import json

import pytest
import torch

from benchbone.plugins import get_plugin_manager


@pytest.fixture(scope="module")
def backbones():
    return get_plugin_manager(entrypoints=False).registries().backbones


def hooked(model: torch.nn.Module, module_name: str, x: torch.Tensor) -> torch.Tensor:
    """The output of ``module_name`` in a full forward pass of ``model``: the reference for a cut network."""
    seen = []
    handle = model.get_submodule(module_name).register_forward_hook(lambda m, i, out: seen.append(out))
    with torch.inference_mode():
        model(x)
    handle.remove()
    return seen[0]


@pytest.mark.parametrize("name, layer, names", [
    ("timm/resnet18", "layer2", ["act1", "layer1", "layer2", "layer3", "layer4"]),
    ("efficientnet_lite0", "blocks.4", ["blocks.0", "blocks.1", "blocks.2", "blocks.4", "blocks.6"]),
    ("timm/vit_tiny_patch16_224", "blocks.3", [f"blocks.{i}" for i in range(12)]),
    ("tv/resnet18", "layer3.1", None),
    ("tv/vit_b_16", "encoder.layers.encoder_layer_3", None),
])
def test_a_layer_is_the_pooled_output_of_that_block(backbones, name, layer, names):
    import timm
    import torchvision

    entry = backbones.get(name)
    valid = entry.meta["layers"]()
    assert layer in valid and (names is None or valid == names)
    torch.manual_seed(0)
    cut = entry.obj(pretrained=False, layer=layer)
    torch.manual_seed(0)
    if name.startswith("tv/"):
        full = torchvision.models.get_model(cut.info["arch"], weights=None).eval()
    else:
        full = timm.create_model(cut.info["arch"] if name.startswith("efficientnet") else name[5:], num_classes=0).eval()
    x = torch.randn(2, 3, *cut.input_size)
    out = hooked(full, layer, x)
    expected = torch.cat([out[:, 0], out[:, 1:].mean(1)], 1) if out.ndim == 3 else out.mean((2, 3))
    with torch.inference_mode():
        got = cut.model(x)
    assert got.shape == (2, cut.num_features) and cut.info["layer"] == layer
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert cut.info["layer_pooling"] == ("class token + mean patch token" if out.ndim == 3 else "global average")


@pytest.mark.slow
def test_layers_all_gives_one_row_per_layer_and_caches_each(cli, tmp_path):
    args = ["run", "-b", "efficientnet_lite0", "-b", "pixels:8", "-d", "digits", "-s", "knn", "--set", "layers=all",
            "--set", "image_size=32", "--set", "train_per_class=10", "-q"]
    result = cli(*args, "--set", "test_per_class=5", "--out", tmp_path / "a")
    assert result.code == 0, result.err
    board = json.loads((tmp_path / "a" / "leaderboard.json").read_text())
    assert sorted(row["backbone"] for row in board) == sorted(
        [f"efficientnet_lite0#blocks.{i}" for i in (0, 1, 2, 4, 6)] + ["pixels:8"])
    assert {row["num_features"] for row in board if "#" in row["backbone"]} == {16, 24, 40, 112, 320}
    plotted = cli("leaderboard", tmp_path / "a", "--plot-layers", tmp_path / "layers.png", "-o", tmp_path / "lb.md")
    assert plotted.code == 0 and (tmp_path / "layers.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    again = cli(*args, "--set", "test_per_class=4", "--out", tmp_path / "b")  # new cells, the same train features
    assert again.code == 0, again.err
    records = [json.loads(p.read_text()) for p in (tmp_path / "b" / "records").glob("*.json")]
    assert all(r["features"]["train"]["cached"] for r in records) and len(records) == 6


def test_unknown_layer_lists_the_valid_ones(cli, tmp_path):
    result = cli("run", "-b", "efficientnet_lite0", "-d", "digits", "-s", "knn", "--set", "layer=blocks.3",
                 "--out", tmp_path / "out")
    assert result.code == 2 and result.err.count("\n") == 1
    assert ("--set layer=blocks.3: backbone 'efficientnet_lite0' has no layer 'blocks.3'; its layers: "
            "blocks.0, blocks.1, blocks.2, blocks.4, blocks.6") in result.err
    result = cli("run", "-b", "pixels", "-d", "digits", "-s", "knn", "--set", "layer=blocks.3", "--out", tmp_path / "out")
    assert result.code == 2 and "no backbone of this run offers intermediate layers" in result.err
    assert not (tmp_path / "out").exists()
