"""``hf:NAME_OR_PATH``: a Hugging Face dataset through the ``datasets`` library (``pip install 'benchbone[hf]'``).

PATH is a folder written by ``DatasetDict.save_to_disk`` or a folder of data files (parquet, ...) that
``datasets.load_dataset`` reads by its split patterns (``train-*.parquet``, ``data/test-*``); a relative PATH
is taken from --data-dir when given, else from the working directory. Any other NAME is a hub dataset read
from the local Hugging Face cache (``HF_DATASETS_CACHE``, under ``HF_HOME``), downloaded only when the hub
answers and downloads are allowed. Splits: ``train`` and ``test``, ``validation`` (or ``val``/``valid``) as val;
without a test split, validation stands in for test. The image column is the dataset's ``Image`` feature and
the label column its ``ClassLabel`` feature (else a column named label/labels/target); ``--set
image_column=NAME`` and ``--set label_column=NAME`` choose others.
"""
from __future__ import annotations

import contextlib
import hashlib
from pathlib import Path

from benchbone import DatasetSplits, OfflineError, UsageError, hookimpl

VAL_NAMES = ("validation", "val", "valid")
LABEL_NAMES = ("label", "labels", "target", "fine_label")
HUB_HOST = "huggingface.co"


def _datasets():
    try:
        import datasets
    except ImportError:
        raise UsageError("hf: datasets need the `datasets` library: pip install 'benchbone[hf]'") from None
    return datasets


@contextlib.contextmanager
def _quiet_library(datasets, offline: bool):
    """No progress bars or cache notices on the terminal; no hub access when ``offline``."""
    from unittest import mock

    bars = datasets.is_progress_bar_enabled()
    level = datasets.logging.get_verbosity()
    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    try:
        with mock.patch.object(datasets.config, "HF_HUB_OFFLINE", offline or datasets.config.HF_HUB_OFFLINE):
            yield
    finally:
        datasets.logging.set_verbosity(level)
        if bars:
            datasets.enable_progress_bars()


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]


def load_dataset_dict(value: str, data_dir: Path | None, download: bool):
    """The DatasetDict behind ``hf:VALUE`` and where it came from."""
    datasets = _datasets()
    path = Path(value).expanduser()
    if not path.is_absolute():
        path = Path(data_dir or ".") / path
    if path.exists():
        with _quiet_library(datasets, offline=True):
            if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
                loaded, source = datasets.load_from_disk(str(path)), "save_to_disk folder"
            else:
                try:
                    loaded, source = datasets.load_dataset(str(path.absolute())), "data files"
                except Exception as exc:  # datasets raises many types for files it cannot read
                    raise UsageError(f"hf:{value}: datasets cannot read {path} ({_first_line(exc)}); pass a "
                                     "save_to_disk folder or a folder of train/test parquet files") from None
        if not isinstance(loaded, datasets.DatasetDict):
            raise UsageError(f"hf:{value}: {path} holds one unnamed split; save a DatasetDict with train and test "
                             "splits (DatasetDict(train=..., test=...).save_to_disk(PATH))")
        return loaded, {"source": source, "path": str(path.absolute())}
    from benchbone.helpers import is_offline

    offline = not download or is_offline(HUB_HOST)
    try:
        with _quiet_library(datasets, offline=offline):
            loaded = datasets.load_dataset(value)
    except Exception as exc:
        if offline:
            raise OfflineError(
                f"hf:{value}: no such folder ({path}) and not in the Hugging Face datasets cache "
                f"(HF_DATASETS_CACHE={datasets.config.HF_DATASETS_CACHE}) and cannot be downloaded offline; where "
                f"there is network run datasets.load_dataset({value!r}).save_to_disk(DIR) and pass hf:DIR") from None
        raise UsageError(f"hf:{value}: datasets.load_dataset failed ({_first_line(exc)})") from None
    return loaded, {"source": "hub" if not offline else "Hugging Face cache", "hub_id": value}


def pick_splits(loaded, value: str) -> tuple[str, str, str | None]:
    """The names of the train, test and val splits (val None when absent or standing in for test)."""
    names = list(loaded)
    val = next((n for n in VAL_NAMES if n in names), None)
    if "train" not in names or ("test" not in names and val is None):
        raise UsageError(f"hf:{value}: splits {', '.join(names) or 'none'}; benchbone needs train and test "
                         f"(or train and validation)")
    return ("train", "test", val) if "test" in names else ("train", val, None)


def pick_columns(features, value: str, image_column: str | None, label_column: str | None) -> tuple[str, str]:
    datasets = _datasets()
    listing = ", ".join(f"{k} ({type(f).__name__})" for k, f in features.items())
    for given, option in ((image_column, "image_column"), (label_column, "label_column")):
        if given is not None and given not in features:
            raise UsageError(f"hf:{value}: no column {given!r} (columns: {listing}); fix --set {option}")
    if image_column is None:
        images = [k for k, f in features.items() if isinstance(f, datasets.Image)]
        if not images:
            raise UsageError(f"hf:{value}: no Image column (columns: {listing}); pass --set image_column=NAME")
        image_column = images[0]
    if label_column is None:
        classes = [k for k, f in features.items() if isinstance(f, datasets.ClassLabel)]
        named = [k for k in LABEL_NAMES if k in features]
        if len(classes) > 1:
            raise UsageError(f"hf:{value}: several ClassLabel columns ({', '.join(classes)}); "
                             "pass --set label_column=NAME")
        if not classes and not named:
            raise UsageError(f"hf:{value}: no label column (columns: {listing}); pass --set label_column=NAME")
        label_column = (classes or named)[0]
    return image_column, label_column


def class_names(loaded, splits, label_column: str, value: str) -> tuple[list[str], dict | None]:
    """The class names and, for plain values, the value -> index map (None for a ClassLabel)."""
    datasets = _datasets()
    feature = loaded[splits[0]].features[label_column]
    if isinstance(feature, datasets.ClassLabel):
        return list(feature.names), None
    if not isinstance(feature, datasets.Value) or not (feature.dtype.startswith(("int", "uint")) or
                                                        feature.dtype in ("string", "large_string")):
        raise UsageError(f"hf:{value}: label column {label_column!r} holds {feature!r}, not class labels; "
                         "pass --set label_column=NAME with a ClassLabel, integer or string column")
    values = sorted({v for s in splits for v in loaded[s].unique(label_column)}, key=lambda v: (v is None, v))
    if None in values:
        raise UsageError(f"hf:{value}: label column {label_column!r} has empty labels; drop those rows")
    return [str(v) for v in values], {v: i for i, v in enumerate(values)}


class HFSplit:
    """One split: images decoded by ``datasets`` when indexed, labels read once from the column."""

    def __init__(self, table, image_column: str, labels, fingerprint: str):
        self.table = table.select_columns([image_column])
        self.image_column = image_column
        self.targets = labels
        self._fingerprint = fingerprint

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int):
        image = self.table[int(index)][self.image_column]
        if image is None:
            raise UsageError(f"row {index} of column {self.image_column!r} holds no image; drop that row")
        return image, self.targets[index]

    def fingerprint(self) -> str:
        """The ``datasets`` fingerprint of the table and the columns read: keys the decode and feature caches."""
        return self._fingerprint


def read_hf(value: str, data_dir: Path | None, download: bool, image_column: str | None,
            label_column: str | None) -> DatasetSplits:
    import numpy as np

    datasets = _datasets()
    loaded, info = load_dataset_dict(value, data_dir, download)
    train, test, val = pick_splits(loaded, value)
    used = [s for s in (train, test, val) if s]
    image_column, label_column = pick_columns(loaded[train].features, value, image_column, label_column)
    for split in used[1:]:
        if {image_column, label_column} - set(loaded[split].features):
            raise UsageError(f"hf:{value}: split {split} lacks column {image_column!r} or {label_column!r}")
    if not isinstance(loaded[train].features[image_column], datasets.Image):
        try:
            loaded = loaded.cast_column(image_column, datasets.Image())
        except Exception as exc:
            raise UsageError(f"hf:{value}: column {image_column!r} does not hold images ({_first_line(exc)}); "
                             "pass --set image_column=NAME") from None
    classes, mapping = class_names(loaded, used, label_column, value)

    def split(name: str) -> HFSplit:
        table = loaded[name]
        column = table.with_format("numpy" if mapping is None else None)[label_column]
        labels = np.asarray([mapping[v] for v in column] if mapping else np.asarray(column), dtype=np.int64)
        if len(labels) and (labels.min() < 0 or labels.max() >= len(classes)):
            raise UsageError(f"hf:{value}: split {name} has labels outside 0..{len(classes) - 1} "
                             f"(e.g. {int(labels.min())}, unlabelled rows); keep labelled rows only")
        # datasets has no public accessor for a table's fingerprint; ``_fingerprint`` is the hash datasets itself
        # keys its caches with (of the files read and every transform since), stable across sessions for
        # save_to_disk folders, parquet files and the HF cache. Hashing the rows here would decode every image.
        digest = hashlib.sha256(f"{table._fingerprint}\0{image_column}\0{label_column}\0{classes}".encode())
        return HFSplit(table, image_column, labels.tolist(), digest.hexdigest())

    return DatasetSplits(split(train), split(test), classes, val=split(val) if val else None, info={
        **info, "datasets_version": datasets.__version__, "image_column": image_column, "label_column": label_column,
        "test_from": test,
        "splits": {name: loaded[name].num_rows for name in used}})


def hf_dataset(value: str):
    """The build function of ``hf:VALUE``."""
    if not value:
        raise UsageError("hf: give a dataset after the colon: hf:PATH (save_to_disk or parquet folder) or hf:org/name")

    def build(data_dir, download, image_column=None, label_column=None) -> DatasetSplits:
        return read_hf(value, data_dir, download, image_column, label_column)

    return build


@hookimpl
def benchbone_register_datasets(register):
    register("hf:", hf_dataset, prefix=True, params={"image_column": None, "label_column": None},
             description="hf:PATH_OR_NAME, a Hugging Face dataset (save_to_disk folder, parquet files, HF cache); "
                         "needs benchbone[hf]")
