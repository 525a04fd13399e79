"""zero-shot: CLIP's zero-shot classification, for backbones with a text tower (``openclip/...``, ``hf/`` CLIP).

Every class name is put into every prompt template of a set ("a photo of a {}."); the prompts are encoded by the
backbone's text tower, L2-normalised, averaged per class and normalised again, giving one embedding per class
(the recipe of Radford et al. 2021, as open_clip's ``build_zero_shot_classifier``). A test image's logits are
``logit_scale * cosine(image embedding, class embedding)`` (``+ logit_bias`` for SigLIP), with the model's learned
scale, and its scores their softmax. Image embeddings are the model's projected ones, normalised: the backbone's
features when they are those (open_clip: read from the feature cache, shared with the probes), else the text
tower's ``encode_image`` on the test images (HF CLIP, whose probing features are the tower's pooled output).
Nothing is fitted: train and val are not read.

Template sets are data files in ``benchbone_plugins/zero_shot_templates/``: ``imagenet`` (the 80 of the CLIP
paper's ImageNet notebook), ``imagenet-7`` (the 7 its selection kept), ``simple`` ("a photo of a {}."), and the
published per-dataset sets ``cifar10``, ``cifar100`` and ``mnist`` (the CLIP repository's prompts).
``templates=auto`` takes the set whose classes are the data set's (so a class-folder copy of CIFAR-10 gets
CIFAR-10's) and ``imagenet`` otherwise; ``templates=NAME`` a set, ``templates=PATH.json`` one of yours (a list of
strings holding ``{}``, or ``{"templates": [...]}``). Class names are the data set's, underscores as spaces, or
``class_names=PATH.json``: a list in class order, or ``{dataset class: name}``. The strategy requires a text
tower (``register(..., requires=("text",))``): backbones without one are left out of its cells before the grid.
"""
from __future__ import annotations

import json
from pathlib import Path

from benchbone import Predictions, UsageError, hookimpl

TEMPLATES_DIR = Path(__file__).parent / "zero_shot_templates"
DEFAULTS = dict(templates="auto", class_names=None, classes_per_batch=10)


def template_sets() -> dict[str, dict]:
    """The bundled template sets by name: ``{"templates": [...], "classes": [...] or None, "source": ...}``."""
    return {path.stem: json.loads(path.read_text(encoding="utf-8")) for path in sorted(TEMPLATES_DIR.glob("*.json"))}


def _normal(name: str) -> str:
    return " ".join(str(name).replace("_", " ").replace("-", " ").lower().split())


def _checked(templates, where: str) -> list[str]:
    if not isinstance(templates, list) or not templates or not all(isinstance(t, str) for t in templates):
        raise UsageError(f"zero-shot: {where} holds no templates; give a non-empty list of strings with {{}}")
    for template in templates:
        try:
            if template.format("X") == template:
                raise UsageError(f"zero-shot: template {template!r} ({where}) has no {{}} for the class name")
        except (IndexError, KeyError, ValueError) as exc:
            raise UsageError(f"zero-shot: template {template!r} ({where}) is not a format string with one {{}} "
                             f"({type(exc).__name__}: {exc})") from None
    return templates


def _read_json(value: str, what: str):
    path = Path(value).expanduser()
    if not path.is_file():
        raise UsageError(f"zero-shot: {what}={value!r} is neither a bundled set ({', '.join(template_sets())}) "
                         "nor an existing .json file" if what == "templates" else
                         f"zero-shot: {what}={value!r} is not an existing .json file")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise UsageError(f"zero-shot: cannot read {what} file {path}: {exc}") from None


def choose_templates(value: str, classes) -> tuple[list[str], dict]:
    """The templates ``templates=value`` names for a data set of ``classes``, and what to record of them."""
    sets = template_sets()
    if value == "auto":
        wanted = {_normal(c) for c in classes}
        matched = [name for name, s in sets.items() if s.get("classes") and {_normal(c) for c in s["classes"]} == wanted]
        value = matched[0] if matched else "imagenet"
    if value in sets:
        chosen = sets[value]
        return _checked(chosen["templates"], f"set {value}"), {"set": value, "source": chosen.get("source")}
    return templates_file(value), {"set": "file", "file": str(Path(value).expanduser().absolute())}


def templates_file(value: str) -> list[str]:
    """The templates of a JSON file: a list of strings, or an object with one under "templates"."""
    data = _read_json(value, "templates")
    return _checked(data.get("templates") if isinstance(data, dict) else data, str(value))


def choose_class_names(value: str | None, classes) -> list[str]:
    """The names put into the templates, in class order."""
    if value is None:
        return [str(c).replace("_", " ") for c in classes]
    data = _read_json(value, "class_names")
    if isinstance(data, dict):
        missing = [c for c in classes if str(c) not in data]
        if missing:
            raise UsageError(f"zero-shot: class_names file {value} names no prompt for {len(missing)} class(es) "
                             f"({', '.join(map(str, missing[:3]))}); map every dataset class to a name")
        names = [data[str(c)] for c in classes]
    else:
        names = data
    if not isinstance(names, list) or len(names) != len(classes) or not all(isinstance(n, str) and n for n in names):
        raise UsageError(f"zero-shot: class_names file {value} must hold {len(classes)} names (a list in class order, "
                         "or a mapping of each dataset class to its name)")
    return names


def check_params(p: dict) -> None:
    if not isinstance(p["classes_per_batch"], int) or p["classes_per_batch"] < 1:
        raise UsageError(f"zero-shot: classes_per_batch={p['classes_per_batch']!r} must be a whole number >= 1")
    if not isinstance(p["templates"], str) or not p["templates"]:
        raise UsageError(f"zero-shot: templates={p['templates']!r}: give auto, a set name or a .json file")
    if p["templates"] != "auto" and p["templates"] not in template_sets():
        templates_file(p["templates"])
    if p["class_names"] is not None:
        _read_json(p["class_names"], "class_names")


def class_embeddings(encode_text, names: list[str], templates: list[str], classes_per_batch: int = 10,
                     progress=lambda batches: batches):
    """One L2-normalised embedding per class [C, D]: the mean of the normalised embeddings of its prompts,
    normalised (the prompts of ``classes_per_batch`` classes encoded at a time)."""
    import torch
    import torch.nn.functional as F

    out = []
    for start in progress(range(0, len(names), classes_per_batch)):
        batch = names[start:start + classes_per_batch]
        prompts = [template.format(name) for name in batch for template in templates]
        embedded = F.normalize(encode_text(prompts).float(), dim=-1)
        out.append(F.normalize(embedded.reshape(len(batch), len(templates), -1).mean(dim=1), dim=-1))
    return torch.cat(out)


def logits(images, classes, logit_scale: float, logit_bias: float | None = None):
    """``logit_scale * cosine(images, classes) (+ logit_bias)`` [N, C] of image embeddings [N, D] (any norm) and
    normalised class embeddings [C, D]."""
    import torch.nn.functional as F

    out = logit_scale * F.normalize(images.float(), dim=-1) @ classes.T
    return out if logit_bias is None else out + logit_bias


def image_embeddings(tower, ctx):
    """The test split's image embeddings [N, D] on the device and labels: the backbone's cached features where they
    are the embeddings (``tower.encode_image`` None), else ``encode_image`` on the normalised test images."""
    import torch

    if tower.encode_image is None:
        X, y = ctx.features("test")
        return X.to(ctx.device), y
    found, labels = [], []
    total = -(-ctx.split_size("test") // ctx.batch_size)
    for x, y in ctx.progress(ctx.batches("test"), desc="zero-shot images", total=total):
        found.append(tower.encode_image(x).float())
        labels.append(y.cpu())
    return torch.cat(found), torch.cat(labels)


def zero_shot(backbone, data, ctx) -> Predictions:
    import torch

    p = ctx.params
    check_params(p)
    tower = backbone.text
    if tower is None:
        why = backbone.info.get("text") or "it has none"
        raise UsageError(f"zero-shot needs a backbone with a text tower (Backbone.text); this one has none ({why})")
    templates, described = choose_templates(p["templates"], ctx.classes)
    names = choose_class_names(p["class_names"], ctx.classes)
    if tower.module is not None:
        tower.module.to(ctx.device).eval()
    with torch.inference_mode():
        weights = class_embeddings(tower.encode_text, names, templates, p["classes_per_batch"],
                                   progress=lambda batches: ctx.progress(batches, desc="zero-shot classes"))
        images, y = image_embeddings(tower, ctx)
        scores = logits(images, weights.to(images.device), tower.logit_scale, tower.logit_bias)
    ctx.info.update(templates=described, prompts_per_class=len(templates), class_names=names,
                    logit_scale=tower.logit_scale, logit_bias=tower.logit_bias,
                    image_embeddings="text tower's encode_image" if tower.encode_image else "backbone features (cached)",
                    text_tower=dict(tower.info))
    scores = scores.cpu()
    return Predictions(y_true=y, y_pred=scores.argmax(1), y_score=torch.softmax(scores, dim=1))


@hookimpl
def benchbone_register_strategies(register):
    register("zero-shot", zero_shot, params=DEFAULTS, types={"class_names": str}, check=check_params,
             requires=("text",), aliases=("zeroshot",),
             description="CLIP zero-shot: class names in prompt templates through the text tower (needs one: "
                         "openclip/, hf/ CLIP); nothing fitted")
