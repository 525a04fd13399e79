"""scikit-learn's 1,797 handwritten digits (8x8, grey), shipped with scikit-learn: always offline."""
from __future__ import annotations

from benchbone import DatasetSplits, ImageTensorDataset, hookimpl

TEST_FRACTION = 0.3
SPLIT_SEED = 0  # the train/test split is fixed, so every run and seed scores the same test images


def build_digits(data_dir, download) -> DatasetSplits:
    import numpy as np
    import torch
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = torch.from_numpy(np.round(digits.images * (255 / 16)).clip(0, 255).astype(np.uint8))[:, None]
    labels = torch.from_numpy(digits.target.astype(np.int64))
    train, test = train_test_split(np.arange(len(labels)), test_size=TEST_FRACTION, random_state=SPLIT_SEED,
                                   stratify=digits.target)
    train, test = np.sort(train), np.sort(test)
    return DatasetSplits(
        train=ImageTensorDataset(images[train], labels[train]),
        test=ImageTensorDataset(images[test], labels[test]),
        classes=[str(d) for d in range(10)],
        info={"source": "sklearn.datasets.load_digits", "test_split": f"stratified {TEST_FRACTION}, seed {SPLIT_SEED}"},
    )


@hookimpl
def benchbone_register_datasets(register):
    register("digits", build_digits, augment={"hflip": False, "translate": 0.125},  # 1 of 8 pixels, never mirrored
             description="scikit-learn digits, 8x8 grey, 10 classes, offline", uses_data_dir=False)
