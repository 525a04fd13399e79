"""Dataset plugins and loading: official layouts written here, bad input, the decode cache, the real CIFAR-10 copy."""
from __future__ import annotations

import gzip
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from benchbone import OfflineError, UsageError
from benchbone.inputs.loading import LoadedImages, iterate_batches
from benchbone.inputs.splits import whole
from benchbone.inputs.transforms import Preprocess
from benchbone.plugins import get_plugin_manager

REAL_CIFAR = [Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpeg",
              Path("/work/shared/data/cifar10-jpeg")]


@pytest.fixture(autouse=True)
def isolated(monkeypatch, tmp_path):
    monkeypatch.setenv("BENCHBONE_LOAD_PLUGINS", "")
    monkeypatch.setenv("BENCHBONE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("BENCHBONE_DATA_DIR", str(tmp_path / "data-root"))
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def build():
    datasets = get_plugin_manager(entrypoints=False).registries().datasets

    def run(name: str, data_dir=None, download: bool = False):
        return datasets.get(name).obj(data_dir=Path(data_dir) if data_dir else None, download=download)

    return run


def preprocess(size: int = 16) -> Preprocess:
    return Preprocess((size, size), 1.0, "bilinear", (0.5,) * 3, (0.25,) * 3)


# ---------------------------------------------------------------- CIFAR, official python layout

def write_cifar(root: Path, name: str = "cifar10", n: int = 3) -> tuple[Path, np.ndarray]:
    """Tiny files with the official names and dict keys, pickled with protocol 2 as the originals."""
    from benchbone_plugins.cifar import OFFICIAL

    spec = OFFICIAL[name]
    folder = root / spec["folder"]
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    first = None
    for i, file in enumerate([*spec["train"], *spec["test"]]):
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        first = data if first is None else first
        batch = {b"batch_label": f"batch {i}".encode(), spec["label_key"].encode(): [(i + j) % spec["num_classes"]
                 for j in range(n)], b"data": data, b"filenames": [f"img{j}.png".encode() for j in range(n)]}
        if name == "cifar100":
            batch[b"coarse_labels"] = [0] * n
        (folder / file).write_bytes(pickle.dumps(batch, protocol=2))
    meta_file, _, meta_key = spec["meta"]
    names = [f"class{c}" for c in range(spec["num_classes"])]
    (folder / meta_file).write_bytes(pickle.dumps({meta_key: names, "num_vis": 3072}, protocol=2))
    return folder, first


@pytest.mark.parametrize("name, n_train", [("cifar10", 15), ("cifar100", 3)])
def test_cifar_official_layout_written_here(build, tmp_path, name, n_train):
    folder, first = write_cifar(tmp_path, name)
    data = build(name, tmp_path)
    assert (len(data.train), len(data.test), len(data.classes)) == (n_train, 3, 10 if name == "cifar10" else 100)
    assert data.train.images.shape == (n_train, 3, 32, 32) and data.train.images.dtype == torch.uint8
    assert torch.equal(data.train.images[0], torch.from_numpy(first[0].reshape(3, 32, 32)))
    assert data.info["layout"] == "official python" and data.info["md5"].startswith("differs from the official")
    assert build(name, folder).info["path"] == str(folder)  # --data-dir may name the folder itself


def test_cifar_md5_of_official_names_is_checked(build, tmp_path, monkeypatch):
    import hashlib

    from benchbone_plugins import cifar

    folder, _ = write_cifar(tmp_path)
    spec = cifar.OFFICIAL["cifar10"]
    md5 = lambda f: hashlib.md5((folder / f).read_bytes()).hexdigest()  # noqa: E731
    patched = dict(spec, train={f: md5(f) for f in spec["train"]}, test={f: md5(f) for f in spec["test"]},
                   meta=(spec["meta"][0], md5(spec["meta"][0]), spec["meta"][2]))
    monkeypatch.setitem(cifar.OFFICIAL, "cifar10", patched)
    assert build("cifar10", tmp_path).info["md5"] == "official"
    (folder / "data_batch_2").write_bytes((folder / "data_batch_1").read_bytes())
    assert build("cifar10", tmp_path).info["md5"] == "differs from the official files: data_batch_2"


class Exploit:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def test_cifar_unpickler_refuses_code(build, tmp_path):
    folder, _ = write_cifar(tmp_path)
    marker = tmp_path / "pwned"
    (folder / "data_batch_3").write_bytes(pickle.dumps({"data": Exploit(marker)}, protocol=2))
    with pytest.raises(UsageError, match=r"data_batch_3 is not a readable CIFAR python file .*refused global posix.mkdir"):
        build("cifar10", tmp_path)
    assert not marker.exists()


def test_cifar_bad_official_files(build, tmp_path):
    folder, _ = write_cifar(tmp_path)
    (folder / "test_batch").write_bytes((folder / "test_batch").read_bytes()[:100])
    with pytest.raises(UsageError, match=r"test_batch is not a readable CIFAR python file"):
        build("cifar10", tmp_path)
    (folder / "test_batch").write_bytes(pickle.dumps({"data": np.zeros((2, 10), np.uint8), "labels": [0, 1]}))
    with pytest.raises(UsageError, match=r"test_batch: 'data' must be a uint8 array \[N, 3072\]"):
        build("cifar10", tmp_path)
    (folder / "test_batch").unlink()
    with pytest.raises(UsageError, match=r"test_batch is missing"):
        build("cifar10", tmp_path)


def test_cifar_offline_and_no_download(build, tmp_path, monkeypatch):
    import urllib.error

    import torchvision.datasets.utils as tv_utils

    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(tv_utils, "download_and_extract_archive", offline)
    (tmp_path / "empty").mkdir()
    with pytest.raises(OfflineError, match=r"cifar10: could not download .* pass --data-dir") as info:
        build("cifar10", tmp_path / "empty", download=True)
    assert "\n" not in str(info.value)
    with pytest.raises(UsageError, match=r"cifar10: no cifar-10-batches-py/ in .*empty; pass --data-dir"):
        build("cifar10", tmp_path / "empty")


# ---------------------------------------------------------------- image folders

def write_png(path: Path, value: int, size: int = 12, mode: str = "RGB") -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    colour = value if mode == "L" else (value, 255 - value, value // 2)
    Image.new(mode, (size, size), colour).save(path)


def write_folders(root: Path, splits=("train", "test"), classes=("cat", "dog"), n: int = 3, size: int = 12) -> None:
    for split in splits:
        for c, name in enumerate(classes):
            for i in range(n):
                write_png(root / split / name / f"{i}.png", 40 * c + i, size)


def test_cifar_class_folders(build, tmp_path):
    write_folders(tmp_path, classes=[f"c{i}" for i in range(10)], n=1)
    data = build("cifar10", tmp_path)
    assert (len(data.train), len(data.test), data.info["layout"]) == (10, 10, "class folders")
    write_folders(tmp_path / "two", n=1)
    with pytest.raises(UsageError, match=r"cifar10: .*two/train has 2 class folders, not 10; .*imagefolder:"):
        build("cifar10", tmp_path / "two")


def test_imagefolder_with_val_and_test(build, tmp_path):
    write_folders(tmp_path / "pets", splits=("train", "val", "test"))
    data = build("imagefolder:pets")  # relative to the working directory
    assert (len(data.train), len(data.val), len(data.test)) == (6, 6, 6)
    assert data.classes == ["cat", "dog"] and data.info["test_from"] == "test"
    image, label = data.train[3]
    assert image.shape == (3, 12, 12) and label == 1
    write_folders(tmp_path / "tv", splits=("train", "val"))
    assert build(f"imagefolder:{tmp_path / 'tv'}").info["test_from"] == "val"
    assert len(build("imagefolder:tv", data_dir=tmp_path).test) == 6  # relative to --data-dir


def test_imagefolder_one_folder_seeded_stratified_split(build, tmp_path):
    for c in ("a", "b"):
        for i in range(10):
            write_png(tmp_path / "flat" / c / f"{i}.png", i)
    data = build("imagefolder:flat")
    assert (len(data.train), len(data.test)) == (16, 4)
    assert np.bincount(data.test.targets).tolist() == [2, 2]
    assert build("imagefolder:flat").test.paths == data.test.paths  # the same split every time
    assert data.info["test_split"] == "stratified 0.2, seed 0"


@pytest.mark.parametrize("make, pattern", [
    (lambda root: None, r"imagefolder: .*nowhere does not exist"),
    (lambda root: root.mkdir(), r"nowhere is empty; expected .*nowhere/<class>/<image files>"),
    (lambda root: write_png(root / "loose.png", 1), r"nowhere holds images but no class folders"),
    (lambda root: write_folders(root, splits=("train",)), r"nowhere has train/ but neither test/ nor val/"),
    (lambda root: write_folders(root, splits=("val", "test")), r"nowhere has val/test/ but no train/"),
    (lambda root: (root / "a").mkdir(parents=True), r"class folder .*nowhere/a holds no images"),
    (lambda root: (write_folders(root, ("train",), ("cat", "dog")), write_folders(root, ("test",), ("cat", "cow"))),
     r"class folders differ between .*nowhere/train and .*nowhere/test \(only in .*nowhere/train: dog; "
     r"only in .*nowhere/test: cow\)"),
])
def test_imagefolder_bad_layouts(build, tmp_path, make, pattern):
    make(tmp_path / "nowhere")
    with pytest.raises(UsageError, match=pattern) as info:
        build("imagefolder:nowhere")
    assert "\n" not in str(info.value)


def test_unreadable_image_is_named(build, tmp_path):
    write_folders(tmp_path / "pets")
    (tmp_path / "pets" / "test" / "dog" / "1.png").write_bytes(b"not a png")
    data = build("imagefolder:pets")
    with pytest.raises(UsageError, match=r"cannot read image .*pets/test/dog/1.png: .*; remove or replace the file"):
        LoadedImages(data.test)


def test_decode_cache_roundtrip_and_invalidation(build, tmp_path):
    write_folders(tmp_path / "pets")
    write_png(tmp_path / "pets" / "train" / "cat" / "grey.png", 7, mode="L")  # grey joins RGB as 3 channels
    data = build("imagefolder:pets")
    cache = tmp_path / "cache"
    first = LoadedImages(data.train, cache)
    assert first.source == "decoded" and first.tensor.shape == (7, 3, 12, 12)
    assert torch.equal(first.tensor[3], torch.full((3, 12, 12), 7, dtype=torch.uint8))
    again = LoadedImages(data.train, cache)
    assert again.source == "decode cache" and torch.equal(again.tensor, first.tensor)
    cached = list((cache / "images").glob("*.safetensors"))
    assert len(cached) == 1 and not list((cache / "images").glob("*.pkl"))
    write_png(tmp_path / "pets" / "train" / "cat" / "grey.png", 9, mode="L")
    os.utime(tmp_path / "pets" / "train" / "cat" / "grey.png", ns=(1, 1))  # a changed file, a new key
    changed = LoadedImages(build("imagefolder:pets").train, cache)
    assert changed.source == "decoded" and changed.tensor[3, 0, 0, 0] == 9
    for path in (cache / "images").glob("*.safetensors"):  # damaged: warned, re-decoded
        path.write_bytes(path.read_bytes()[:-10])
    with pytest.warns(UserWarning, match="damaged"):
        assert LoadedImages(data.train, cache).source == "decoded"


def test_large_images_stream_through_workers(build, tmp_path):
    write_folders(tmp_path / "big", n=2, size=160)
    data = build("imagefolder:big")
    images = LoadedImages(data.train, tmp_path / "cache", workers=2)
    assert images.source == "streamed" and images.tensor is None
    batches = list(iterate_batches(images, whole("train", data.train), preprocess(16), batch_size=3, device="cpu"))
    assert [x.shape for x, _ in batches] == [(3, 3, 16, 16), (1, 3, 16, 16)]
    assert [y.tolist() for _, y in batches] == [[0, 0, 1], [1]]
    assert not (tmp_path / "cache" / "images").exists()


# ---------------------------------------------------------------- MNIST and Fashion-MNIST, idx files

def write_idx(path: Path, array: np.ndarray, compress: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    blob = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    blob += array.astype(np.uint8).tobytes()
    (gzip.open(str(path) + ".gz", "wb") if compress else open(path, "wb")).__enter__().write(blob)


def write_mnist(folder: Path, compress: bool, n_train: int = 6, n_test: int = 4) -> None:
    rng = np.random.default_rng(1)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        write_idx(folder / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)), compress)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10, compress)


@pytest.mark.parametrize("name, sub, compress", [("mnist", "MNIST/raw", False), ("fashion-mnist", "FashionMNIST/raw", True)])
def test_mnist_torchvision_layout(build, tmp_path, name, sub, compress):
    write_mnist(tmp_path / "root" / sub, compress)
    data = build(name, tmp_path / "root")
    assert (len(data.train), len(data.test)) == (6, 4) and data.train.images.shape == (6, 1, 28, 28)
    assert data.train.labels.tolist() == [0, 1, 2, 3, 4, 5] and len(data.classes) == 10
    x, _ = next(iterate_batches(LoadedImages(data.test), whole("test", data.test), preprocess(32), batch_size=4,
                                device="cpu"))
    assert x.shape == (4, 3, 32, 32) and torch.equal(x[:, 0], x[:, 2])  # grey became 3 equal channels


def test_fashion_mnist_found_where_debian_installs_it(build, tmp_path, monkeypatch):
    from benchbone_plugins import mnist

    system = tmp_path / "usr-share-datasets-fashion-mnist"
    write_mnist(system, compress=True)
    monkeypatch.setitem(mnist.SETS, "fashion-mnist", dict(mnist.SETS["fashion-mnist"], system=(system,)))
    assert build("fashion-mnist").info["path"] == str(system)
    with pytest.raises(UsageError, match=r"mnist: no idx files in .*data-root; pass --data-dir DIR holding "
                                         r"train-images-idx3-ubyte\[.gz\]"):
        build("mnist")


def test_mnist_bad_files(build, tmp_path):
    write_mnist(tmp_path / "m", compress=False)
    path = tmp_path / "m" / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(UsageError, match=r"t10k-images-idx3-ubyte is truncated"):
        build("mnist", tmp_path / "m")
    path.write_bytes(b"\x00\x00\x0d\x03garbage")
    with pytest.raises(UsageError, match=r"t10k-images-idx3-ubyte is not an idx file of unsigned bytes"):
        build("mnist", tmp_path / "m")
    path.unlink()
    with pytest.raises(UsageError, match=r"mnist: .*m lacks the idx files"):
        build("mnist", tmp_path / "m")
    with pytest.raises(UsageError, match=r"mnist: data directory .*missing does not exist"):
        build("mnist", tmp_path / "missing")


def test_digits_are_grey_and_offline(build):
    data = build("digits")
    assert data.train.images.shape[1:] == (1, 8, 8) and len(data.classes) == 10


# ---------------------------------------------------------------- the real CIFAR-10 copy (JPEG)

@pytest.mark.slow
def test_real_cifar10_jpeg(build, tmp_path):
    root = next((p for p in REAL_CIFAR if (p / "test").is_dir()), None)
    if root is None:
        pytest.skip("no ../shared/data/cifar10-jpeg here")
    data = build("cifar10", root)
    assert (len(data.train), len(data.test)) == (50000, 10000)
    assert data.classes == ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    images = LoadedImages(data.test, tmp_path / "cache")
    assert images.source == "decoded" and images.tensor.shape == (10000, 3, 32, 32)
    assert np.bincount(data.test.targets).tolist() == [1000] * 10
    assert LoadedImages(data.test, tmp_path / "cache").source == "decode cache"
    x, y = next(iterate_batches(images, whole("test", data.test), preprocess(64), batch_size=8, device="cpu"))
    assert x.shape == (8, 3, 64, 64) and x.dtype == torch.float32


def test_changed_image_files_get_new_features(run_tiny_benchmark, tmp_path):
    write_folders(tmp_path / "pets", n=4)
    probe = {"linear-probe.C": 1.0, "linear-probe.max_iter": 20}
    run_tiny_benchmark(datasets=["imagefolder:pets"], overrides=probe, out=tmp_path / "one")
    features = tmp_path / "cache" / "features"
    before = set(features.glob("*.safetensors"))
    write_png(tmp_path / "pets" / "test" / "dog" / "0.png", 200)
    os.utime(tmp_path / "pets" / "test" / "dog" / "0.png", ns=(1, 1))
    run_tiny_benchmark(datasets=["imagefolder:pets"], overrides=probe, out=tmp_path / "two")
    after = set(features.glob("*.safetensors"))
    assert len(before) == 2 and len(after - before) == 1  # train reused, the changed test split extracted anew
