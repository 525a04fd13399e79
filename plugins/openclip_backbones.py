"""``openclip/ARCH:TAG``: open_clip image towers (``pip install 'benchbone[openclip]'``).

``openclip/ViT-B-32:laion2b_s34b_b79k`` is one of open_clip's pretrained tags (``open_clip.list_pretrained()``),
``openclip/ARCH`` the architecture alone (``@random`` or ``--weights``), and ``openclip/hf-hub:ORG/NAME`` a
Hugging Face repo holding ``open_clip_config.json`` and weights. Features are the image embedding, what
``model.encode_image`` returns (the tower's output after its projection, not normalised); only the image
tower is kept. Preprocessing is the model's ``preprocess_cfg`` (size, mean, std, interpolation; open_clip
resizes the shorter side and centre-crops). Weights are read from the Hugging Face cache (``HF_HOME``) or
open_clip's URL cache (``~/.cache/clip``) before any network access.
"""
from __future__ import annotations

import os
from functools import partial
from pathlib import Path

from benchbone import Backbone, OfflineError, UsageError, hookimpl
from benchbone_plugins.timm_backbones import hub_cached

HUB_HOST = "huggingface.co"
HUB_PREFIX = "hf-hub:"
WEIGHT_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")


def _open_clip():
    try:
        import open_clip
    except ImportError:
        raise UsageError("openclip/ backbones need open_clip: pip install 'benchbone[openclip]'") from None
    return open_clip


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
    """The open_clip model behind ``openclip/VALUE`` and a weights tag for the record."""
    open_clip = _open_clip()
    from benchbone.helpers import is_offline

    name = f"openclip/{value}"
    if value.startswith(HUB_PREFIX):
        repo = value[len(HUB_PREFIX):]
        config = hub_cached(repo, ["open_clip_config.json"])
        if config and (not pretrained or hub_cached(repo, WEIGHT_FILES)):
            model = open_clip.create_model(f"local-dir:{Path(config).parent}", load_weights=pretrained)
            return model, f"{name}@{Path(config).parent.name}"
        if is_offline(HUB_HOST):
            raise _offline(name, "open_clip_config.json and weights are")
        return open_clip.create_model(value, load_weights=pretrained), name
    arch, _, tag = value.partition(":")
    if not pretrained:
        return open_clip.create_model(arch, pretrained=None), "random"
    if not tag:
        tags = ", ".join(open_clip.list_pretrained_tags_by_model(arch)) or "none"
        raise UsageError(f"{name} names no pretrained tag; ask for {name}:TAG (tags: {tags}) or {name}@random")
    file, preprocess = tag_weights(arch, tag)
    if file:
        return open_clip.create_model(arch, pretrained=file, force_preprocess_cfg=preprocess), name
    if is_offline(HUB_HOST):
        raise _offline(name, "the weights are")
    return open_clip.create_model(arch, pretrained=tag), name


def build(value: str, pretrained: bool) -> Backbone:
    import torch

    model, weights = create(value, pretrained)
    tower, cfg = model.visual.eval(), dict(model.visual.preprocess_cfg)
    size = cfg["size"] if isinstance(cfg["size"], (tuple, list)) else (cfg["size"], cfg["size"])
    with torch.inference_mode():  # the embedding size, whatever the tower calls it
        num_features = tower(torch.zeros(1, 3, *size)).shape[1]
    return Backbone(
        model=tower, num_features=int(num_features), input_size=tuple(size), mean=cfg["mean"], std=cfg["std"],
        interpolation=cfg.get("interpolation", "bicubic"), crop_pct=1.0, weights=weights if pretrained else "random",
        info={"library": "open_clip", "library_version": _open_clip().__version__, "arch": value, "resize_mode": cfg.get("resize_mode", "shortest"),
              "features": "encode_image (projected, not normalised)", "classifier": None},
    )


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
    register("openclip/", entry, prefix=True, pretrained=True,
             description="openclip/ARCH:TAG or openclip/hf-hub:ORG/NAME, an open_clip image tower; needs benchbone[openclip]")
