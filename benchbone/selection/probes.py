"""The exact evaluations of ``benchbone select``: probes that never see the validation items.

The guarantee of ``elimination`` needs probes fitted without the validation items they are scored on. The
``linear-probe`` strategy chooses its regularisation C on the validation split, so select does not call it:

* ``linear-probe`` (default): the same exact multinomial logistic regression (``benchbone.compute``: the
  objective, L-BFGS and the warm-started sweep of C that the strategy uses), with C chosen on a seeded,
  class-stratified carve of ``INNER_FRACTION`` of the *training subsample* (never on the validation items),
  then refitted at that C on the whole training subsample; with ``--set C=VALUE`` a fixed C and no carve.
  The sweep is coarser than the strategy's (``c_steps`` 9 by default, a decade apart) to keep rounds cheap.
* ``knn``: weighted k-nearest neighbours on cosine similarity (the knn strategy's rule: ``k``, ``temperature``),
  nothing chosen at all.

Each returns the predicted class of every item scored and what was chosen. Small problems on the CPU are
fitted on one thread (``one_thread``): on a shared machine torch's threads wait on busy cores, and one thread
was 10x faster for a 640 x 192 probe with the other core busy.
"""
from __future__ import annotations

import numpy as np

INNER_FRACTION = 0.2
ONE_THREAD_BELOW = 20_000_000  # rows x features: smaller CPU problems are fitted on one thread


class one_thread:
    """torch (and BLAS, where threadpoolctl is installed) on one thread inside, when ``small`` and on the CPU."""

    def __init__(self, small: bool, device: str = "cpu"):
        self.active = small and str(device) == "cpu"

    def __enter__(self):
        import torch

        if self.active:
            self.threads = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                from threadpoolctl import threadpool_limits

                self.blas = threadpool_limits(1)
            except ImportError:
                self.blas = None
        return self

    def __exit__(self, *exc):
        import torch

        if self.active:
            torch.set_num_threads(self.threads)
            if self.blas is not None:
                self.blas.restore_original_limits()


def _stratified_carve(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions (fit, held out): ``fraction`` of each class held out, at least one per class with two or more."""
    rng = np.random.default_rng(seed)
    fit, held = [], []
    for k in np.unique(y):
        rows = rng.permutation(np.flatnonzero(y == k))
        n = round(fraction * len(rows)) if len(rows) >= 2 else 0
        n = min(max(n, 1 if len(rows) >= 2 else 0), len(rows) - 1)
        held.append(rows[:n])
        fit.append(rows[n:])
    return np.sort(np.concatenate(fit)), np.sort(np.concatenate(held))


def linear_probe(Xtr, ytr, num_classes: int, params: dict, seed: int, device: str = "cpu"):
    """Fit as the module docstring says; return (predict, info), ``predict(X)`` the classes of the rows of X."""
    import torch

    from benchbone.compute.lbfgs import minimise
    from benchbone.compute.logistic import LogisticObjective, pack
    from benchbone.compute.sweep import choose_c

    p = dict(params)
    dtype = {"float32": torch.float32, "float64": torch.float64}[p.get("dtype", "float32")]
    X, y = torch.as_tensor(Xtr), torch.as_tensor(ytr)
    info = {"probe": "linear-probe", "fit_rows": len(y)}
    if p.get("C") is None:
        fit_pos, held_pos = _stratified_carve(y.numpy(), INNER_FRACTION, seed)
        inner = LogisticObjective(X[fit_pos].to(device, dtype), y[fit_pos].to(device), num_classes, p["standardize"])
        _, (C, inner_acc, _) = choose_c(inner, X[held_pos].to(device, dtype), y[held_pos], p, lambda it, desc: it)
        info.update(C_chosen_on=f"{len(held_pos)} held-out training images ({INNER_FRACTION:g} of the subsample)",
                    inner_top1=round(inner_acc, 5))
    else:
        C = float(p["C"])
        info.update(C_chosen_on="fixed (--set C)")
    objective = LogisticObjective(X.to(device, dtype), y.to(device), num_classes, p["standardize"])
    fit = minimise(objective, C, pack(objective), p["tol"], p["max_iter"])
    info.update(C=C, iterations=fit.iterations, converged=fit.converged)
    objective.forget_rows()

    def predict(x):
        return objective.scores(torch.as_tensor(x).to(device, dtype), fit.x).argmax(1).cpu().numpy()

    return predict, info


def knn(Xtr, ytr, num_classes: int, params: dict, seed: int, device: str = "cpu"):
    """Weighted kNN on cosine similarity: votes exp(sim / temperature) of the k nearest training images."""
    import torch

    X = torch.nn.functional.normalize(torch.as_tensor(Xtr, dtype=torch.float32), dim=1)
    y = torch.as_tensor(ytr)
    k = min(int(params.get("k", 20)), len(y))

    def predict(x):
        q = torch.nn.functional.normalize(torch.as_tensor(x, dtype=torch.float32), dim=1)
        preds = []
        for start in range(0, len(q), 1024):
            sim, idx = (q[start:start + 1024] @ X.T).topk(k, dim=1)
            votes = torch.zeros(len(sim), num_classes).scatter_add_(1, y[idx], (sim / params.get("temperature", 0.07)).exp())
            preds.append(votes.argmax(1))
        return torch.cat(preds).numpy() if preds else np.zeros(0, dtype=np.int64)

    return predict, {"probe": "knn", "k": k, "fit_rows": len(y)}


PROBES = {"linear-probe": linear_probe, "knn": knn}


def fit(strategy: str, Xtr, ytr, Xev: list, num_classes: int, params: dict, seed: int, device: str = "cpu"):
    """``PROBES[strategy]`` fitted on (Xtr, ytr), on one thread where the problem is small (see ``one_thread``);
    returns (the predictions of each array of ``Xev``, info, predict)."""
    small = Xtr.shape[0] * Xtr.shape[1] < ONE_THREAD_BELOW
    with one_thread(small, device):
        predict, info = PROBES[strategy](Xtr, ytr, num_classes, params, seed, device)
        return [predict(x) for x in Xev], info, predict
