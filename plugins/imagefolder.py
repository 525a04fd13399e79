"""``imagefolder:PATH``: any data set of image files in class folders.

``PATH/train/<class>/*`` with ``PATH/test/`` and/or ``PATH/val/`` (val stands in for test when there is no
test folder), or one ``PATH/<class>/*`` tree split into train and test by a fixed, seeded, stratified ratio.
A relative PATH is taken from --data-dir when given, else from the working directory.
"""
from __future__ import annotations

from pathlib import Path

from benchbone import DatasetSplits, UsageError, hookimpl
from benchbone.helpers import ImageFiles, load_split_folders, scan_class_folders

TEST_FRACTION = 0.2
SPLIT_SEED = 0  # the test split is fixed, so every run and seed scores the same test images


def split_one_folder(root: Path) -> DatasetSplits:
    import numpy as np
    from sklearn.model_selection import train_test_split

    paths, labels, classes = scan_class_folders(root)
    labels = np.asarray(labels)
    counts = np.bincount(labels, minlength=len(classes))
    if counts.min() < 2:
        raise UsageError(f"class folder {root / classes[int(counts.argmin())]} holds one image; a train/test split "
                         "needs at least two per class (or give train/ and test/ folders)")
    stratify = labels if round(TEST_FRACTION * len(labels)) >= len(classes) else None
    train, test = train_test_split(np.arange(len(labels)), test_size=TEST_FRACTION, random_state=SPLIT_SEED,
                                   stratify=stratify)
    pick = lambda idx: ImageFiles([paths[i] for i in np.sort(idx)], labels[np.sort(idx)].tolist())  # noqa: E731
    return DatasetSplits(pick(train), pick(test), classes, info={
        "layout": "one folder", "path": str(root),
        "test_split": f"{'stratified ' if stratify is not None else ''}{TEST_FRACTION}, seed {SPLIT_SEED}"})


def read_image_folder(root: Path) -> DatasetSplits:
    """The splits of ``root`` in either layout; bad layouts raise one UsageError naming the directory."""
    try:
        if not root.is_dir():
            raise UsageError(f"imagefolder: {root} does not exist; pass imagefolder:PATH with an existing folder")
        present = [s for s in ("train", "val", "test") if (root / s).is_dir()]
    except OSError as exc:  # a root that cannot be looked into (no permission): one line naming it
        raise UsageError(f"imagefolder: cannot read {root}: {exc.strerror or exc}; make it readable or pass "
                         "another folder") from None
    if not present:
        return split_one_folder(root)
    if "train" not in present:
        raise UsageError(f"imagefolder: {root} has {'/'.join(present)}/ but no train/; add {root}/train/<class>/")
    if len(present) == 1:
        raise UsageError(f"imagefolder: {root} has train/ but neither test/ nor val/; add {root}/test/<class>/ "
                         f"or move the class folders up into {root} for a seeded split")
    splits, classes = load_split_folders(root, present)
    test_from = "test" if "test" in splits else "val"
    val = splits["val"] if test_from == "test" and "val" in splits else None
    return DatasetSplits(splits["train"], splits[test_from], classes, val=val,
                         info={"layout": "/".join(present), "path": str(root), "test_from": test_from})


def image_folder(value: str):
    """The build function of ``imagefolder:VALUE``."""

    def build(data_dir, download) -> DatasetSplits:
        path = Path(value).expanduser()
        if not path.is_absolute():
            path = Path(data_dir or ".") / path
        return read_image_folder(path.absolute())

    return build


@hookimpl
def benchbone_register_datasets(register):
    register("imagefolder:", image_folder, prefix=True,
             description="imagefolder:PATH, class folders: PATH/{train,val,test}/<class>/* or PATH/<class>/*")
