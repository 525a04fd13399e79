"""The plugin API 1.1 example (docs/plugins.md): one backbone, dataset, strategy and metric, a cell wrapper."""
from __future__ import annotations

from benchbone import Backbone, Context, DatasetSplits, ImageTensorDataset, Predictions, UsageError, hookimpl
from benchbone.helpers import state_digest

__version__ = "1.1.0"


def build_pooled(pretrained: bool) -> Backbone:
    """No weights to load: 4x4 average-pooled pixels, flattened (48 features)."""
    import torch

    model = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(4), torch.nn.Flatten())
    return Backbone(model=model, num_features=48, input_size=16, mean=(0.5,) * 3, std=(0.5,) * 3, weights="none")


def build_squares(data_dir, download, *, size: int) -> DatasetSplits:
    """Two classes of noisy images: a bright square top-left or bottom-right, ``size`` pixels a side."""
    import torch

    g = torch.Generator().manual_seed(11)

    def make(n: int) -> ImageTensorDataset:
        labels = torch.arange(n) % 2
        images = torch.randint(0, 80, (n, 3, 16, 16), generator=g, dtype=torch.uint8)
        images[labels == 0, :, :size, :size] += 150
        images[labels == 1, :, -size:, -size:] += 150
        return ImageTensorDataset(images, labels)

    return DatasetSplits(make(64), make(32), ["top-left", "bottom-right"])


def check_shrinkage(params: dict) -> None:
    if not 0.0 <= params["shrinkage"] < 1.0:
        raise UsageError(f"shapes/centroid: shrinkage={params['shrinkage']} must be in [0, 1)")


def nearest_centroid(backbone: Backbone, data: DatasetSplits, ctx: Context) -> Predictions:
    """Class means of the training features, shrunk towards their overall mean; nearest mean wins."""
    import torch

    X, y = ctx.features("train")
    means = torch.stack([X[y == k].mean(0) for k in range(ctx.num_classes)])
    means = (1 - ctx.params["shrinkage"]) * means + ctx.params["shrinkage"] * X.mean(0)
    Xt, yt = ctx.features("test")
    scores = torch.softmax(-torch.cdist(Xt, means), dim=1)
    ctx.info["backbone_digest"] = state_digest(backbone.model)
    return Predictions(y_true=yt, y_pred=scores.argmax(1), y_score=scores)


def errors(y_true, y_pred, y_score):
    return (y_true != y_pred).astype(float)


def error_rate(y_true, y_pred, y_score) -> float:
    return float(errors(y_true, y_pred, y_score).mean())


@hookimpl
def benchbone_register_backbones(register):
    register("shapes/pooled", build_pooled, description="4x4 average-pooled pixels")


@hookimpl
def benchbone_register_datasets(register):
    register("shapes/squares", build_squares, params={"size": 5}, augment=False,
             description="generated squares, 2 classes")


@hookimpl
def benchbone_register_strategies(register):
    register("shapes/centroid", nearest_centroid, params={"shrinkage": 0.0}, check=check_shrinkage,
             aliases=("centroid",), description="nearest class mean of frozen features")


@hookimpl
def benchbone_register_metrics(register):
    register("shapes/error-rate", error_rate, higher_is_better=False, percent=True, per_item=errors,
             default=False, description="share of test images classified wrong")


@hookimpl(wrapper=True)
def benchbone_run_cell(cell, run_dir):
    record = yield
    record["strategy_info"]["shapes_saw"] = cell.id
    return record
