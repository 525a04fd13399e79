"""``hf/ORG/NAME``: Hugging Face transformers vision models (``pip install 'benchbone[transformers]'``).

Built with ``AutoModel`` and ``AutoImageProcessor`` (DINOv2, ViT, ConvNeXt, BEiT, Swin, ResNet, ...).
Features are the model's documented pooled output, ``pooler_output``: DINOv2's layer-normed class token,
ViT's pooler (dense + tanh over the class token), ConvNeXt's layer-normed global average. A checkpoint
saved without pooler weights (DINO v1 ViTs) gives the final class token instead, as its authors probe
it; the record says which (``pooling``). Preprocessing comes from the processor's config: crop size,
resize edge or height and width (a squash), crop_pct, resample, mean and std (``preprocessing``).
``hf/PATH`` takes a local ``save_pretrained`` folder.
Files are read from the Hugging Face cache (``HF_HOME``) before any network access.

Image-text models (CLIP, SigLIP: ``CLIPModel``, ``SiglipModel``) give their vision tower's pooled output as
features (CLIP's layer-normed class token, before the projection) and ``model`` is that tower alone; their
``text`` (``TextTower``) is ``get_text_features`` with the repo's tokenizer (loaded on first use), images
through ``get_image_features`` (the projected embedding) and the model's ``logit_scale`` (and SigLIP's
``logit_bias``), for the ``zero-shot`` strategy. ``--weights`` takes such a model's whole state dict.
"""
from __future__ import annotations

import contextlib
import math
from functools import partial
from pathlib import Path

from benchbone import Backbone, OfflineError, TextTower, UsageError, hookimpl
from benchbone.helpers import hub_cached

HUB_HOST = "huggingface.co"
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
RESAMPLE = {0: "nearest", 2: "bilinear", 3: "bicubic"}  # PIL's codes; the harness resizes with these modes
# Image-text model types with get_image_features / get_text_features / logit_scale (and how their text is padded).
TEXT_MODELS = {"clip": "longest", "siglip": "max_length"}


def _transformers():
    try:
        import transformers
    except ImportError:
        raise UsageError("hf/ backbones need the `transformers` library: pip install 'benchbone[transformers]'") from None
    return transformers


def locate(repo: str, pretrained: bool) -> tuple[str, bool, str]:
    """Where to load ``repo`` from (a folder or the repo id), whether only local files may be used, and a tag."""
    import os

    folder = Path(repo).expanduser()
    if folder.is_dir():
        if not (folder / "config.json").is_file():
            raise UsageError(f"hf/{repo}: {folder} has no config.json; pass a folder written by save_pretrained")
        return str(folder), True, f"local:{folder.absolute()}"
    config, processor = hub_cached(repo, ["config.json"]), hub_cached(repo, ["preprocessor_config.json"])
    if config and processor and (not pretrained or hub_cached(repo, WEIGHT_FILES)):
        return repo, True, f"{repo}@{Path(config).parent.name}"  # the snapshot folder is the commit
    from benchbone.helpers import is_offline

    if is_offline(HUB_HOST):
        hf_home = os.environ.get("HF_HOME", "~/.cache/huggingface")
        need = "config.json, preprocessor_config.json and weights" if pretrained else "config.json and preprocessor_config.json"
        raise OfflineError(f"hf/{repo}: {need} are not in the Hugging Face cache (HF_HOME={hf_home}) and the hub "
                           f"cannot be reached; where there is network run `hf download {repo}` and copy HF_HOME "
                           f"here, or pass hf/PATH with a save_pretrained folder")
    return repo, False, repo


@contextlib.contextmanager
def quiet(logging):
    """transformers' progress bars and warnings off while loading, restored afterwards."""
    bars, level = logging.is_progress_bar_enabled(), logging.get_verbosity()
    logging.disable_progress_bar()
    logging.set_verbosity_error()
    try:
        yield
    finally:
        logging.set_verbosity(level)
        if bars:
            logging.enable_progress_bar()


def pooled(model, use_pooler: bool):
    """A module mapping pixel values to ``model``'s pooled output [N, D] (or its final class token)."""
    import torch

    class PooledOutput(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, pixel_values):
            out = self.model(pixel_values=pixel_values)
            if use_pooler:
                return out.pooler_output.flatten(1)  # ResNet's is [N, C, 1, 1]
            return out.last_hidden_state[:, 0]

    return PooledOutput().eval()


def has_text(repo: str) -> bool | None:
    """Whether ``hf/REPO`` is an image-text model, from its config.json in a local folder or the hub cache
    (None when neither holds it: only building it can tell)."""
    import json

    folder = Path(repo).expanduser()
    config = folder / "config.json" if folder.is_dir() else hub_cached(repo, ["config.json"])
    if not config or not Path(config).is_file():
        return None
    try:
        return json.loads(Path(config).read_text(encoding="utf-8")).get("model_type") in TEXT_MODELS
    except (OSError, ValueError, AttributeError):
        return None


def embedding(output):
    """A ``get_*_features`` result as a tensor: transformers 5 returns an output whose pooler_output is it."""
    return output if hasattr(output, "shape") else output.pooler_output


def text_tower(model, config, source: str, local_only: bool, name: str) -> TextTower:
    """``model``'s text side: ``get_text_features`` on the repo's tokenizer (loaded on first use, padded as the
    family was trained), ``get_image_features`` for the image embeddings, the learned ``logit_scale``/bias."""
    transformers = _transformers()
    kept, padding = {}, TEXT_MODELS[config.model_type]

    def encode_text(prompts: list[str]):
        if "tokenizer" not in kept:
            try:
                with quiet(transformers.utils.logging):
                    kept["tokenizer"] = transformers.AutoTokenizer.from_pretrained(source, local_files_only=local_only)
            except (OSError, ValueError) as exc:
                first = (str(exc).strip().splitlines() or [""])[0][:200]
                raise UsageError(f"{name}: cannot load the model's tokenizer ({type(exc).__name__}: {first}); "
                                 f"its tokenizer files belong beside config.json") from None
        length = getattr(config.text_config, "max_position_embeddings", None)
        tokens = kept["tokenizer"](list(prompts), padding=padding, truncation=True, max_length=length, return_tensors="pt")
        device = next(model.parameters()).device
        return embedding(model.get_text_features(**{k: v.to(device) for k, v in tokens.items()
                                                     if k in ("input_ids", "attention_mask")}))

    def encode_image(pixel_values):
        return embedding(model.get_image_features(pixel_values=pixel_values))

    tower = TextTower(encode_text=encode_text, encode_image=encode_image, module=model,
                      info={"library": "transformers", "text": "get_text_features", "image": "get_image_features",
                            "padding": padding})
    tower.read_temperature(model)
    return tower


def load_weights(backbone: Backbone, model, state: dict) -> dict:
    """``--weights`` of an image-text model: its whole state dict (both towers), loaded strictly."""
    from benchbone.helpers import CLASSIFIER_PREFIXES, load_backbone_weights

    own = model.state_dict()
    state = {k: v for k, v in state.items() if not (k.endswith("embeddings.position_ids") and k not in own)}
    loaded = load_backbone_weights(model, state, CLASSIFIER_PREFIXES)  # position_ids: older transformers kept them
    backbone.text.read_temperature(model)
    return loaded


def _family(processor, prefix: str) -> bool:
    return any(c.__name__.startswith(prefix) for c in type(processor).__mro__)


def preprocessing(processor, name: str) -> dict:
    """The Backbone's input_size, crop_pct, interpolation, mean and std, and its crop_mode (in info), from an image
    processor's config: a shortest_edge resize is "center", one to a height and width "squash" (ViT's, DeiT's),
    each then centre-cropped to crop_size with do_center_crop; ConvNeXt's own resize applies crop_pct below 384 px
    and squashes from 384 up, PoolFormer's divides the size by crop_pct (a square one keeping the aspect)."""
    size = {k: v for k, v in dict(processor.size or {}).items() if v}
    crop, pct = dict(getattr(processor, "crop_size", None) or {}), getattr(processor, "crop_pct", None)
    if _family(processor, "ConvNext") and size.get("shortest_edge"):
        edge = size["shortest_edge"]
        return _described(processor, name, (edge, edge), *((pct, "center") if edge < 384 else (1.0, "squash")))
    if _family(processor, "PoolFormer") and pct:
        size = {k: int(v / pct) for k, v in size.items()}
        if size.get("height") and size["height"] == size.get("width"):
            size = {"shortest_edge": size["height"]}
    if size.get("shortest_edge"):
        resized, mode = (size["shortest_edge"],) * 2, "center"
    elif size.get("height") and size.get("width"):
        resized, mode = (size["height"], size["width"]), "squash"
    else:
        raise UsageError(f"{name}: the image processor's size {size} names no height/width or shortest_edge")
    crops = getattr(processor, "do_center_crop", False) and crop.get("height") and crop.get("width")
    out = (crop["height"], crop["width"]) if crops else resized
    crop_pct = out[0] / resized[0]
    if mode == "center" and out[0] != out[1] or math.floor(out[1] / crop_pct + 1e-6) != resized[1]:
        raise UsageError(f"{name}: the image processor resizes to {size} and crops {out}; benchbone takes one "
                         "crop_pct for both sides, and a square crop after a shortest_edge resize")
    return _described(processor, name, out, crop_pct, mode)


def _described(processor, name: str, input_size: tuple, crop_pct: float, mode: str) -> dict:
    """``preprocessing``'s dict, with the processor's resample, rescale and normalisation."""
    if getattr(processor, "do_rescale", True) and abs(float(processor.rescale_factor) - 1 / 255) > 1e-9:
        raise UsageError(f"{name}: rescale_factor {processor.rescale_factor} is not 1/255; benchbone feeds [0, 1] images")
    resample = int(getattr(processor, "resample", 2) or 2)
    normalise = getattr(processor, "do_normalize", True)
    return {"input_size": input_size, "crop_pct": crop_pct, "interpolation": RESAMPLE.get(resample, "bicubic"),
            "mean": processor.image_mean if normalise else (0.0,) * 3,
            "std": processor.image_std if normalise else (1.0,) * 3,
            "info": {"processor": type(processor).__name__, "processor_resample": resample, "crop_mode": mode}}


def build(repo: str, pretrained: bool) -> Backbone:
    import torch

    transformers = _transformers()
    name = f"hf/{repo}"
    source, local_only, tag = locate(repo, pretrained)
    with quiet(transformers.utils.logging):  # missing weights are checked below, not left to a warning
        processor = transformers.AutoImageProcessor.from_pretrained(source, local_files_only=local_only)
        config = transformers.AutoConfig.from_pretrained(source, local_files_only=local_only)
        if pretrained:
            model, loading = transformers.AutoModel.from_pretrained(source, local_files_only=local_only,
                                                                     output_loading_info=True)
    if pretrained:
        missing = sorted(loading["missing_keys"])
        if any(not k.startswith("pooler.") for k in missing):
            raise UsageError(f"{name}: the checkpoint lacks {len(missing)} weight(s) of {type(model).__name__} "
                             f"({', '.join(missing[:3])}); it is not a vision backbone checkpoint for AutoModel")
        use_pooler = not missing
    else:
        model, use_pooler = transformers.AutoModel.from_config(config), True
    if use_pooler and getattr(model, "pooler", True) is None:
        use_pooler = False  # built with add_pooling_layer=False
    prep = preprocessing(processor, name)
    text = config.model_type in TEXT_MODELS
    module = pooled(model.vision_model if text else model, use_pooler)  # an image-text model: its vision tower
    with torch.inference_mode():  # the feature size, whatever the family calls it in its config
        num_features = module(torch.zeros(1, 3, *prep["input_size"])).shape[1]
    backbone = Backbone(
        model=module, num_features=int(num_features),
        input_size=prep["input_size"], mean=prep["mean"], std=prep["std"], interpolation=prep["interpolation"],
        crop_pct=prep["crop_pct"], weights=f"hf/{tag}" if pretrained else "random",
        info={"library": "transformers", "library_version": transformers.__version__, "model_class": type(model).__name__, "model_type": config.model_type,
              "pooling": ("vision tower's pooler_output" if text else "pooler_output") if use_pooler
              else "class token (no pooler weights)", "repo": repo, "classifier": None, **prep["info"]},
        text=text_tower(model, config, source, local_only, name) if text else None,
    )
    if text:
        backbone.load_weights = partial(load_weights, backbone, model)
    return backbone


def hub_entry(value: str):
    """The factory behind ``hf/ORG/NAME`` (or ``hf/PATH``)."""
    if not Path(value).expanduser().is_dir() and (value.count("/") != 1 or not all(value.split("/"))):
        raise UsageError(f"hf/{value}: give a Hugging Face model as hf/ORG/NAME (e.g. hf/facebook/dinov2-small) "
                         "or hf/PATH with a save_pretrained folder")
    return partial(build, value)


@hookimpl
def benchbone_register_backbones(register):
    register("hf/", hub_entry, prefix=True, pretrained=True, text=has_text,
             description="hf/ORG/NAME from the Hub, or hf/PATH for a local save_pretrained folder (hf/./my-model, "
                         "hf//abs/path): a transformers vision model (AutoModel pooled output; CLIP and SigLIP with "
                         "their text tower); needs benchbone[transformers]")
