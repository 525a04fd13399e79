"""A plugin for tests/test_select.py: ``test/blobs-large``, the tiny blobs with enough items for several rounds
of ``benchbone select`` (480 training, 96 test images), ``test/broken``, a backbone that fails to build, and
``test/headed-cnn``, ``test/tiny-cnn`` with a source head (tests/test_source_logits.py)."""
from benchbone import hookimpl
from benchbone.testing import blobs, tiny_cnn


def broken(pretrained: bool):
    raise RuntimeError("weights file is damaged (on purpose, for the tests)")


def headed(pretrained: bool):
    """``test/tiny-cnn`` whose pretrained weights keep a seeded 5-class classifier on its 8 features."""
    import torch

    backbone = tiny_cnn(pretrained)
    if pretrained:
        torch.manual_seed(5)
        backbone.source_head = torch.nn.Linear(8, 5).eval()
    return backbone


@hookimpl
def benchbone_register_backbones(register):
    register("test/broken", broken, description="fails to build, for tests")
    register("test/headed-cnn", headed, description="test/tiny-cnn with a source head, for tests")


@hookimpl
def benchbone_register_datasets(register):
    register("test/blobs-large", lambda data_dir, download: blobs(data_dir, download, n_train=800, n_test=96),
             description="test/blobs with 800 training images")


@hookimpl
def benchbone_register_estimators(register):
    register("test-nan", lambda features, labels, source_logits=None: float("nan"), cost=0.001,
             needs=("features", "labels"), description="returns NaN, for tests")
