"""``hf/ORG/NAME``: Hugging Face transformers vision models (``pip install 'benchbone[transformers]'``).

Built with ``AutoModel`` and ``AutoImageProcessor`` (DINOv2, ViT, ConvNeXt, BEiT, Swin, ResNet, ...).
Features are the model's documented pooled output, ``pooler_output``: DINOv2's layer-normed class token,
ViT's pooler (dense + tanh over the class token), ConvNeXt's layer-normed global average. A checkpoint
saved without pooler weights (DINO v1 ViTs) gives the final class token instead, as its authors probe
it; the record says which (``pooling``). Preprocessing comes from the processor's config: crop size,
resize edge, crop_pct, resample, mean and std. ``hf/PATH`` takes a local ``save_pretrained`` folder.
Files are read from the Hugging Face cache (``HF_HOME``) before any network access.
"""
from __future__ import annotations

import contextlib
from functools import partial
from pathlib import Path

from benchbone import Backbone, OfflineError, UsageError, hookimpl
from benchbone_plugins.timm_backbones import hub_cached

HUB_HOST = "huggingface.co"
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
RESAMPLE = {0: "nearest", 2: "bilinear", 3: "bicubic"}  # PIL's codes; the harness resizes with these modes


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


def preprocessing(processor, name: str) -> dict:
    """The Backbone's input_size, crop_pct, interpolation, mean and std from an image processor's config."""
    size, crop = dict(processor.size or {}), dict(getattr(processor, "crop_size", None) or {})
    edge = size.get("shortest_edge")
    if getattr(processor, "do_center_crop", False) and crop.get("height"):
        input_size = (crop["height"], crop["width"])
        crop_pct = input_size[0] / edge if edge else 1.0
    elif edge:
        input_size = (edge, edge)
        crop_pct = float(getattr(processor, "crop_pct", None) or 1.0) if edge < 384 else 1.0  # ConvNeXt's rule
    elif size.get("height"):
        input_size, crop_pct = (size["height"], size["width"]), 1.0
    else:
        raise UsageError(f"{name}: the image processor's size {size} names no height/width or shortest_edge")
    if getattr(processor, "do_rescale", True) and abs(float(processor.rescale_factor) - 1 / 255) > 1e-9:
        raise UsageError(f"{name}: rescale_factor {processor.rescale_factor} is not 1/255; benchbone feeds [0, 1] images")
    resample = int(getattr(processor, "resample", 2) or 2)
    normalise = getattr(processor, "do_normalize", True)
    return {"input_size": input_size, "crop_pct": crop_pct, "interpolation": RESAMPLE.get(resample, "bicubic"),
            "mean": processor.image_mean if normalise else (0.0,) * 3,
            "std": processor.image_std if normalise else (1.0,) * 3,
            "info": {"processor": type(processor).__name__, "processor_resample": resample}}


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
    module = pooled(model, use_pooler)
    with torch.inference_mode():  # the feature size, whatever the family calls it in its config
        num_features = module(torch.zeros(1, 3, *prep["input_size"])).shape[1]
    return Backbone(
        model=module, num_features=int(num_features),
        input_size=prep["input_size"], mean=prep["mean"], std=prep["std"], interpolation=prep["interpolation"],
        crop_pct=prep["crop_pct"], weights=f"hf/{tag}" if pretrained else "random",
        info={"library": "transformers", "library_version": transformers.__version__, "model_class": type(model).__name__, "model_type": config.model_type,
              "pooling": "pooler_output" if use_pooler else "class token (no pooler weights)", "repo": repo,
              "classifier": None, **prep["info"]},
    )


def hub_entry(value: str):
    """The factory behind ``hf/ORG/NAME`` (or ``hf/PATH``)."""
    if not Path(value).expanduser().is_dir() and (value.count("/") != 1 or not all(value.split("/"))):
        raise UsageError(f"hf/{value}: give a Hugging Face model as hf/ORG/NAME (e.g. hf/facebook/dinov2-small) "
                         "or hf/PATH with a save_pretrained folder")
    return partial(build, value)


@hookimpl
def benchbone_register_backbones(register):
    register("hf/", hub_entry, prefix=True, pretrained=True,
             description="hf/ORG/NAME: a transformers vision model (AutoModel pooled output); needs benchbone[transformers]")
