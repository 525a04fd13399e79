"""An example benchbone plugin package: it registers one of each kind through the public API."""
from __future__ import annotations

from benchbone import Backbone, DatasetSplits, ImageTensorDataset, Predictions, hookimpl


def build_avgpool(pretrained: bool) -> Backbone:
    """A backbone with no weights: 4x4 average-pooled pixels, flattened (48 features)."""
    import torch

    model = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(4), torch.nn.Flatten())
    return Backbone(model=model, num_features=48, input_size=16, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
                    weights="none")


def build_stripes(data_dir, download) -> DatasetSplits:
    """Three classes of 16x16 images: horizontal, vertical or no stripes, with noise."""
    import torch

    g = torch.Generator().manual_seed(7)

    def make(n: int) -> ImageTensorDataset:
        labels = torch.arange(n) % 3
        images = torch.randint(0, 60, (n, 1, 16, 16), generator=g, dtype=torch.uint8)
        images[labels == 0, :, ::8, :] += 180
        images[labels == 1, :, :, ::8] += 180
        return ImageTensorDataset(images, labels)

    return DatasetSplits(make(60), make(30), ["horizontal", "vertical", "plain"])


def nearest_centroid(backbone, data, ctx) -> Predictions:
    """Classify test features by the nearest class mean of the training features."""
    import torch

    X, y = ctx.features("train")
    centroids = torch.stack([X[y == k].mean(0) for k in range(ctx.num_classes)])
    Xt, yt = ctx.features("test")
    scores = torch.softmax(-torch.cdist(Xt, centroids), dim=1)
    return Predictions(y_true=yt, y_pred=scores.argmax(1), y_score=scores)


def error_rate(y_true, y_pred, y_score) -> float:
    return float((y_true != y_pred).mean())


@hookimpl
def benchbone_register_backbones(register):
    register("sample/avgpool", build_avgpool, description="4x4 average-pooled pixels")


@hookimpl
def benchbone_register_datasets(register):
    register("sample/stripes", build_stripes, description="generated stripes, 3 classes")


@hookimpl
def benchbone_register_strategies(register):
    register("sample/nearest-centroid", nearest_centroid)


@hookimpl
def benchbone_register_metrics(register):
    register("sample/error-rate", error_rate, higher_is_better=False, percent=True)
