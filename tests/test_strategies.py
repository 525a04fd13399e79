"""The adaptation strategies: exactness against scikit-learn and numpy, determinism, failures, resume, shots."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from benchbone import UsageError
from benchbone.compute.lbfgs import fit_logistic
from benchbone.compute.sweep import close_unresolved
from benchbone_plugins.knn import knn_scores
from benchbone_plugins.linear_probe import linear_probe

STRATEGIES = ["linear-probe", "knn", "finetune", "head-sgd"]
SHORT = {"finetune.epochs": 2, "head-sgd.epochs": 2, "linear-probe.c_steps": 5}
FT = {"finetune.epochs": 2}


def records(out) -> dict[str, dict]:
    return {r["strategy"]: r for r in (json.loads(p.read_text()) for p in (out / "records").glob("*.json"))}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One thread each for torch and BLAS/OpenMP: on a shared 2-core machine, spinning threads cost more than they give."""
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(1):
        yield
    torch.set_num_threads(before)


class FeatureContext:
    """Just enough of a Context to run linear-probe on given features."""

    def __init__(self, splits: dict, num_classes: int, params: dict, seed: int = 0):
        self.splits, self.num_classes, self.params, self.seed = splits, num_classes, params, seed
        self.device, self.info = "cpu", {}

    def features(self, split):
        return self.splits[split]

    def progress(self, iterable, desc, total=None):
        return iterable

    def generator(self, offset=0):
        return torch.Generator().manual_seed(self.seed * 1_000_003 + offset)


@pytest.fixture(scope="module")
def digits():
    """scikit-learn digits (raw 64-pixel features): train/val/test, standardised with train statistics."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    X, y = load_digits(return_X_y=True)
    rest, test = train_test_split(np.arange(len(y)), test_size=0.3, random_state=0, stratify=y)
    train, val = train_test_split(rest, test_size=0.15, random_state=0, stratify=y[rest])
    return {name: (torch.tensor(X[rows], dtype=torch.float32), torch.tensor(y[rows]))
            for name, rows in (("train", train), ("val", val), ("test", test))}


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("C", [1e-3, 0.1, 10.0])
def test_probe_matches_sklearn_at_the_same_strength(digits, C, dtype):
    from sklearn.linear_model import LogisticRegression

    (Xtr, ytr), (Xte, yte) = digits["train"], digits["test"]
    mean, std = Xtr.mean(0), Xtr.std(0).clamp_min(1e-6)
    Ztr, Zte = ((X - mean) / std for X in (Xtr, Xte))
    W, b, _ = fit_logistic(Ztr.to(dtype), ytr, 10, C)
    ours = ((Zte.to(dtype) @ W + b).argmax(1) == yte).double().mean().item()
    sk = LogisticRegression(C=C, tol=1e-6, max_iter=1000).fit(Ztr.numpy(), ytr.numpy())
    theirs = sk.score(Zte.numpy(), yte.numpy())
    assert abs(ours - theirs) * 100 <= 0.3
    assert np.allclose(W.numpy().T, sk.coef_, atol=0.05 * max(1.0, np.abs(sk.coef_).max()))


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_probe_protocol_chooses_c_as_sklearn_would(digits, dtype):
    """The sweep's validation accuracies, the chosen C and the refitted test accuracy agree with scikit-learn.

    In float64 every point of the sweep agrees to one validation image; float32 (the default, several times
    faster) may differ by a few images where regularisation is weakest, but chooses the same C.
    """
    from sklearn.linear_model import LogisticRegression

    params = dict(C=None, c_min=1e-4, c_max=1e4, c_steps=9, max_iter=1000, tol=1e-6, standardize=True, shots=None,
                  dtype=dtype)
    ctx = FeatureContext(digits, 10, params)
    pred = linear_probe(None, None, ctx)
    (Xtr, ytr), (Xva, yva), (Xte, yte) = (tuple(t.numpy() for t in digits[s]) for s in ("train", "val", "test"))
    mean, std = Xtr.mean(0), Xtr.std(0, ddof=1).clip(1e-6)
    val = [LogisticRegression(C=s["C"], tol=1e-6, max_iter=1000).fit((Xtr - mean) / std, ytr)
           .score((Xva - mean) / std, yva) for s in ctx.info["sweep"]]
    images = 1 if dtype == "float64" else 3
    assert [s["val_top1"] for s in ctx.info["sweep"]] == pytest.approx(val, abs=(images + 0.01) / len(yva))
    assert ctx.info["chosen_C"] == ctx.info["sweep"][int(np.argmax(val))]["C"]
    Xfit, yfit = np.concatenate([Xtr, Xva]), np.concatenate([ytr, yva])
    mean, std = Xfit.mean(0), Xfit.std(0, ddof=1).clip(1e-6)
    sk = LogisticRegression(C=ctx.info["chosen_C"], tol=1e-6, max_iter=1000).fit((Xfit - mean) / std, yfit)
    ours = (pred.y_pred.numpy() == yte).mean()
    assert abs(ours - sk.score((Xte - mean) / std, yte)) * 100 <= 0.3
    assert ours > 0.93 and ctx.info["converged"] and ctx.info["fit_rows"] == len(yfit)


def test_only_unresolved_points_near_the_best_validation_accuracy_are_doubtful():
    """The sweep's warning names a point float32 could not resolve only where a converged fit might change the
    chosen C: its validation accuracy within 1% of the best's, or 5 images on a small validation split."""
    sweep = [{"C": 1.0, "val_top1": 0.90, "resolved": True}, {"C": 10.0, "val_top1": 0.895, "resolved": False},
             {"C": 100.0, "val_top1": 0.86, "resolved": False}, {"C": 1e3, "val_top1": 0.90, "resolved": True}]
    assert close_unresolved(sweep, 0.90, 1000) == [10.0]
    assert close_unresolved(sweep, 0.90, 100) == [10.0, 100.0]
    assert close_unresolved(sweep, 0.95, 1000) == []


def test_knn_matches_brute_force_numpy():
    g = np.random.default_rng(0)
    bank, queries = g.normal(size=(300, 16)), g.normal(size=(50, 16))
    labels = g.integers(0, 5, size=300)
    k, T = 7, 0.07
    b = bank / np.linalg.norm(bank, axis=1, keepdims=True)
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    sims = q @ b.T
    expected = np.zeros((50, 5))
    for i in range(50):
        for j in np.argsort(-sims[i])[:k]:
            expected[i, labels[j]] += np.exp(sims[i, j] / T)
    expected /= expected.sum(1, keepdims=True)
    got = knn_scores(torch.tensor(bank), torch.tensor(labels), torch.tensor(queries), 5, k, T, chunk=16)
    assert np.allclose(got.numpy(), expected, rtol=1e-9, atol=1e-12)


def test_every_strategy_is_deterministic_and_shares_the_feature_cache(run_tiny_benchmark, tmp_path):
    run_tiny_benchmark(strategies=STRATEGIES, overrides=SHORT, out=tmp_path / "a")
    run_tiny_benchmark(strategies=STRATEGIES, overrides=SHORT, out=tmp_path / "b")
    a, b = records(tmp_path / "a"), records(tmp_path / "b")
    assert sorted(a) == sorted(STRATEGIES)
    for name in STRATEGIES:
        assert a[name]["status"] == "ok", a[name].get("error")
        assert a[name]["metrics"] == b[name]["metrics"], name
        assert a[name]["strategy_info"] == b[name]["strategy_info"], name
    assert a["knn"]["metrics"]["top1"] > 0.9 and a["linear-probe"]["metrics"]["top1"] > 0.9
    # train and test features, extracted once and read by linear-probe and knn in both runs
    assert len(list((tmp_path / "cache" / "features").glob("*.safetensors"))) == 2
    assert not (tmp_path / "a" / "work").exists()


def test_parameters_used_are_recorded(run_tiny_benchmark, tmp_path):
    run_tiny_benchmark(strategies=["knn", "linear-probe", "head-sgd"],
                       overrides={"knn.k": 500, "C": 0.5, "head-sgd.epochs": 1, "head-sgd.augment": True})
    got = records(tmp_path / "run")
    assert got["knn"]["params"]["k"] == 500 and got["knn"]["strategy_info"]["k_used"] == 96  # the whole bank
    assert got["linear-probe"]["params"]["C"] == 0.5 and got["linear-probe"]["strategy_info"]["chosen_C"] == 0.5
    assert len(got["linear-probe"]["strategy_info"]["sweep"]) == 1
    assert got["head-sgd"]["params"]["augment"] is True and len(got["head-sgd"]["strategy_info"]["history"]) == 1


def test_shots_gives_a_k_shot_probe(run_tiny_benchmark, tmp_path):
    run_tiny_benchmark(overrides={"shots": 3, "c_steps": 5})
    info = records(tmp_path / "run")["linear-probe"]["strategy_info"]
    assert info["shots"] == 3 and info["fit_rows"] == 12  # 3 images x 4 classes, no refit on val
    assert info["refit"].startswith("none")


@pytest.mark.parametrize("overrides, words", [
    ({"shots": 1000}, "class 0 has only"),
    ({"knn.k": 0}, "knn: need k >= 1"),
    ({"finetune.optimizer": "adam"}, "use adamw or sgd"),
])
def test_bad_parameters_are_one_line_usage_errors(run_tiny_benchmark, overrides, words):
    strategy = next(iter(overrides)).partition(".")[0] if "." in next(iter(overrides)) else "linear-probe"
    with pytest.raises(UsageError, match=words) as info:
        run_tiny_benchmark(strategies=[strategy], overrides=overrides)
    assert "\n" not in str(info.value)


def test_finetune_fails_clearly_when_the_loss_becomes_nan(run_tiny_benchmark, tmp_path):
    run_tiny_benchmark(strategies=["finetune"], overrides={"finetune.lr": 1e6, "finetune.epochs": 2})
    record = records(tmp_path / "run")["finetune"]
    assert record["status"] == "failed"
    assert "FloatingPointError" in record["error"] and "nan" in record["error"].lower()


def test_interrupted_finetune_resumes_from_its_checkpoint(run_tiny_benchmark, tmp_path, monkeypatch):
    from benchbone.execution.context import Context

    run_tiny_benchmark(strategies=["finetune"], overrides=FT, out=tmp_path / "whole")
    batches = Context.batches

    def crash_in_epoch_2(self, split, *args, epoch=0, **kwargs):
        if split == "train" and epoch == 1:
            raise RuntimeError("simulated crash in epoch 2")
        return batches(self, split, *args, epoch=epoch, **kwargs)

    monkeypatch.setattr(Context, "batches", crash_in_epoch_2)
    run_tiny_benchmark(strategies=["finetune"], overrides=FT, out=tmp_path / "resumed")
    failed = records(tmp_path / "resumed")["finetune"]
    assert failed["status"] == "failed" and "simulated crash" in failed["error"]
    checkpoint = tmp_path / "resumed" / "work" / failed["cell_id"] / "finetune-checkpoint.pt"
    assert checkpoint.exists() and torch.load(checkpoint, weights_only=True)["epoch"] == 1

    monkeypatch.setattr(Context, "batches", batches)
    run_tiny_benchmark(strategies=["finetune"], overrides=FT, out=tmp_path / "resumed")
    resumed, whole = records(tmp_path / "resumed")["finetune"], records(tmp_path / "whole")["finetune"]
    assert resumed["status"] == "ok" and resumed["strategy_info"]["resumed_from_epoch"] == 1
    assert whole["strategy_info"]["resumed_from_epoch"] is None
    assert resumed["metrics"] == whole["metrics"]
    assert resumed["strategy_info"]["history"] == whole["strategy_info"]["history"]
    assert not (tmp_path / "resumed" / "work").exists()


def test_finetune_leaves_the_shared_backbone_untouched(run_tiny_benchmark, tmp_path):
    """finetune before knn in one run: knn must see the pretrained weights' features."""
    run_tiny_benchmark(strategies=["knn"], out=tmp_path / "alone", cache_dir=tmp_path / "c1")
    run_tiny_benchmark(strategies=["finetune", "knn"], overrides=FT, out=tmp_path / "after", cache_dir=tmp_path / "c2")
    alone, after = records(tmp_path / "alone"), records(tmp_path / "after")
    assert alone["knn"]["metrics"] == after["knn"]["metrics"]


def test_a_small_probe_fits_on_one_thread_and_gives_torch_its_threads_back():
    from benchbone.compute.threads import cpu_threads
    from benchbone_plugins.linear_probe import SMALL_PROBLEM, fit_threads

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert fit_threads(1_000, 1_280) == 1 and fit_threads(SMALL_PROBLEM, 64) == 2
        with pytest.raises(RuntimeError), cpu_threads(1):
            assert torch.get_num_threads() == 1
            raise RuntimeError("a fit that fails")
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
