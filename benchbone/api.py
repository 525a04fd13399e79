"""The data types of plugin API 1.2: what backbones, datasets and strategies hand to the harness, and what the
harness hands to plugins (a ``Cell``, a ``Config``).

This module imports no torch, so that listing plugins and `--help` stay fast.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from benchbone.digests import json_digest

if TYPE_CHECKING:
    import pluggy

API_VERSION = "1.2"
RANDOM_SUFFIX = "@random"  # a backbone name's suffix for its randomly initialised twin
# Harness parameters that do not change a cell's result, so stay out of its id; and those added later, which
# stay out of it at the value given here (unset, or the default), so that the cells of earlier runs keep their ids.
_NOT_IN_ID = {"batch_size"}
_IN_ID_WHEN_SET = {"train_size": None, "val_size": None, "native_size": False}


def _pair(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return (size, size)
    size = tuple(int(s) for s in size)
    if len(size) == 3:  # timm's (C, H, W)
        size = size[1:]
    if len(size) != 2:
        raise ValueError(f"input_size must be an int, (H, W) or (C, H, W), not {size!r}")
    return size  # type: ignore[return-value]


@dataclass
class TextTower:
    """The text side of an image-text backbone (CLIP and kin), for zero-shot classification (API 1.2).

    ``encode_text(prompts)`` maps a list of N strings to text embeddings [N, D] (a float tensor, normalised
    or not), tokenising them as the model was trained; it runs on the device ``module`` is on.
    ``encode_image`` maps a normalised image batch [N, 3, H, W] (as ``Backbone.model`` receives it) to image
    embeddings [N, D] in the same space; None says that ``Backbone.model``'s features are those embeddings
    (open_clip's ``encode_image``), so they are read from the feature cache. Both are compared after L2
    normalisation, and logits are ``logit_scale * cosine (+ logit_bias)``: the model's learned temperature
    (``exp`` of CLIP's ``logit_scale`` parameter, 100 for OpenAI's CLIP). ``module`` is the ``torch.nn.Module``
    holding both towers, which a strategy moves to its device; ``info`` is recorded with the strategy.
    """

    encode_text: Callable[[list[str]], Any]
    encode_image: Callable[[Any], Any] | None = None
    logit_scale: float = 100.0
    logit_bias: float | None = None
    module: Any = None
    info: dict = field(default_factory=dict)

    def read_temperature(self, model: Any) -> None:
        """``model``'s learned logit scale (``exp`` of its ``logit_scale`` parameter) and bias (SigLIP's
        ``logit_bias``), as CLIP-style models of open_clip and transformers keep them."""
        self.logit_scale = float(model.logit_scale.detach().exp().flatten()[0])
        bias = getattr(model, "logit_bias", None)
        self.logit_bias = None if bias is None else float(bias.detach().flatten()[0])


@dataclass
class Backbone:
    """A pretrained network cut before its classifier, with the preprocessing its weights expect.

    ``model`` maps a normalised float batch [N, 3, H, W] to pooled features [N, num_features].
    ``input_size`` is an int, (H, W) or timm's (3, H, W). Images are resized to
    ``input_size / crop_pct`` with ``interpolation`` and centre-cropped to ``input_size``.
    ``weights`` names the weights (a tag, a file digest, ``"random"``) for the record.

    Optional (API 1.2; a plugin written against 1.0/1.1 leaves them unset): ``text`` is a ``TextTower`` for
    image-text backbones (CLIP), which the ``zero-shot`` strategy needs; ``load_weights(state_dict)`` loads a
    ``--weights`` file's state dict into everything the backbone uses (both towers of a CLIP) and raises
    UsageError on a mismatch (unset: the file is loaded strictly into ``model``). ``source_head`` maps
    ``model``'s pooled features (a float32 CPU tensor [N, num_features]) to the logits [N, S] of the
    classifier the pretrained weights came with (ImageNet's), for the estimators that read source logits
    (``nce``, ``leep``); None (random init, no classifier) leaves them out.
    """

    model: Any
    num_features: int
    input_size: int | tuple[int, ...]
    mean: Sequence[float]
    std: Sequence[float]
    interpolation: str = "bilinear"
    crop_pct: float = 1.0
    weights: str | None = None
    info: dict = field(default_factory=dict)
    text: TextTower | None = None
    load_weights: Callable[[dict], Any] | None = None
    source_head: Callable[[Any], Any] | None = None

    def __post_init__(self) -> None:
        self.input_size = _pair(self.input_size)
        self.mean = tuple(float(m) for m in self.mean)
        self.std = tuple(float(s) for s in self.std)


@dataclass
class DatasetSplits:
    """A classification data set: each split a ``torch.utils.data.Dataset`` of ``(image, label)``.

    An image is a PIL image or a uint8 tensor [C, H, W] with C = 1 or 3. When ``val`` is None the
    harness carves a seeded, stratified validation split from ``train``.
    """

    train: Any
    test: Any
    classes: Sequence[str]
    val: Any = None
    info: dict = field(default_factory=dict)


@dataclass
class Predictions:
    """A strategy's answer on the test split: labels, predicted labels and scores [N, num_classes].

    ``metrics`` holds values the strategy measured itself, for registered metrics that labels and scores
    cannot carry (retrieval's recall@k and mAP need each query's ranking of the gallery); they are recorded
    beside the metrics computed from ``y_true``/``y_pred``/``y_score``.
    """

    y_true: Any
    y_pred: Any
    y_score: Any = None
    info: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)


class ImageTensorDataset:
    """A split held in memory as a uint8 tensor [N, C, H, W] and integer labels [N].

    Datasets of small images should return this: the harness then resizes and normalises whole
    batches on the device instead of decoding image by image.
    """

    def __init__(self, images: Any, labels: Any):
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images = images
        self.labels = labels

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        return self.images[index], int(self.labels[index])

    def fingerprint(self) -> str:
        """A digest of the images' and labels' content (taken once): keys the cells and features of data held in
        memory, so other pixels or labels never get a cached result."""
        if getattr(self, "_fingerprint", None) is None:
            from benchbone.digests import array_digest

            self._fingerprint = array_digest(self.images, self.labels)
        return self._fingerprint


@dataclass
class Config:
    """What ``benchbone_configure`` receives: the plugin manager and the front end's options."""

    pm: pluggy.PluginManager  # benchbone.plugins.PluginManager: pluggy's, plus versions and load problems
    options: dict


@dataclass(frozen=True)
class Cell:
    """One unit of work: backbone x dataset x strategy x seed, with its parameters. Small and picklable."""

    backbone: str
    pretrained: bool
    dataset: str
    strategy: str
    seed: int
    params: tuple[tuple[str, Any], ...]
    options: tuple[tuple[str, Any], ...]
    metrics: tuple[str, ...]
    data_dir: str | None = None
    weights: str | None = None  # a local state-dict file replacing the pretrained weights
    weights_sha256: str | None = None
    dataset_params: tuple[tuple[str, Any], ...] = ()  # what the dataset declared and --set gave (image_column)
    layer: str | None = None  # an intermediate block of the backbone (--set layer=NAME), None for its features
    corruption: tuple | None = None  # (name, severity, seed) applied to the test images (--set corruption=NAME)
    # What the dataset read, bound once it is built (``Session.bind``): "" for a dataset that reads no data
    # directory (``register(..., uses_data_dir=False)``), else a digest of its files or contents; None before
    # binding (the id is then keyed by ``data_dir``, as every id was before bindings existed).
    data_fingerprint: str | None = None

    @property
    def backbone_label(self) -> str:
        if self.weights:
            label = f"{self.backbone}@{Path(self.weights).name}"
        else:
            label = self.backbone if self.pretrained else self.backbone + RANDOM_SUFFIX
        return f"{label}#{self.layer}" if self.layer else label

    @property
    def dataset_label(self) -> str:
        """The dataset, with its test images' corruption: ``cifar10/gaussian_noise-3``."""
        return f"{self.dataset}/{self.corruption[0]}-{self.corruption[1]}" if self.corruption else self.dataset

    @property
    def data_key(self) -> str | None:
        """What identifies the cell's data in its id and its features' cache key: the data fingerprint once bound,
        None for a dataset that reads no data directory (the value of every id written without --data-dir)."""
        return self.data_dir if self.data_fingerprint is None else (self.data_fingerprint or None)

    @property
    def dataset_key(self) -> str:
        """The dataset in the cell's id and features' key: once bound to a fingerprint of what it read, a prefix
        dataset's path (``imagefolder:data``, ``imagefolder:/abs/data``) is left to the fingerprint."""
        return self.dataset.split(":", 1)[0] if self.data_fingerprint else self.dataset

    @property
    def id(self) -> str:
        """A stable hash of everything that defines the cell's result."""
        defining = {
            "backbone": self.backbone, "pretrained": self.pretrained, "dataset": self.dataset_key,
            "strategy": self.strategy, "seed": self.seed, "params": dict(self.params),
            "options": {k: v for k, v in self.options
                        if k not in _NOT_IN_ID and not (k in _IN_ID_WHEN_SET and v is _IN_ID_WHEN_SET[k])}, "data_dir": self.data_key,
        }
        if self.weights_sha256:
            defining["weights_sha256"] = self.weights_sha256
        if self.dataset_params:
            defining["dataset_params"] = dict(self.dataset_params)
        if self.layer:
            defining["layer"] = self.layer
        if self.corruption:
            defining["corruption"] = list(self.corruption)
        return json_digest(defining, length=16)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "Cell":
        return cls(**{**data, "params": tuple(map(tuple, data["params"])),
                      "options": tuple(map(tuple, data["options"])), "metrics": tuple(data["metrics"]),
                      "dataset_params": tuple(map(tuple, data.get("dataset_params", ()))),
                      "corruption": tuple(data["corruption"]) if data.get("corruption") else None})
