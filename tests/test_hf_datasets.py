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
    assert record["data"]["plugin_info"]["image_column"] == "img" and dict(record["cell"]["dataset_params"]) == {
        "image_column": "img", "label_column": None, "drop_unlabelled": False}


def write_dataset(root: Path, splits: dict, features: dict) -> Path:
    feats = datasets.Features(features)
    datasets.DatasetDict({name: datasets.Dataset.from_dict(columns, features=feats)
                          for name, columns in splits.items()}).save_to_disk(root)
    return root


GREY = np.zeros((4, 4), np.uint8)


@pytest.mark.parametrize("splits, features, extra, message", [
    ({"train": {"x": [1, 2], "label": [0, 1]}, "test": {"x": [1], "label": [0]}},
     {"x": datasets.Value("int64"), "label": datasets.ClassLabel(names=["a", "b"])}, [],
     (r"no Image column and none named image, img, path, file \(columns: x \(Value\), label \(ClassLabel\)\); "
      r"pass --set image_column=NAME")),
    ({"train": {"img": [GREY, GREY], "y": [0.5, 1.5]}, "test": {"img": [GREY], "y": [0.5]}},
     {"img": datasets.Image(), "y": datasets.Value("float32")}, [],
     r"no label column \(columns: img \(Image\), y \(Value\)\); pass --set label_column=NAME"),
    ({"train": {"img": [GREY, GREY], "y": [0.5, 1.5]}, "test": {"img": [GREY], "y": [0.5]}},
     {"img": datasets.Image(), "y": datasets.Value("float32")}, ["--set", "label_column=y"],
     r"label column 'y' holds Value\(.*float32.*not class labels"),
    ({"train": {"img": [GREY, GREY], "label": [0, 1]}},
     {"img": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b"])}, [],
     (r"only a train split; benchbone needs a test split .*validation split from train \(--set val_fraction, "
      r"default 0.1\), never the test split: .*train_test_split\(test_size=0.2, seed=0\)")),
    ({"test": {"img": [GREY, GREY], "label": [0, 1]}},
     {"img": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b"])}, [],
     r"splits test; benchbone needs train and test \(or train and validation\)"),
    ({"train": {"img": [GREY, GREY], "label": [0, 1]}, "test": {"img": [GREY], "label": [-1]}},
     {"img": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b"])}, [],
     r"unlabelled rows \(label -1\): 1 of 1 in test; keep labelled rows only or pass --set drop_unlabelled=true"),
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


def shades(values) -> list:
    """4x4 grey images of the given shades, so that each row can be told apart."""
    return [np.full((4, 4), v, np.uint8) for v in values]


def pixels(image) -> np.ndarray:
    """An image as the dataset returned it (PIL, or a uint8 tensor [C, H, W]) as an array [H, W, C]."""
    array = np.asarray(image) if not hasattr(image, "permute") else image.permute(1, 2, 0).numpy()
    return array if array.ndim == 3 else array[..., None]


LABEL_KINDS = pytest.mark.parametrize("label", [datasets.ClassLabel(names=["a", "b"]), datasets.Value("int64")],
                                      ids=["ClassLabel", "int"])
SEMI = {"train": {"img": shades([10, 20, 30, 40, 50]), "label": [0, -1, 1, -1, 0]},
        "test": {"img": shades([60, 70, 80]), "label": [1, 0, -1]}}


@LABEL_KINDS
def test_unlabelled_rows_are_refused_naming_each_split_and_count(cli, tmp_path, label):
    """label -1 (an unlabelled row) is no class of its own: one line, exit 2, naming the splits and counts."""
    root = write_dataset(tmp_path / "semi", SEMI, {"img": datasets.Image(), "label": label})
    result = cli("run", "-b", "pixels:8", "-d", f"hf:{root}", "-s", "knn", "--out", tmp_path / "out")
    assert result.code == 2 and result.err.count("\n") == 1, result.err
    assert result.err.startswith(f"benchbone: error: hf:{root}: 3 unlabelled rows (label -1): 2 of 5 in train, "
                                 "1 of 3 in test; keep labelled rows only or pass --set drop_unlabelled=true"), \
        result.err
    assert not (tmp_path / "out").exists()


@LABEL_KINDS
def test_drop_unlabelled_leaves_them_out_and_counts_them(tmp_path, label):
    root = write_dataset(tmp_path / "semi", SEMI, {"img": datasets.Image(), "label": label})
    with pytest.warns(UserWarning, match=r"^hf:.*semi: left out 3 unlabelled rows \(label -1\): 2 of 5 in train, "
                                         r"1 of 3 in test \(--set drop_unlabelled=true\)$"):
        data = build(f"hf:{root}", drop_unlabelled=True)
    assert data.classes == (["a", "b"] if isinstance(label, datasets.ClassLabel) else ["0", "1"])  # no class "-1"
    assert data.train.targets == [0, 1, 0] and data.test.targets == [1, 0]
    assert [int(pixels(data.train[i][0])[0, 0, 0]) for i in range(3)] == [10, 30, 50]
    assert [int(pixels(data.test[i][0])[0, 0, 0]) for i in range(2)] == [60, 70]
    assert data.info["unlabelled_dropped"] == {"train": 2, "test": 1}
    assert data.info["splits"] == {"train": 3, "test": 2}
    labelled = write_dataset(tmp_path / "labelled", {"train": {"img": shades([10, 30, 50]), "label": [0, 1, 0]},
                                                     "test": {"img": shades([60, 70]), "label": [1, 0]}},
                             {"img": datasets.Image(), "label": label})
    assert build(f"hf:{labelled}", drop_unlabelled=True).info["unlabelled_dropped"] == {}
    none_left = write_dataset(tmp_path / "none",
                              {"train": SEMI["train"], "test": {"img": shades([1, 2]), "label": [-1, -1]}},
                              {"img": datasets.Image(), "label": label})
    with pytest.raises(UsageError, match=r"split test has no labelled rows \(2 unlabelled\)"):
        build(f"hf:{none_left}", drop_unlabelled=True)


def test_drop_unlabelled_in_a_run_is_one_warning_and_in_the_record(cli, tmp_path):
    labels = [0, 1, -1, 0, 1, 0, 1, -1, 0, 1, 0, 1, 0, 1]
    root = write_dataset(tmp_path / "semi", {
        "train": {"img": shades(range(0, 140, 10)), "label": labels},
        "test": {"img": shades([5, 15, 25, 35]), "label": [0, 1, -1, 1]}},
        {"img": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b"])})
    result = cli("run", "-b", "pixels:4", "-d", f"hf:{root}", "-s", "knn", "--set", "k=1",
                 "--set", "drop_unlabelled=true", "-q", "--out", tmp_path / "run")
    assert result.code == 0, result.err
    warning, = [line for line in result.err.splitlines() if "unlabelled" in line]
    assert warning == (f"benchbone: warning: hf:{root}: left out 3 unlabelled rows (label -1): 2 of 14 in train, "
                       "1 of 4 in test (--set drop_unlabelled=true)")
    record, = [json.loads(p.read_text()) for p in (tmp_path / "run" / "records").glob("*.json")]
    assert record["status"] == "ok" and record["data"]["plugin_info"]["unlabelled_dropped"] == {"train": 2, "test": 1}
    assert dict(record["cell"]["dataset_params"]) == {"image_column": None, "label_column": None,
                                                      "drop_unlabelled": True}


@pytest.mark.parametrize("column, absolute", [("image", False), ("img", True), ("path", False), ("file", True)])
def test_image_column_found_by_its_name_and_paths_opened(tmp_path, column, absolute):
    """No Image feature: a column named image, img, path or file; file paths relative to the dataset's folder."""
    from PIL import Image

    root = tmp_path / "named"
    (root / "pics").mkdir(parents=True)
    paths = []
    for i, shade in enumerate([10, 60, 110, 160]):
        Image.fromarray(np.full((5, 6, 3), (shade, 0, 255 - shade), np.uint8)).save(root / "pics" / f"{i}.png")
        paths.append(str(root / "pics" / f"{i}.png") if absolute else f"pics/{i}.png")
    write_dataset(root, {"train": {"name": list("abc"), column: paths[:3], "label": [0, 1, 0]},
                         "test": {"name": ["d"], column: paths[3:], "label": [1]}},
                  {"name": datasets.Value("string"), column: datasets.Value("string"),
                   "label": datasets.ClassLabel(names=["a", "b"])})
    data = build("hf:named", data_dir=tmp_path)
    assert data.info["image_column"] == column and data.info["label_column"] == "label"
    assert (len(data.train), len(data.test)) == (3, 1)
    for split, index, shade in ((data.train, 1, 60), (data.test, 0, 160)):
        image, label = split[index]
        assert label == 1 and pixels(image).shape == (5, 6, 3)
        assert pixels(image)[2, 3].tolist() == [shade, 0, 255 - shade]
    (root / "pics" / "2.png").unlink()
    with pytest.raises(UsageError, match=rf"hf:named: 1 of 4 files named by column '{column}' not found \(e.g. "
                                         rf".*pics/2.png\); relative paths are taken from {re.escape(str(root))}"):
        build("hf:named", data_dir=tmp_path)
