"""zero-shot: CLIP-style classification through a backbone's text tower (plugins/zero_shot.py).

Tiny random-init open_clip and Hugging Face CLIP models, saved in the Hugging Face cache's layout and loaded
offline by the real plugins, against the libraries' own zero-shot computations with the same templates; the
grid leaving out backbones without a text tower; open_clip checkpoints through --weights; open_clip's logging.
"""
from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from benchbone import UsageError
from benchbone.plugins import get_plugin_manager
from benchbone.testing import make_context

open_clip = pytest.importorskip("open_clip")
transformers = pytest.importorskip("transformers")

from conftest import hub_snapshot

from benchbone_plugins import zero_shot as zs  # noqa: E402

COMMIT = "2" * 40
CIFAR10 = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
OPENCLIP_CFG = {"embed_dim": 16,
                "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "patch_size": 8, "head_width": 16},
                "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 1}}
CLIP_MEAN, CLIP_STD = [0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]


def backbone(name: str, pretrained: bool = True):
    return registries().backbones.get(name).obj(pretrained=pretrained)


def registries():
    return get_plugin_manager(entrypoints=False).registries()


def tiny_openclip(seed: int = 0, cfg: dict = OPENCLIP_CFG):
    torch.manual_seed(seed)
    model = open_clip.CLIP(**cfg)
    with torch.no_grad():
        model.logit_scale.fill_(math.log(100.0))  # a trained model's temperature, not the init's 1/0.07
    return model


def save_openclip(cache: Path, repo: str = "tinyorg/clip") -> tuple[str, Path]:
    from safetensors.torch import save_file

    folder = hub_snapshot(cache, repo, COMMIT)
    preprocess = {"mean": CLIP_MEAN, "std": CLIP_STD, "interpolation": "bicubic", "resize_mode": "shortest"}
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": OPENCLIP_CFG, "preprocess_cfg": preprocess}))
    save_file(tiny_openclip().state_dict(), str(folder / "open_clip_model.safetensors"))
    return repo, folder


def clip_tokenizer(folder: Path):
    """The OpenAI CLIP tokenizer as transformers saves it, made offline from open_clip's bundled BPE vocabulary."""
    from open_clip.tokenizer import SimpleTokenizer

    simple = SimpleTokenizer()
    special = {"<start_of_text>": "<|startoftext|>", "<end_of_text>": "<|endoftext|>"}
    vocab = {special.get(token, token): i for token, i in simple.encoder.items()}
    merges = sorted(simple.bpe_ranks, key=simple.bpe_ranks.get)
    source = folder / "bpe"
    source.mkdir()
    (source / "vocab.json").write_text(json.dumps(vocab))
    (source / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")
    tokenizer = transformers.CLIPTokenizer.from_pretrained(source)
    assert tokenizer("a photo of a cat.")["input_ids"] == [49406, 320, 1125, 539, 320, 2368, 269, 49407]
    return tokenizer


def save_hf_clip(cache: Path, repo: str = "tinyorg/hf-clip") -> tuple[str, Path]:
    t = transformers
    folder = hub_snapshot(cache, repo, COMMIT)
    text = t.CLIPTextConfig(vocab_size=49408, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                            num_attention_heads=2, max_position_embeddings=32, bos_token_id=49406,
                            eos_token_id=49407, pad_token_id=49407)
    vision = t.CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                                image_size=32, patch_size=8)
    torch.manual_seed(0)
    model = t.CLIPModel(t.CLIPConfig(text_config=text.to_dict(), vision_config=vision.to_dict(), projection_dim=16))
    with torch.no_grad():
        model.logit_scale.fill_(math.log(100.0))
    model.save_pretrained(folder)
    t.CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32},
                         image_mean=CLIP_MEAN, image_std=CLIP_STD).save_pretrained(folder)
    clip_tokenizer(folder).save_pretrained(folder)
    return repo, folder


def image_context(images: torch.Tensor, labels: torch.Tensor, classes: list[str], features=None, **params):
    """A ``ctx`` for zero-shot: the test split's features (or, for a text tower with its own encode_image, its
    normalised image batches)."""
    ctx = make_context(features={"test": images.flatten(1) if features is None else features}, labels={"test": labels},
                       params={**zs.DEFAULTS, **params}, classes=classes)
    ctx.batch_size = 5
    ctx.batches = lambda split, batch_size=None: ((images[s:s + 5], labels[s:s + 5]) for s in range(0, len(images), 5))
    return ctx


def report(what: str, diff: float) -> None:
    print(f"\n{what}: max abs difference {diff:.3g}")


# ------------------------------------------------------------------ agreement with the libraries

def test_openclip_zero_shot_equals_open_clips_own(offline):
    repo, folder = save_openclip(offline)
    ours = backbone(f"openclip/hf-hub:{repo}")
    assert ours.text is not None and ours.text.encode_image is None  # the features are the image embeddings
    assert ours.text.logit_scale == pytest.approx(100.0) and ours.text.logit_bias is None
    assert registries().backbones.get(f"openclip/hf-hub:{repo}").meta["text"] is True
    reference = open_clip.create_model(f"local-dir:{folder}").eval()
    tokenizer = open_clip.get_tokenizer(f"local-dir:{folder}")
    templates = zs.template_sets()["cifar10"]["templates"]
    x = torch.randn(12, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    y = torch.arange(12) % 10
    with torch.inference_mode():
        classifier = open_clip.build_zero_shot_classifier(reference, tokenizer, CIFAR10, templates,
                                                          num_classes_per_batch=10)  # [D, C]
        expected = reference.logit_scale.exp() * F.normalize(reference.encode_image(x), dim=-1) @ classifier
        weights = zs.class_embeddings(ours.text.encode_text, CIFAR10, templates, classes_per_batch=3)
        got = zs.logits(ours.model(x), weights, ours.text.logit_scale)
        predictions = zs.zero_shot(ours, None, image_context(x, y, CIFAR10, features=ours.model(x)))
    report("open_clip class embeddings", (weights - classifier.T).abs().max().item())
    report("open_clip logits", (got - expected).abs().max().item())
    torch.testing.assert_close(weights, classifier.T, rtol=0, atol=1e-6)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-4)
    # the strategy itself: CIFAR-10's own templates chosen from the class names, scores the softmax of the logits
    report("open_clip strategy scores", (predictions.y_score - expected.softmax(1)).abs().max().item())
    torch.testing.assert_close(predictions.y_score, expected.softmax(1), rtol=0, atol=1e-5)
    assert torch.equal(predictions.y_pred, expected.argmax(1)) and torch.equal(predictions.y_true, y)


@pytest.mark.slow  # a full-size RN50, randomly initialised (7 s on 2 cores)
def test_openclip_built_in_architecture_uses_its_own_tokenizer():
    """A built-in name (``openclip/ARCH@random``) tokenises with open_clip's tokenizer for that architecture."""
    ours = backbone("openclip/RN50", pretrained=False)
    model = ours.text.module
    tokenizer = open_clip.get_tokenizer("RN50")
    with torch.inference_mode():
        weights = zs.class_embeddings(ours.text.encode_text, ["cat", "dog"], ["a photo of a {}."])
        expected = open_clip.build_zero_shot_classifier(model, tokenizer, ["cat", "dog"], ["a photo of a {}."])
    report("open_clip RN50 class embeddings", (weights - expected.T).abs().max().item())
    torch.testing.assert_close(weights, expected.T, rtol=0, atol=1e-6)
    assert ours.text.logit_scale == pytest.approx(1 / 0.07)  # random init: CLIP's initial temperature


def test_hf_clip_zero_shot_equals_transformers_own(offline):
    repo, folder = save_hf_clip(offline)
    ours = backbone(f"hf/{repo}")
    assert registries().backbones.get(f"hf/{repo}").meta["text"] is True
    assert ours.text is not None and ours.text.encode_image is not None and ours.text.logit_scale == pytest.approx(100.0)
    reference = transformers.CLIPModel.from_pretrained(folder).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    x = torch.randn(10, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    y = torch.arange(10) % 10
    templates = zs.template_sets()["cifar10"]["templates"]

    def features(output):
        return output if torch.is_tensor(output) else output.pooler_output

    with torch.inference_mode():
        # probing features: the vision tower's pooled output (32 wide), not the projected embedding (16)
        assert ours.num_features == 32
        torch.testing.assert_close(ours.model(x), reference.vision_model(pixel_values=x).pooler_output, rtol=0, atol=0)
        # one template: the logits of CLIPModel's own forward pass
        tokens = tokenizer([f"a photo of a {c}." for c in CIFAR10], padding=True, return_tensors="pt")
        forward = reference(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"], pixel_values=x)
        single = zs.logits(ours.text.encode_image(x), zs.class_embeddings(ours.text.encode_text, CIFAR10,
                                                                          ["a photo of a {}."]), ours.text.logit_scale)
        # CIFAR-10's 18 templates: the standard recipe on get_text_features / get_image_features
        means = []
        for name in CIFAR10:
            tokens = tokenizer([t.format(name) for t in templates], padding=True, return_tensors="pt")
            embedded = F.normalize(features(reference.get_text_features(**tokens)), dim=-1)
            means.append(F.normalize(embedded.mean(0), dim=-1))
        image = F.normalize(features(reference.get_image_features(pixel_values=x)), dim=-1)
        expected = reference.logit_scale.exp() * image @ torch.stack(means).T
        predictions = zs.zero_shot(ours, None, image_context(x, y, CIFAR10))
    got = torch.log(predictions.y_score)
    report("HF CLIP one-template logits vs CLIPModel.forward", (single - forward.logits_per_image).abs().max().item())
    report("HF CLIP strategy scores", (predictions.y_score - expected.softmax(1)).abs().max().item())
    report("HF CLIP strategy log-scores vs log_softmax", (got - expected.log_softmax(1)).abs().max().item())
    torch.testing.assert_close(single, forward.logits_per_image, rtol=0, atol=1e-4)
    torch.testing.assert_close(predictions.y_score, expected.softmax(1), rtol=0, atol=1e-5)
    torch.testing.assert_close(got, expected.log_softmax(1), rtol=0, atol=1e-4)
    assert torch.equal(predictions.y_pred, expected.argmax(1))


def test_hf_text_capability_is_read_from_the_config(offline, tmp_path):
    repo, folder = save_hf_clip(offline)
    vit = transformers.ViTModel(transformers.ViTConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                                       intermediate_size=32, image_size=16, patch_size=8))
    vit.save_pretrained(tmp_path / "vit")
    transformers.ViTImageProcessor(size={"height": 16, "width": 16}).save_pretrained(tmp_path / "vit")
    assert registries().backbones.get(f"hf/{folder}").meta["text"] is True
    assert registries().backbones.get(f"hf/{tmp_path / 'vit'}").meta["text"] is False
    assert registries().backbones.get("hf/tinyorg/not-cached").meta["text"] is None  # only building can tell
    assert backbone(f"hf/{tmp_path / 'vit'}").text is None


# ------------------------------------------------------------------ templates and parameters

def test_template_sets_are_the_published_ones():
    sets = zs.template_sets()
    assert {"imagenet", "imagenet-7", "simple", "cifar10", "cifar100", "mnist"} <= set(sets)
    imagenet = sets["imagenet"]["templates"]
    assert len(imagenet) == len(set(imagenet)) == 80 and imagenet[0] == "a bad photo of a {}."
    assert imagenet == [t("{}") for t in open_clip.zero_shot_metadata.OPENAI_IMAGENET_TEMPLATES]
    assert set(sets["imagenet-7"]["templates"]) == {t("{}") for t in open_clip.zero_shot_metadata.SIMPLE_IMAGENET_TEMPLATES}
    assert len(sets["cifar10"]["templates"]) == 18 and sets["cifar100"]["templates"] == sets["cifar10"]["templates"]
    assert len(sets["cifar100"]["classes"]) == 100 and sets["mnist"]["templates"] == ['a photo of the number: "{}".']
    assert all(s["source"] and all("{}" in t for t in s["templates"]) for s in sets.values())
    assert zs.choose_templates("auto", CIFAR10)[1]["set"] == "cifar10"
    assert zs.choose_templates("auto", ["aquarium_fish", *sets["cifar100"]["classes"][2:], "apple"])[1]["set"] == "cifar100"
    assert zs.choose_templates("auto", [str(d) for d in range(10)])[1]["set"] == "mnist"
    assert zs.choose_templates("auto", ["class0", "class1"])[1]["set"] == "imagenet"


def test_templates_and_class_names_from_files(tmp_path):
    (tmp_path / "t.json").write_text(json.dumps(["a sketch of a {}.", "art of the {}."]))
    (tmp_path / "names.json").write_text(json.dumps({"class0": "red square", "class1": "blue circle"}))
    assert zs.choose_templates(str(tmp_path / "t.json"), ["a", "b"])[0] == ["a sketch of a {}.", "art of the {}."]
    assert zs.choose_class_names(str(tmp_path / "names.json"), ["class0", "class1"]) == ["red square", "blue circle"]
    assert zs.choose_class_names(None, ["sweet_pepper", "maple_tree"]) == ["sweet pepper", "maple tree"]
    (tmp_path / "bad.json").write_text(json.dumps(["no placeholder"]))
    for params, message in [({"templates": "nope"}, "neither a bundled set"),
                            ({"templates": str(tmp_path / "bad.json")}, "has no {} for the class name"),
                            ({"class_names": str(tmp_path / "absent.json")}, "not an existing .json file"),
                            ({"classes_per_batch": 0}, "classes_per_batch=0")]:
        with pytest.raises(UsageError, match=message.replace("{", r"\{").replace("}", r"\}").replace(".", r"\.")):
            zs.check_params({**zs.DEFAULTS, **params})
    with pytest.raises(UsageError, match="names no prompt for 1 class"):
        zs.choose_class_names(str(tmp_path / "names.json"), ["class0", "class2"])


def test_a_backbone_without_text_fails_the_strategy_clearly():
    from benchbone.testing import tiny_cnn

    ctx = image_context(torch.zeros(2, 3, 16, 16), torch.tensor([0, 1]), ["a", "b"])
    with pytest.raises(UsageError, match=r"zero-shot needs a backbone with a text tower"):
        zs.zero_shot(tiny_cnn(True), None, ctx)


# ------------------------------------------------------------------ the grid

def test_zero_shot_end_to_end_leaves_out_backbones_without_text(offline, tmp_path, cli, capsys):
    repo, _ = save_openclip(offline)
    hf_repo, _ = save_hf_clip(offline)
    capsys.readouterr()  # what saving the models printed
    result = cli("run", "-b", f"openclip/hf-hub:{repo}", "-b", f"hf/{hf_repo}", "-b", "test/tiny-cnn", "-b", "pixels",
                 "-p", "benchbone.testing", "-d", "test/blobs", "-s", "zero-shot", "-s", "knn", "-q",
                 "--out", tmp_path / "run")
    assert result.code == 0, result.err
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result.err  # one line for the backbones left out, not a failed cell each
    assert lines[0] == ("benchbone: warning: zero-shot needs a text tower (Backbone.text: a CLIP-style image-text "
                        "model); left out for 2 backbone(s) without one: test/tiny-cnn, pixels")
    board = json.loads((tmp_path / "run" / "leaderboard.json").read_text())
    cells = {(row["backbone"], row["strategy"]) for row in board}
    assert {row["status"] for row in board} == {"ok"} and len(board) == 6
    assert {b for b, s in cells if s == "zero-shot"} == {f"openclip/hf-hub:{repo}", f"hf/{hf_repo}"}
    records = [json.loads(p.read_text()) for p in (tmp_path / "run" / "records").glob("*.json")]
    info = {r["backbone"]: r["strategy_info"] for r in records if r["strategy"] == "zero-shot"}
    assert info[f"openclip/hf-hub:{repo}"]["image_embeddings"] == "backbone features (cached)"
    assert info[f"hf/{hf_repo}"]["image_embeddings"] == "text tower's encode_image"
    assert all(i["templates"]["set"] == "imagenet" and i["prompts_per_class"] == 80 for i in info.values())


def test_zero_shot_without_any_text_backbone_is_one_line(tmp_path, cli):
    result = cli("run", "-b", "test/tiny-cnn", "-p", "benchbone.testing", "-d", "test/blobs", "-s", "zero-shot",
                 "--out", tmp_path / "run")
    assert result.code == 2 and result.err.count("\n") == 1, result.err
    assert "zero-shot needs a text tower" in result.err and "test/tiny-cnn" in result.err
    assert not (tmp_path / "run").exists()
    result = cli("run", "-b", "test/tiny-cnn", "-p", "benchbone.testing", "-d", "test/blobs", "-s", "zero-shot",
                 "--set", "zero-shot.templates=nope", "--out", tmp_path / "run")
    assert result.code == 2 and "templates='nope' is neither a bundled set" in result.err


def test_strategy_requirements_are_checked_at_registration():
    from benchbone.registry import StrategyRegistrar

    register = StrategyRegistrar("mine")
    with pytest.raises(UsageError, match="requires wings; a strategy may require text"):
        register("flying", lambda b, d, c: None, requires=("wings",))
    register("talking", lambda b, d, c: None, requires="text")
    assert register.staged[0][2]["requires"] == ("text",)


# ------------------------------------------------------------------ open_clip: --weights and logging

def training_checkpoint(path: Path, model) -> Path:
    """What open_clip's training saves: the DDP-wrapped state dict beside the optimizer's state and the epoch."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(2, 3, 32, 32), torch.randint(0, 49408, (2, 32)))[0].sum().backward()
    optimizer.step()
    torch.save({"epoch": 3, "name": "tiny", "state_dict": {f"module.{k}": v for k, v in model.state_dict().items()},
                "optimizer": optimizer.state_dict()}, path)
    return path


def test_openclip_training_checkpoint_loads_through_weights(offline, tmp_path, cli):
    from benchbone.helpers import load_state_dict_file

    repo, _ = save_openclip(offline)
    trained = tiny_openclip(seed=5)
    with torch.no_grad():
        trained.logit_scale.fill_(math.log(50.0))
    checkpoint = training_checkpoint(tmp_path / "epoch_3.pt", trained)
    ours = backbone(f"openclip/hf-hub:{repo}", pretrained=False)
    ours.load_weights(load_state_dict_file(checkpoint))
    for key, value in trained.state_dict().items():  # both towers and the temperature
        assert torch.equal(ours.text.module.state_dict()[key], value), key
    assert ours.text.logit_scale == pytest.approx(50.0)
    name = f"openclip/hf-hub:{repo}"
    result = cli("run", "-b", name, "--weights", f"{name}={checkpoint}", "-p", "benchbone.testing", "-d", "test/blobs",
                 "-s", "zero-shot", "-q", "--out", tmp_path / "run")
    assert result.code == 0, result.err
    record = json.loads(next((tmp_path / "run" / "records").glob("*.json")).read_text())
    assert record["status"] == "ok" and record["strategy_info"]["logit_scale"] == pytest.approx(50.0)
    assert record["backbone_info"]["weights"].startswith("file:epoch_3.pt@sha256:")
    # an image tower alone still loads (as before), and leaves no text tower
    visual = tmp_path / "visual.pt"
    torch.save(trained.visual.state_dict(), visual)
    alone = backbone(name, pretrained=False)
    alone.load_weights(load_state_dict_file(visual))
    assert alone.text is None and torch.equal(alone.model.conv1.weight, trained.visual.conv1.weight)


def test_openclip_checkpoint_of_another_model_names_file_and_backbone(offline, tmp_path, cli):
    repo, _ = save_openclip(offline)
    other = tiny_openclip(cfg={**OPENCLIP_CFG, "embed_dim": 8})
    checkpoint = training_checkpoint(tmp_path / "other.pt", other)
    name = f"openclip/hf-hub:{repo}"
    result = cli("run", "-b", name, "--weights", f"{name}={checkpoint}", "-p", "benchbone.testing", "-d", "test/blobs",
                 "-s", "zero-shot", "--out", tmp_path / "run")
    assert result.code == 2 and result.err.count("\n") == 1, result.err
    assert f"--weights {name}={checkpoint}: weights do not fit this backbone" in result.err
    assert "shape mismatch" in result.err and "text_projection" in result.err


def test_building_an_openclip_backbone_prints_nothing(offline, capsys, monkeypatch):
    """open_clip logs through the root logger, whose first message would install a stderr handler (basicConfig)."""
    repo, _ = save_openclip(offline)
    monkeypatch.setattr(logging.root, "handlers", [])  # as in a plain interpreter (pytest adds its own)
    capsys.readouterr()
    backbone(f"openclip/hf-hub:{repo}", pretrained=False)  # open_clip: "No pretrained weights loaded ..."
    backbone(f"openclip/hf-hub:{repo}").text.encode_text(["a photo of a cat."])  # the tokenizer, on first use
    assert logging.root.handlers == []
    logging.getLogger("someone.else").warning("after the build")  # the root logger is left as it was
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == "after the build\n"


def test_open_clips_meaningful_messages_become_one_warning(monkeypatch):
    from benchbone_plugins.openclip_backbones import routed_logging

    monkeypatch.setattr(logging.root, "handlers", [])
    with pytest.warns(UserWarning, match=r"^openclip/X:tag: open_clip says: QuickGELU mismatch$"):
        with routed_logging("openclip/X:tag", expected=("No pretrained weights",)):
            logging.info("Loaded built-in config.")
            logging.warning("No pretrained weights loaded for model 'X'. Model initialized randomly.")
            logging.warning("QuickGELU mismatch")
    assert logging.root.handlers == []
