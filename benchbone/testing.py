"""A pytest plugin for benchbone and its plugin authors: a tiny backbone and dataset, fixtures, a fake context.

``TinyPlugin`` registers ``test/tiny-cnn`` (a 2-layer CNN, 16 px) and ``test/blobs`` (a generated,
learnable 4-class set of 16x16 images), so a whole grid runs on a CPU in seconds. Load it from the
command line with ``-p benchbone.testing``. ``make_context(features=..., labels=...)`` builds what a
strategy receives as ``ctx`` from given features, to unit-test a strategy without running a grid.
"""
from __future__ import annotations

from pathlib import Path

from benchbone.api import Backbone, DatasetSplits, ImageTensorDataset
from benchbone.hookspecs import hookimpl

__all__ = ["TinyPlugin", "tiny_cnn", "blobs", "make_context", "FakeContext", "benchbone_pm", "run_tiny_benchmark"]
SPLITS = ("train", "val", "test")


def tiny_cnn(pretrained: bool) -> Backbone:
    """A small CNN: [N, 3, 16, 16] -> [N, 8]. 'Pretrained' weights are a fixed seeded init."""
    import torch

    if pretrained:
        torch.manual_seed(1234)  # the same "pretrained" weights every time
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
        torch.nn.Conv2d(8, 8, 3, padding=1, stride=2), torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
    )
    return Backbone(model=model, num_features=8, input_size=16, mean=(0.5,) * 3, std=(0.25,) * 3,
                    weights="tiny-seeded" if pretrained else "random")


def blobs(data_dir, download, n_train: int = 96, n_test: int = 48, classes: int = 4) -> DatasetSplits:
    """Images whose class sets the mean colour of one quadrant: learnable by any feature extractor."""
    import torch

    g = torch.Generator().manual_seed(0)

    def make(n: int) -> ImageTensorDataset:
        labels = torch.arange(n) % classes
        images = torch.randint(0, 100, (n, 3, 12, 12), generator=g, dtype=torch.uint8)
        for i, label in enumerate(labels.tolist()):
            r, c = divmod(label, 2)
            images[i, label % 3, r * 6:(r + 1) * 6, c * 6:(c + 1) * 6] += 150
        return ImageTensorDataset(images, labels)

    return DatasetSplits(make(n_train), make(n_test), [f"class{i}" for i in range(classes)])


class TinyPlugin:
    """Registers test/tiny-cnn and test/blobs; add it with ``pm.register(TinyPlugin(), name="tiny")``."""

    __name__ = "tiny"

    @hookimpl
    def benchbone_register_backbones(self, register):
        register("test/tiny-cnn", tiny_cnn, description="2-layer CNN for tests")

    @hookimpl
    def benchbone_register_datasets(self, register):
        register("test/blobs", blobs, description="generated 4-class 12x12 images for tests", uses_data_dir=False)


class FakeContext:
    """The part of ``benchbone.Context`` that feature-based strategies use, on given features: ``device``,
    ``seed``, ``params``, ``classes``, ``num_classes``, ``info``, ``workdir``, ``features(split)``,
    ``labels(split)``, ``split_size(split)``, ``progress(...)`` and ``generator(offset)``. ``batches`` needs
    images and a backbone: run those strategies through ``run_tiny_benchmark`` instead."""

    def __init__(self, features: dict, labels: dict, params: dict, classes: list[str], seed: int, workdir: Path):
        self._features, self._labels = features, labels
        self.params, self.classes, self.seed, self.device = dict(params), list(classes), seed, "cpu"
        self.info: dict = {}
        self.extraction: dict = {}
        self.workdir = Path(workdir)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def _split(self, split: str):
        if split not in self._features:
            raise KeyError(f"make_context got no {split!r} features; pass features={{{split!r}: X, ...}}")
        return self._features[split], self._labels[split]

    def features(self, split: str):
        return self._split(split)

    def labels(self, split: str):
        return self._split(split)[1]

    def split_size(self, split: str) -> int:
        return len(self._split(split)[1])

    def progress(self, iterable, desc: str = "", total: int | None = None):
        return iterable

    def generator(self, offset: int = 0):
        import torch

        return torch.Generator().manual_seed(self.seed * 1_000_003 + offset)


def make_context(*, features: dict, labels: dict, params: dict | None = None, classes: list[str] | None = None,
                 seed: int = 0, workdir: str | Path | None = None) -> FakeContext:
    """A fake ``ctx`` for a strategy: ``features`` and ``labels`` map split names (``"train"``, ``"val"``,
    ``"test"``) to ``[N, D]`` float32 and ``[N]`` int64 tensors (or anything ``torch.as_tensor`` takes);
    ``params`` are the strategy's parameters (give its defaults, as the harness would); ``classes``
    defaults to ``class0..`` for every label seen."""
    import tempfile

    import torch

    unknown = set(features) - set(SPLITS)
    if unknown or set(features) != set(labels):
        raise ValueError(f"make_context: give features and labels for the same splits among {', '.join(SPLITS)}")
    X = {k: torch.as_tensor(v, dtype=torch.float32) for k, v in features.items()}
    y = {k: torch.as_tensor(v, dtype=torch.int64) for k, v in labels.items()}
    if classes is None:
        classes = [f"class{i}" for i in range(int(max(int(v.max()) for v in y.values())) + 1)]
    return FakeContext(X, y, params or {}, classes, seed, Path(workdir) if workdir else Path(tempfile.mkdtemp()))


# ``-p benchbone.testing`` registers these module-level hooks
_tiny = TinyPlugin()
benchbone_register_backbones = _tiny.benchbone_register_backbones
benchbone_register_datasets = _tiny.benchbone_register_datasets

try:
    import pytest
except ImportError:  # the CLI can load this module without pytest installed
    pytest = None

if pytest is not None:

    @pytest.fixture
    def benchbone_pm(monkeypatch):
        """A fresh plugin manager: built-ins plus the tiny plugin, no installed entry points."""
        from benchbone.plugins import get_plugin_manager

        monkeypatch.setenv("BENCHBONE_LOAD_PLUGINS", "")
        return get_plugin_manager(extra=["benchbone.testing"])

    @pytest.fixture
    def run_tiny_benchmark(benchbone_pm, tmp_path: Path):
        """Run a small grid on the tiny backbone and dataset; returns the leaderboard DataFrame.

        ``run(backbones=("test/tiny-cnn",), datasets=("test/blobs",), strategies=("linear-probe",), *,
        metrics=[], seeds=1, overrides={"key": value} (as --set), out=tmp_path/"run", pm=benchbone_pm,
        cache_dir=tmp_path/"cache", ...)``; further keywords go to ``benchbone.execution.harness.run_grid``."""
        from benchbone.execution.harness import run_grid
        from benchbone.planning.grid import GridSpec

        def run(backbones=("test/tiny-cnn",), datasets=("test/blobs",), strategies=("linear-probe",), **kwargs):
            spec = GridSpec(list(backbones), list(datasets), list(strategies), list(kwargs.pop("metrics", [])),
                            kwargs.pop("seeds", 1), kwargs.pop("overrides", {}))
            return run_grid(spec, out=kwargs.pop("out", tmp_path / "run"), pm=kwargs.pop("pm", benchbone_pm),
                            cache_dir=kwargs.pop("cache_dir", tmp_path / "cache"), quiet=True, echo=False, **kwargs)

        return run
