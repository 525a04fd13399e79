"""``openclip/ARCH:TAG``: open_clip image towers (``pip install 'benchbone[openclip]'``).

``openclip/ViT-B-32:laion2b_s34b_b79k`` is one of open_clip's pretrained tags (``open_clip.list_pretrained()``),
``openclip/ARCH`` the architecture alone (``@random`` or ``--weights``), and ``openclip/hf-hub:ORG/NAME`` a
Hugging Face repo holding ``open_clip_config.json`` and weights. Features are the image embedding, what
``model.encode_image`` returns (the tower's output after its projection, not normalised); ``model`` is the
image tower, so its size and cost are the image tower's. The text tower is the Backbone's ``text``
(``TextTower``: ``model.encode_text`` with open_clip's own tokenizer for the model, built on first use, and
the model's ``logit_scale``), which the ``zero-shot`` strategy uses with the same image embeddings, normalised.
Preprocessing is the model's ``preprocess_cfg`` (size, mean, std, interpolation; open_clip resizes the shorter
side and centre-crops). Weights are read from the Hugging Face cache (``HF_HOME``) or open_clip's URL cache
(``~/.cache/clip``) before any network access. ``--weights openclip/ARCH=FILE`` takes a whole open_clip
checkpoint (what its training saves: ``{"state_dict": ..., "optimizer": ..., "epoch": ...}``, ``module.``
prefixes and all) into both towers, or a state dict of the image tower alone (then there is no text tower).

open_clip logs through the root logger (``logging.warning``), which would install a handler printing every later
root-logger message; while it builds, its records are taken instead, and those that matter (a QuickGELU mismatch
between a tag and its config) become one warning naming the backbone.
"""
from __future__ import annotations

import contextlib
import os
import warnings
from functools import partial
from pathlib import Path

from benchbone import Backbone, OfflineError, TextTower, UsageError, hookimpl
from benchbone.helpers import hub_cached

HUB_HOST = "huggingface.co"
HUB_PREFIX = "hf-hub:"
WEIGHT_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")


def _open_clip():
    try:
        import open_clip
    except ImportError:
        raise UsageError("openclip/ backbones need open_clip: pip install 'benchbone[openclip]'") from None
    return open_clip


@contextlib.contextmanager
def routed_logging(name: str, expected: tuple[str, ...] = ()):
    """open_clip's root-logger records and warnings while it runs, taken off the terminal: the root logger gets a
    NullHandler for the while (``logging.info`` installs a stderr handler on a root logger without one, which
    would print every later root-logger message), and a filter that keeps its records. Afterwards each warning
    or error not matching ``expected`` (what asking for random weights says) is one warning naming ``name``."""
    import logging

    root, taken = logging.getLogger(), []

    class Keep(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            taken.append(record)
            return False

    handler, keep = logging.NullHandler(), Keep()
    root.addHandler(handler)
    root.addFilter(keep)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield
    finally:
        root.removeFilter(keep)
        root.removeHandler(handler)
    said = [r.getMessage() for r in taken if r.levelno >= logging.WARNING] + [str(w.message) for w in caught]
    for message in said:
        if not any(e in message for e in expected):
            warnings.warn(f"{name}: open_clip says: {message.strip().splitlines()[0]}", stacklevel=3)


def _offline(name: str, what: str) -> OfflineError:
    hf_home = os.environ.get("HF_HOME", "~/.cache/huggingface")
    return OfflineError(f"{name}: {what} not in the Hugging Face cache (HF_HOME={hf_home}) or ~/.cache/clip and the "
                        f"hub cannot be reached; where there is network build {name} once (open_clip.create_model) "
                        f"and copy HF_HOME here, or ask for {name}@random")


def tag_weights(arch: str, tag: str) -> tuple[str | None, dict]:
    """A cached weights file of a built-in ``arch:tag`` (None when absent) and the tag's preprocessing."""
    open_clip = _open_clip()
    cfg = open_clip.get_pretrained_cfg(arch, tag)
    preprocess = {k: cfg[k] for k in ("mean", "std", "interpolation", "resize_mode") if k in cfg}
    if cfg.get("hf_hub"):
        parts = cfg["hf_hub"].rstrip("/").split("/")
        repo, filename = "/".join(parts[:2]), "/".join(parts[2:]) or None
        found = hub_cached(repo, [filename] if filename else WEIGHT_FILES)
        if found:
            return found, preprocess
    if cfg.get("url"):
        path = Path("~/.cache/clip").expanduser() / os.path.basename(cfg["url"])
        if path.is_file():
            return str(path), preprocess
    return None, preprocess


def create(value: str, pretrained: bool):
    """The open_clip model behind ``openclip/VALUE``, a weights tag for the record, and where its tokenizer's
    configuration is (an architecture name, ``local-dir:FOLDER`` or ``hf-hub:ORG/NAME``)."""
    open_clip = _open_clip()
    from benchbone.helpers import is_offline

    name = f"openclip/{value}"
    if value.startswith(HUB_PREFIX):
        repo = value[len(HUB_PREFIX):]
        config = hub_cached(repo, ["open_clip_config.json"])
        if config and (not pretrained or hub_cached(repo, WEIGHT_FILES)):
            source = f"local-dir:{Path(config).parent}"
            return open_clip.create_model(source, load_weights=pretrained), f"{name}@{Path(config).parent.name}", source
        if is_offline(HUB_HOST):
            raise _offline(name, "open_clip_config.json and weights are")
        return open_clip.create_model(value, load_weights=pretrained), name, value
    arch, _, tag = value.partition(":")
    if not pretrained:
        return open_clip.create_model(arch, pretrained=None), "random", arch
    if not tag:
        tags = ", ".join(open_clip.list_pretrained_tags_by_model(arch)) or "none"
        raise UsageError(f"{name} names no pretrained tag; ask for {name}:TAG (tags: {tags}) or {name}@random")
    file, preprocess = tag_weights(arch, tag)
    if file:
        return open_clip.create_model(arch, pretrained=file, force_preprocess_cfg=preprocess), name, arch
    if is_offline(HUB_HOST):
        raise _offline(name, "the weights are")
    return open_clip.create_model(arch, pretrained=tag), name, arch


def text_tower(model, tokenizer_source: str, name: str) -> TextTower:
    """``model``'s text side: ``encode_text`` with the model's own tokenizer (built on first use: some, SigLIP's,
    come from the Hugging Face hub), ``logit_scale`` and ``logit_bias`` as trained. Image embeddings are the
    Backbone's features (``model.visual``'s output is ``encode_image``'s)."""
    kept = {}

    def tokenizer():
        if "tokenizer" not in kept:
            try:
                with routed_logging(name):
                    kept["tokenizer"] = _open_clip().get_tokenizer(tokenizer_source)
            except Exception as exc:  # an HF tokenizer that is neither cached nor downloadable
                first = (str(exc).strip().splitlines() or [""])[0][:200]
                raise UsageError(f"{name}: open_clip cannot build the model's tokenizer ({type(exc).__name__}: "
                                 f"{first}); where there is network build it once (open_clip.get_tokenizer) and copy "
                                 "HF_HOME here") from None
        return kept["tokenizer"]

    def encode_text(prompts: list[str]):
        device = next(model.parameters()).device
        return model.encode_text(tokenizer()(list(prompts)).to(device))

    tower = TextTower(encode_text=encode_text, encode_image=None, module=model,
                      info={"library": "open_clip", "text": "encode_text", "tokenizer_source": tokenizer_source})
    tower.read_temperature(model)
    return tower


def load_weights(backbone: Backbone, model, state: dict) -> dict:
    """``--weights``: a whole open_clip state dict (its training checkpoints' ``state_dict``) into both towers,
    with open_clip's own conversions of older layouts; a state dict of the image tower alone into that tower,
    leaving no text tower. Strict: a key too many or too few is a UsageError listing them."""
    from benchbone.helpers import CLASSIFIER_PREFIXES, load_backbone_weights

    state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}
    if not any(k.startswith("visual.") for k in state):
        loaded = load_backbone_weights(model.visual, state, CLASSIFIER_PREFIXES)
        backbone.text = None
        backbone.info["text"] = "none: the weights file holds the image tower alone"
        return loaded
    if "positional_embedding" in state and not hasattr(model, "positional_embedding"):  # pre-CustomTextCLIP layout
        from open_clip.model import convert_to_custom_text_state_dict

        state = convert_to_custom_text_state_dict(state)
    for key in ("logit_scale", "logit_bias"):  # a scalar or a 1-element parameter, as open_clip's loader allows
        if key in state and getattr(model, key, None) is not None and state[key].ndim != getattr(model, key).ndim:
            state[key] = state[key].reshape(getattr(model, key).shape)
    state.pop("text.transformer.embeddings.position_ids", None)  # transformers >= 4.31 keeps no such buffer
    loaded = load_backbone_weights(model, state, CLASSIFIER_PREFIXES)
    if backbone.text is not None:
        backbone.text.read_temperature(model)
    return loaded


def build(value: str, pretrained: bool) -> Backbone:
    import torch

    name = f"openclip/{value}"
    with routed_logging(name, expected=() if pretrained else ("No pretrained weights loaded",)):
        model, weights, tokenizer_source = create(value, pretrained)
    model.eval()
    tower, cfg = model.visual, dict(model.visual.preprocess_cfg)
    size = cfg["size"] if isinstance(cfg["size"], (tuple, list)) else (cfg["size"], cfg["size"])
    with torch.inference_mode():  # the embedding size, whatever the tower calls it
        num_features = tower(torch.zeros(1, 3, *size)).shape[1]
    backbone = Backbone(
        model=tower, num_features=int(num_features), input_size=tuple(size), mean=cfg["mean"], std=cfg["std"],
        interpolation=cfg.get("interpolation", "bicubic"), crop_pct=1.0, weights=weights if pretrained else "random",
        info={"library": "open_clip", "library_version": _open_clip().__version__, "arch": value, "resize_mode": cfg.get("resize_mode", "shortest"),
              "features": "encode_image (projected, not normalised)", "classifier": None},
        text=text_tower(model, tokenizer_source, name),
    )
    backbone.load_weights = partial(load_weights, backbone, model)
    return backbone


def entry(value: str):
    """The factory behind ``openclip/VALUE``: the arch and tag are checked against open_clip's lists."""
    import difflib

    if value.startswith(HUB_PREFIX):
        if value[len(HUB_PREFIX):].count("/") != 1:
            raise UsageError(f"openclip/{value}: give a Hugging Face repo as openclip/hf-hub:ORG/NAME")
        return partial(build, value)
    open_clip = _open_clip()
    arch, _, tag = value.partition(":")
    if arch not in open_clip.list_models():
        close = difflib.get_close_matches(arch, open_clip.list_models(), n=3)
        raise UsageError(f"openclip/{value}: unknown open_clip architecture {arch!r}"
                         f"{'; did you mean ' + ', '.join(close) + '?' if close else ''} (see open_clip.list_models())")
    tags = open_clip.list_pretrained_tags_by_model(arch)
    if tag and tag not in tags:
        raise UsageError(f"openclip/{value}: {arch} has no pretrained tag {tag!r}; its tags: {', '.join(tags) or 'none'}")
    return partial(build, value)


@hookimpl
def benchbone_register_backbones(register):
    register("openclip/", entry, prefix=True, pretrained=True, text=True,
             description="openclip/ARCH:TAG or openclip/hf-hub:ORG/NAME, an open_clip model (image features, text tower "
                         "for zero-shot); needs benchbone[openclip]")
