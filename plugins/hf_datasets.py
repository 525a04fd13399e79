"""``hf:NAME_OR_PATH``: a Hugging Face dataset through the ``datasets`` library (``pip install 'benchbone[hf]'``).

PATH is a folder written by ``DatasetDict.save_to_disk`` or a folder of data files (parquet, ...) that
``datasets.load_dataset`` reads by its split patterns (``train-*.parquet``, ``data/test-*``); a relative PATH
is taken from --data-dir when given, else from the working directory. Any other NAME is a hub dataset read
from the local Hugging Face cache (``HF_DATASETS_CACHE``, under ``HF_HOME``), downloaded only when the hub
answers and downloads are allowed. Splits: ``train`` and ``test``, ``validation`` (or ``val``/``valid``) as val;
without a test split, validation stands in for test (the test split is never carved from train: a dataset
with train only is an error saying how to make one). The image column is the dataset's ``Image`` feature, else
a column named image/img/path/file (a column of strings holds file paths, relative ones taken from the
dataset's folder); the label column its ``ClassLabel`` feature (else a column named label/labels/target);
``--set image_column=NAME`` and ``--set label_column=NAME`` choose others. Unlabelled rows (label -1, or no
label) are an error naming each split's count, unless ``--set drop_unlabelled=true`` leaves them out (one
warning line; the counts in the record's ``data.plugin_info.unlabelled_dropped``).
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import warnings
from pathlib import Path

from benchbone import DatasetSplits, OfflineError, UsageError, hookimpl

VAL_NAMES = ("validation", "val", "valid")
LABEL_NAMES = ("label", "labels", "target", "fine_label")
IMAGE_NAMES = ("image", "img", "path", "file")  # looked for when no column is an Image feature
UNLABELLED = -1  # the datasets convention for a row without a label (an unlabelled or hidden test split)
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
    if "train" in names and "test" not in names and val is None:
        has = "only a train split" if names == ["train"] else f"splits {', '.join(names)}, no test or validation"
        raise UsageError(f"hf:{value}: {has}; benchbone needs a test split (or validation, which "
                         "stands in for it): it carves the validation split from train (--set val_fraction, default "
                         "0.1), never the test split: make one with "
                         "d = ds['train'].train_test_split(test_size=0.2, seed=0) and "
                         "DatasetDict(train=d['train'], test=d['test']).save_to_disk(DIR)")
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
        images = [k for k, f in features.items() if isinstance(f, datasets.Image)] + [k for k in IMAGE_NAMES
                                                                                      if k in features]
        if not images:
            raise UsageError(f"hf:{value}: no Image column and none named {', '.join(IMAGE_NAMES)} (columns: "
                             f"{listing}); pass --set image_column=NAME")
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


def is_path_column(feature) -> bool:
    """A column of strings: file paths, opened by benchbone (relative ones from the dataset's folder)."""
    return getattr(feature, "dtype", None) in ("string", "large_string")


def read_labels(loaded, splits, label_column: str, value: str):
    """The class names, per split the label indices with -1 for an unlabelled row, and what marks one (label -1
    in an integer or ClassLabel column, none in a column of strings)."""
    import numpy as np

    datasets = _datasets()
    feature = loaded[splits[0]].features[label_column]
    if not isinstance(feature, (datasets.ClassLabel, datasets.Value)) or (
            isinstance(feature, datasets.Value) and not (feature.dtype.startswith(("int", "uint")) or
                                                          feature.dtype in ("string", "large_string"))):
        raise UsageError(f"hf:{value}: label column {label_column!r} holds {feature!r}, not class labels; "
                         "pass --set label_column=NAME with a ClassLabel, integer or string column")
    columns = {s: loaded[s].with_format("arrow")[label_column] for s in splits}  # pyarrow, nulls kept
    if isinstance(feature, datasets.ClassLabel) or feature.dtype.startswith(("int", "uint")):
        raw = {s: np.asarray(c.fill_null(UNLABELLED).to_numpy(zero_copy_only=False), dtype=np.int64)
               for s, c in columns.items()}
        if isinstance(feature, datasets.ClassLabel):
            return list(feature.names), raw, f"label {UNLABELLED}"
        values = np.unique(np.concatenate(list(raw.values())))
        values = values[values != UNLABELLED]  # the values, sorted, become classes 0..n-1
        return [str(v) for v in values], {s: np.where(r == UNLABELLED, UNLABELLED, np.searchsorted(values, r))
                                          for s, r in raw.items()}, f"label {UNLABELLED}"
    raw = {s: c.to_pylist() for s, c in columns.items()}
    values = sorted({v for r in raw.values() for v in r if v is not None})
    lookup = {v: i for i, v in enumerate(values)}
    return values, {s: np.asarray([UNLABELLED if v is None else lookup[v] for v in r], dtype=np.int64)
                    for s, r in raw.items()}, "no label"


def keep_labelled(labels: dict, classes, value: str, drop: bool, marked: str) -> dict:
    """Per split the rows to keep (None: all): unlabelled rows are an error naming each split's count, or with
    ``drop`` left out with one warning; a label outside the classes is an error."""
    import numpy as np

    counts = {s: int((y == UNLABELLED).sum()) for s, y in labels.items()}
    for split, y in labels.items():
        bad = y[(y != UNLABELLED) & ((y < 0) | (y >= len(classes)))]
        if len(bad):
            raise UsageError(f"hf:{value}: split {split} has labels outside 0..{len(classes) - 1} "
                             f"(e.g. {int(bad[0])}); keep rows with class labels only")
    if not any(counts.values()):
        return {s: None for s in labels}
    total = sum(counts.values())
    where = ", ".join(f"{n} of {len(labels[s])} in {s}" for s, n in counts.items() if n)
    if not drop:
        raise UsageError(f"hf:{value}: {total} unlabelled rows ({marked}): {where}; keep labelled rows only or pass "
                         "--set drop_unlabelled=true to leave them out")
    for split, n in counts.items():
        if n == len(labels[split]):
            raise UsageError(f"hf:{value}: split {split} has no labelled rows ({n} unlabelled); "
                             "benchbone needs labels in every split it reads")
    warnings.warn(f"hf:{value}: left out {total} unlabelled rows ({marked}): {where} (--set drop_unlabelled=true)",
                  stacklevel=2)
    return {s: np.flatnonzero(y != UNLABELLED) if counts[s] else None for s, y in labels.items()}


def image_paths(loaded, splits, image_column: str, rows: dict, base: Path, value: str) -> dict:
    """Per split the image files of a column of paths (the rows kept), each checked to exist."""
    found, missing, total = {}, [], 0
    for split in splits:
        column = loaded[split].with_format("arrow")[image_column].to_pylist()
        if rows[split] is not None:
            column = [column[i] for i in rows[split]]
        found[split] = [base / Path(p).expanduser() if p else base / "" for p in column]
        total += len(column)
        missing += [p for p, given in zip(found[split], column) if not given or not os.path.isfile(p)]
    if missing:
        raise UsageError(f"hf:{value}: {len(missing)} of {total} files named by column {image_column!r} not found "
                         f"(e.g. {missing[0]}); relative paths are taken from {base}")
    return found


class HFSplit:
    """One split: images decoded by ``datasets`` when indexed, labels read once from the column."""

    def __init__(self, table, image_column: str, labels, fingerprint: str, rows=None):
        self.table = table.select_columns([image_column])
        self.image_column = image_column
        self.targets = labels
        self.rows = None if rows is None else [int(r) for r in rows]  # the table's rows kept, None for all
        self._fingerprint = fingerprint

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int):
        row = int(index) if self.rows is None else self.rows[index]
        image = self.table[row][self.image_column]
        if image is None:
            raise UsageError(f"row {row} of column {self.image_column!r} holds no image; drop that row")
        return image, self.targets[index]

    def fingerprint(self) -> str:
        """The ``datasets`` fingerprint of the table and the columns read: keys the decode and feature caches."""
        return self._fingerprint


def read_hf(value: str, data_dir: Path | None, download: bool, image_column: str | None,
            label_column: str | None, drop_unlabelled: bool = False) -> DatasetSplits:
    from benchbone.helpers import ImageFiles

    datasets = _datasets()
    loaded, info = load_dataset_dict(value, data_dir, download)
    train, test, val = pick_splits(loaded, value)
    used = [s for s in (train, test, val) if s]
    image_column, label_column = pick_columns(loaded[train].features, value, image_column, label_column)
    for split in used[1:]:
        if {image_column, label_column} - set(loaded[split].features):
            raise UsageError(f"hf:{value}: split {split} lacks column {image_column!r} or {label_column!r}")
    paths = is_path_column(loaded[train].features[image_column])
    if not paths and not isinstance(loaded[train].features[image_column], datasets.Image):
        try:
            loaded = loaded.cast_column(image_column, datasets.Image())
        except Exception as exc:
            raise UsageError(f"hf:{value}: column {image_column!r} does not hold images ({_first_line(exc)}); "
                             "pass --set image_column=NAME") from None
    classes, labels, marked = read_labels(loaded, used, label_column, value)
    rows = keep_labelled(labels, classes, value, drop_unlabelled, marked)
    if paths:
        base = Path(info["path"]) if "path" in info else Path.cwd()
        files = image_paths(loaded, used, image_column, rows, base, value)
        info["paths_from"] = str(base)

    def split(name: str):
        table, kept = loaded[name], rows[name]
        targets = (labels[name] if kept is None else labels[name][kept]).tolist()
        if paths:  # keyed by each file's path, size and mtime, as image folders are
            return ImageFiles(files[name], targets)
        # datasets has no public accessor for a table's fingerprint; ``_fingerprint`` is the hash datasets itself
        # keys its caches with (of the files read and every transform since), stable across sessions for
        # save_to_disk folders, parquet files and the HF cache. Hashing the rows here would decode every image.
        # The rows left out are the table's unlabelled ones, so the fingerprint and the flag say which.
        dropped = "" if kept is None else "\0unlabelled rows dropped"
        digest = hashlib.sha256(f"{table._fingerprint}\0{image_column}\0{label_column}\0{classes}{dropped}".encode())
        return HFSplit(table, image_column, targets, digest.hexdigest(), rows=kept)

    made = {name: split(name) for name in used}
    return DatasetSplits(made[train], made[test], classes, val=made[val] if val else None, info={
        **info, "datasets_version": datasets.__version__, "image_column": image_column, "label_column": label_column,
        "test_from": test, "splits": {name: len(made[name]) for name in used},
        "unlabelled_dropped": {name: len(labels[name]) - len(made[name]) for name in used if rows[name] is not None}})


def hf_dataset(value: str):
    """The build function of ``hf:VALUE``."""
    if not value:
        raise UsageError("hf: give a dataset after the colon: hf:PATH (save_to_disk or parquet folder) or hf:org/name")

    def build(data_dir, download, image_column=None, label_column=None, drop_unlabelled=False) -> DatasetSplits:
        return read_hf(value, data_dir, download, image_column, label_column, drop_unlabelled)

    return build


@hookimpl
def benchbone_register_datasets(register):
    register("hf:", hf_dataset, prefix=True,
             params={"image_column": None, "label_column": None, "drop_unlabelled": False},
             description="hf:PATH_OR_NAME, a Hugging Face dataset (save_to_disk folder, parquet files, HF cache); "
                         "needs benchbone[hf]")
