"""The bootstrap's one seed and the percentile interval of a metric's mean over test items (in every record)."""
from __future__ import annotations

import numpy as np

BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 0  # every bootstrap of benchbone, the record's intervals and the paired tests, draws from it


def bootstrap_ci(correct: np.ndarray, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED,
                 level: float = 0.95) -> list[float]:
    """Percentile bootstrap interval of the mean of ``correct`` (a value per test item: 0/1 for top1), resampling items.

    Resampled in chunks so that memory stays below ~100 MB whatever the test size.
    """
    correct = np.asarray(correct, dtype=np.float64)
    if len(correct) == 0:
        return [float("nan"), float("nan")]
    rng = np.random.default_rng(seed)
    chunk = max(1, 10_000_000 // len(correct))
    means = np.concatenate([
        correct[rng.integers(0, len(correct), size=(min(chunk, resamples - done), len(correct)))].mean(axis=1)
        for done in range(0, resamples, chunk)])
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return [float(low), float(high)]
