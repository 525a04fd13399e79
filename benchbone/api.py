"""The data types of plugin API v1: what backbones, datasets and strategies hand to the harness.

This module imports no torch, so that listing plugins and `--help` stay fast.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence


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
class Backbone:
    """A pretrained network cut before its classifier, with the preprocessing its weights expect.

    ``model`` maps a normalised float batch [N, 3, H, W] to pooled features [N, num_features].
    ``input_size`` is an int, (H, W) or timm's (3, H, W). Images are resized to
    ``input_size / crop_pct`` with ``interpolation`` and centre-cropped to ``input_size``.
    ``weights`` names the weights (a tag, a file digest, ``"random"``) for the record.
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
