"""A plugin for tests/test_select.py: ``test/blobs-large``, the tiny blobs with enough items for several rounds
of ``benchbone select`` (480 training, 96 test images), and ``test/broken``, a backbone that fails to build."""
from benchbone import hookimpl
from benchbone.testing import blobs


def broken(pretrained: bool):
    raise RuntimeError("weights file is damaged (on purpose, for the tests)")


@hookimpl
def benchbone_register_backbones(register):
    register("test/broken", broken, description="fails to build, for tests")


@hookimpl
def benchbone_register_datasets(register):
    register("test/blobs-large", lambda data_dir, download: blobs(data_dir, download, n_train=800, n_test=96),
             description="test/blobs with 800 training images")


@hookimpl
def benchbone_register_estimators(register):
    register("test-nan", lambda features, labels, source_logits=None: float("nan"), cost=0.001,
             needs=("features", "labels"), description="returns NaN, for tests")
