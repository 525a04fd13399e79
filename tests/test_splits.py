"""Splits: stratified validation carve, few-shot and fraction subsets, what the record says."""
from __future__ import annotations

import json

import numpy as np
import pytest

from benchbone import UsageError
from benchbone.inputs.splits import SplitView, carve_validation, exact_subset, subsample

PROBE = {"linear-probe.C": 1.0, "linear-probe.max_iter": 50}  # one quick fit


@pytest.fixture(autouse=True)
def isolated(monkeypatch, tmp_path):
    monkeypatch.setenv("BENCHBONE_LOAD_PLUGINS", "")
    monkeypatch.setenv("BENCHBONE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)


def view(counts=(30, 20, 10)) -> SplitView:
    labels = np.concatenate([np.full(n, c) for c, n in enumerate(counts)])
    return SplitView("train", None, np.arange(len(labels)) + 100, labels)


def test_validation_carve_is_stratified_and_seeded():
    train, val = carve_validation(view(), 0.1, seed=0)
    assert np.bincount(val.labels).tolist() == [3, 2, 1] and len(train) == 54
    assert not set(train.indices) & set(val.indices)
    assert carve_validation(view(), 0.1, seed=0)[1].digest() == val.digest()
    assert carve_validation(view(), 0.1, seed=1)[1].digest() != val.digest()


def test_kept_carve_is_scikit_learns_and_a_changed_input_gets_a_fresh_one(tmp_path, monkeypatch):
    """With a store, the carve is read back without importing scikit-learn; it equals ``train_test_split``'s,
    and other labels (the same counts in another order), another seed or another size get their own."""
    import sys

    from sklearn.model_selection import train_test_split

    from benchbone.inputs.feature_cache import FeatureStore

    store = FeatureStore(tmp_path / "cache", folder="splits")
    kept = lambda: sorted((tmp_path / "cache" / "splits").glob("*.safetensors"))  # noqa: E731

    def sklearn_val(v: SplitView, size, seed: int) -> list[int]:
        _, val_pos = train_test_split(np.arange(len(v)), test_size=size, random_state=seed, stratify=v.labels)
        return sorted(v.indices[val_pos].tolist())

    shuffled = view()
    shuffled.labels = np.random.default_rng(0).permutation(shuffled.labels)
    cases = [(view(), 0.1, 0), (view(), 0.1, 1), (view(), 0.2, 0), (view(), 7, 0), (shuffled, 0.1, 0)]
    expected = [sklearn_val(v, size, seed) for v, size, seed in cases]
    assert len({tuple(e) for e in expected}) == len(cases)  # each change changes the carve
    for n, ((v, size, seed), want) in enumerate(zip(cases, expected), start=1):
        train, val = carve_validation(v, size, seed, store=store)
        assert val.indices.tolist() == want
        assert sorted([*train.indices, *val.indices]) == v.indices.tolist()
        assert len(kept()) == n  # a fresh carve, kept beside the others
    monkeypatch.setitem(sys.modules, "sklearn.model_selection", None)  # importing it now fails
    for (v, size, seed), want in zip(cases, expected):  # every one read back, unchanged, without scikit-learn
        train, val = carve_validation(v, size, seed, store=store)
        assert val.indices.tolist() == want and len(train) + len(val) == len(v)
    with pytest.raises(ImportError):  # a carve it does not hold is computed, and that needs scikit-learn
        carve_validation(view(), 0.1, 2, store=store)


def test_few_shot_counts_and_seeds():
    few = subsample(view(), per_class=4, fraction=None, seed=0)
    assert np.bincount(few.labels).tolist() == [4, 4, 4]
    assert set(few.indices) <= set(view().indices) and list(few.indices) == sorted(few.indices)
    assert subsample(view(), per_class=4, fraction=None, seed=0).digest() == few.digest()
    assert subsample(view(), per_class=4, fraction=None, seed=1).digest() != few.digest()
    with pytest.raises(UsageError, match=r"train_per_class=11: class 2 has only 10 train images .*at most 10"):
        subsample(view(), per_class=11, fraction=None, seed=0)


def test_fraction_is_per_class():
    part = subsample(view(), per_class=None, fraction=0.25, seed=0)
    assert np.bincount(part.labels).tolist() == [8, 5, 3]  # rounded half up, at least one per class
    assert subsample(view(), per_class=None, fraction=None, seed=0) is not None


@pytest.mark.parametrize("overrides, pattern", [
    ({"train_per_class": 2, "train_fraction": 0.5}, "exclude each other"),
    ({"train_per_class": 0}, r"train_per_class=0: give a whole number"),
    ({"train_per_class": 2.5}, r"train_per_class=2.5: give a whole number"),
    ({"train_fraction": 1.5}, r"train_fraction=1.5: give a fraction in \(0, 1\]"),
    ({"train_size": 2.5}, r"train_size=2.5: give a whole number of images >= 1"),
    ({"val_size": 40, "linear-probe.shots": 20}, r"shots=20 but class \d has only \d+ training images \('class\d'"),
])
def test_bad_subset_parameters_fail_before_any_cell(run_tiny_benchmark, tmp_path, overrides, pattern):
    with pytest.raises(UsageError, match=pattern):
        run_tiny_benchmark(overrides=overrides)
    assert not (tmp_path / "run").exists()


def test_record_holds_the_split_used(run_tiny_benchmark, tmp_path):
    run_tiny_benchmark(overrides={"train_per_class": 5, **PROBE})
    run_tiny_benchmark(overrides={"train_fraction": 0.5, **PROBE}, out=tmp_path / "half")
    few, = (json.loads(p.read_text()) for p in (tmp_path / "run" / "records").glob("*.json"))
    half, = (json.loads(p.read_text()) for p in (tmp_path / "half" / "records").glob("*.json"))
    assert few["status"] == "ok" and (few["data"]["train"], few["data"]["val"], few["data"]["test"]) == (20, 10, 48)
    assert few["data"]["train_per_class"] == 5 and few["data"]["val_carved"]
    assert set(few["data"]["indices_digest"]) == {"train", "val", "test"}
    assert half["data"]["train"] == 44 and half["data"]["train_fraction"] == 0.5
    assert half["data"]["indices_digest"]["val"] == few["data"]["indices_digest"]["val"]
    assert half["cell_id"] != few["cell_id"]


def test_exact_sizes_are_exact_stratified_disjoint_and_seeded():
    big = view((2500, 1500, 1000))
    rest, val = carve_validation(big, 200, seed=0, option="val_size")
    train = exact_subset(rest, 800, seed=0, option="train_size")
    assert (len(train), len(val)) == (800, 200) and not set(train.indices) & set(val.indices)
    assert np.bincount(val.labels).tolist() == [100, 60, 40] and np.bincount(train.labels).tolist() == [400, 240, 160]
    assert exact_subset(rest, 800, seed=0, option="train_size").digest() == train.digest()
    assert exact_subset(rest, 800, seed=1, option="train_size").digest() != train.digest()
    assert exact_subset(rest, len(rest), seed=0, option="train_size") is rest
    lopsided = view((30, 1))  # a class of one image: no stratification, still exact
    assert len(exact_subset(lopsided, 7, seed=0, option="train_size")) == 7


def test_vtab_style_sizes_choose_c_on_val_and_refit_on_both(run_tiny_benchmark, tmp_path):
    from benchbone.api import Cell

    run_tiny_benchmark(overrides={"train_size": 40, "val_size": 16, "linear-probe.c_steps": 3})
    record, = (json.loads(p.read_text()) for p in (tmp_path / "run" / "records").glob("*.json"))
    assert (record["data"]["train"], record["data"]["val"]) == (40, 16)
    assert record["data"]["train_size"] == 40 and record["data"]["val_size"] == 16
    info = record["strategy_info"]
    assert len(info["sweep"]) == 3 and info["refit"] == "train+val" and info["fit_rows"] == 56
    # unset, the new options leave a cell's id as it was before they existed
    cell = Cell.from_json(record["cell"])
    plain = dict(cell.options, train_size=None, val_size=None)
    older = {k: v for k, v in plain.items() if k not in ("train_size", "val_size")}
    assert (Cell(**{**cell.to_json(), "options": tuple(sorted(plain.items()))}).id
            == Cell(**{**cell.to_json(), "options": tuple(sorted(older.items()))}).id)
