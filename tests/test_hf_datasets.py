"""hf:NAME_OR_PATH datasets, built here with the `datasets` library from real CIFAR-10 JPEG images."""
from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

datasets = pytest.importorskip("datasets")

from benchbone import OfflineError, UsageError  # noqa: E402
from benchbone.plugins import get_plugin_manager  # noqa: E402

CIFAR = next((p for p in [Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpeg",
                          Path("/work/shared/data/cifar10-jpeg")] if p.is_dir()), None)
needs_cifar = pytest.mark.skipif(CIFAR is None, reason="the CIFAR-10 JPEG copy is not here")
CLASSES = ["airplane", "automobile", "bird"]


@pytest.fixture(autouse=True)
def hf_cache(monkeypatch, tmp_path):
    """The datasets cache of this test only (datasets reads its config at import, so patch it there)."""
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    datasets.disable_progress_bars()  # the tests' own save_to_disk calls would print on stderr
    yield tmp_path / "hf-cache"
    datasets.enable_progress_bars()


def build(name: str, data_dir=None, download=False, **params):
    entry = get_plugin_manager(entrypoints=False).registries().datasets.get(name)
    return entry.obj(data_dir=data_dir, download=download, **params)


def cifar_files(split: str, per_class: int) -> list[tuple[Path, int]]:
    return [(path, label) for label, name in enumerate(CLASSES)
            for path in sorted((CIFAR / split / name).glob("*.jpg"))[:per_class]]


def real_split(split: str, per_class: int, **extra_columns):
    from PIL import Image

    files = cifar_files(split, per_class)
    columns = {"img": [Image.open(p) for p, _ in files], "label": [label for _, label in files],
               "name": [p.name for p, _ in files]}
    features = {"img": datasets.Image(), "label": datasets.ClassLabel(names=CLASSES), "name": datasets.Value("string")}
    for column, (values, feature) in extra_columns.items():
        columns[column], features[column] = values(files), feature
    return datasets.Dataset.from_dict(columns, features=datasets.Features(features))


def image_folder(root: Path, splits: dict[str, int]) -> Path:
    """The same JPEG files in imagefolder layout, for a side-by-side check."""
    for split, per_class in splits.items():
        for path, label in cifar_files(split, per_class):
            target = root / split / CLASSES[label]
            target.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, target / path.name)
    return root


@needs_cifar
def test_save_to_disk_folder_reads_real_images(tmp_path):
    datasets.DatasetDict(train=real_split("train", 6), test=real_split("test", 3)).save_to_disk(tmp_path / "cifar3")
    data = build("hf:cifar3", data_dir=tmp_path)  # relative to --data-dir
    assert data.classes == CLASSES and (len(data.train), len(data.test), data.val) == (18, 9, None)
    assert data.info["image_column"] == "img" and data.info["label_column"] == "label"
    path, label = cifar_files("test", 3)[4]
    image, got = data.test[4]
    from PIL import Image

    assert got == label and np.array_equal(np.asarray(image), np.asarray(Image.open(path)))
    assert data.train.targets == [label for _, label in cifar_files("train", 6)]


@needs_cifar
def test_parquet_folder_with_validation_and_string_labels(tmp_path):
    folder = tmp_path / "pq" / "data"
    folder.mkdir(parents=True)
    for split, n in (("train", 4), ("validation", 2), ("test", 2)):
        table = real_split(split if split != "validation" else "train", n).remove_columns("label")
        table = table.add_column("kind", [name[:3] for name in table["name"]])  # not a label name
        names = [CLASSES[i // n] for i in range(len(table))]
        table.add_column("species", names).to_parquet(folder / f"{split}-00000-of-00001.parquet")
    with pytest.raises(UsageError, match=r"hf:.*no label column \(columns: img \(Image\), name .*--set label_column"):
        build(f"hf:{tmp_path / 'pq'}")
    data = build(f"hf:{tmp_path / 'pq'}", label_column="species")
    assert data.classes == sorted(CLASSES) and data.info["source"] == "data files"
    assert (len(data.train), len(data.val), len(data.test)) == (12, 6, 6)
    assert data.test.targets == [sorted(CLASSES).index(CLASSES[i // 2]) for i in range(6)]


@needs_cifar
def test_hub_name_read_from_the_cache_offline(tmp_path, hf_cache, monkeypatch):
    """A hub dataset cached by an earlier online load_dataset: the cache's own layout, org___name/config/version/hash."""
    source = tmp_path / "src" / "data"
    source.mkdir(parents=True)
    for split, n in (("train", 4), ("test", 2)):
        real_split(split, n).to_parquet(source / f"{split}-00000-of-00001.parquet")
    datasets.load_dataset(str(source.parent))  # prepares <cache>/src/default/0.0.0/<hash>/src-{train,test}.arrow
    (hf_cache / "src").rename(hf_cache / "someorg___cifar3")
    for arrow in (hf_cache / "someorg___cifar3").rglob("src-*.arrow"):
        arrow.rename(arrow.with_name(arrow.name.replace("src-", "cifar3-")))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    data = build("hf:someorg/cifar3", download=True)
    assert data.info["source"] == "Hugging Face cache" and (len(data.train), len(data.test)) == (12, 6)
    with pytest.raises(OfflineError, match=r"hf:someorg/missing: .*not in the Hugging Face datasets cache "
                                           r"\(HF_DATASETS_CACHE=.*save_to_disk\(DIR\) and pass hf:DIR"):
        build("hf:someorg/missing", download=True)


@needs_cifar
def test_same_images_as_imagefolder_give_the_same_leaderboard(cli, tmp_path):
    """hf: and imagefolder: over the same JPEG files: the same features, so the same knn accuracy."""
    datasets.DatasetDict(train=real_split("train", 10), test=real_split("test", 5)).save_to_disk(tmp_path / "hf3")
    image_folder(tmp_path / "if3", {"train": 10, "test": 5})
    result = cli("run", "-b", "pixels:8", "-d", f"hf:{tmp_path / 'hf3'}", "-d", f"imagefolder:{tmp_path / 'if3'}",
                 "-s", "knn", "--set", "k=3", "--set", "image_column=img", "-q", "--out", tmp_path / "run")
    assert result.code == 0, result.err
    board = json.loads((tmp_path / "run" / "leaderboard.json").read_text())
    assert [row["status"] for row in board] == ["ok", "ok"]
    assert board[0]["top1"] == board[1]["top1"] and board[0]["top1"] > 1 / 3
    records = [json.loads(p.read_text()) for p in (tmp_path / "run" / "records").glob("*.json")]
    record = next(r for r in records if r["dataset"].startswith("hf:"))
    assert record["data"]["plugin_info"]["image_column"] == "img" and record["cell"]["dataset_params"] == [
        ["image_column", "img"], ["label_column", None]]


def write_dataset(root: Path, splits: dict, features: dict) -> Path:
    feats = datasets.Features(features)
    datasets.DatasetDict({name: datasets.Dataset.from_dict(columns, features=feats)
                          for name, columns in splits.items()}).save_to_disk(root)
    return root


GREY = np.zeros((4, 4), np.uint8)


@pytest.mark.parametrize("splits, features, extra, message", [
    ({"train": {"x": [1, 2], "label": [0, 1]}, "test": {"x": [1], "label": [0]}},
     {"x": datasets.Value("int64"), "label": datasets.ClassLabel(names=["a", "b"])}, [],
     r"no Image column \(columns: x \(Value\), label \(ClassLabel\)\); pass --set image_column=NAME"),
    ({"train": {"img": [GREY, GREY], "y": [0.5, 1.5]}, "test": {"img": [GREY], "y": [0.5]}},
     {"img": datasets.Image(), "y": datasets.Value("float32")}, [],
     r"no label column \(columns: img \(Image\), y \(Value\)\); pass --set label_column=NAME"),
    ({"train": {"img": [GREY, GREY], "y": [0.5, 1.5]}, "test": {"img": [GREY], "y": [0.5]}},
     {"img": datasets.Image(), "y": datasets.Value("float32")}, ["--set", "label_column=y"],
     r"label column 'y' holds Value\(.*float32.*not class labels"),
    ({"train": {"img": [GREY, GREY], "label": [0, 1]}},
     {"img": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b"])}, [],
     r"splits train; benchbone needs train and test \(or train and validation\)"),
    ({"train": {"img": [GREY, GREY], "label": [0, 1]}, "test": {"img": [GREY], "label": [-1]}},
     {"img": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b"])}, [],
     r"split test has labels outside 0..1 .*keep labelled rows only"),
    ({"train": {"img": [GREY, GREY], "label": [0, 1]}, "test": {"img": [GREY], "label": [0]}},
     {"img": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b"])}, ["--set", "image_column=picture"],
     r"no column 'picture' \(columns: img \(Image\), label \(ClassLabel\)\); fix --set image_column"),
])
def test_bad_datasets_one_line_exit_2_nothing_written(cli, tmp_path, splits, features, extra, message):
    root = write_dataset(tmp_path / "bad", splits, features)
    result = cli("run", "-b", "pixels:8", "-d", f"hf:{root}", "-s", "knn", *extra, "--out", tmp_path / "out")
    assert result.code == 2 and result.err.count("\n") == 1, result.err
    assert result.err.startswith(f"benchbone: error: hf:{root}: ") and re.search(message, result.err), result.err
    assert not (tmp_path / "out").exists()


def test_unreadable_folder_and_missing_library(cli, tmp_path, monkeypatch):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "weights.bin").write_bytes(b"\0" * 64)  # no format datasets knows
    result = cli("run", "-b", "pixels:8", "-d", f"hf:{tmp_path / 'notes'}", "-s", "knn", "--out", tmp_path / "out")
    assert result.code == 2 and result.err.count("\n") == 1 and "datasets cannot read" in result.err, result.err
    monkeypatch.setitem(sys.modules, "datasets", None)  # as if benchbone[hf] were not installed
    result = cli("run", "-b", "pixels:8", "-d", f"hf:{tmp_path / 'notes'}", "-s", "knn", "--out", tmp_path / "out")
    assert result.code == 2 and "pip install 'benchbone[hf]'" in result.err and result.err.count("\n") == 1
    assert not (tmp_path / "out").exists()
