"""The exact evaluations of ``benchbone select``: probes that never see the validation items.

The guarantee of ``elimination`` needs probes fitted without the validation items they are scored on. The
``linear-probe`` strategy chooses its regularisation C on the validation split, so select does not call it:

* ``linear-probe`` (default): the same exact multinomial logistic regression (``benchbone.compute``: the
  objective, L-BFGS and the warm-started sweep of C that the strategy uses), with C chosen on a seeded,
  class-stratified carve of ``INNER_FRACTION`` of the *training subsample* (never on the validation items),
  then refitted at that C on the whole training subsample, starting from the carve's fit at it; with ``--set
  C=VALUE`` a fixed C and no carve. The sweep is coarser than the strategy's (``c_steps`` 9 by default, a
  decade apart) to keep rounds cheap, and after the first round it starts ``around`` the C the candidate's
  previous round chose: that point and its neighbours, widened a point at a time while the best is at an edge
  (``window_sweep``). The previous C comes from training images only, so the guarantee is untouched.
* ``knn``: weighted k-nearest neighbours on cosine similarity (the knn strategy's rule: ``k``, ``temperature``),
  nothing chosen at all.

Each returns the predicted class of every item scored and what was chosen. Small problems on the CPU are
fitted on one thread (``one_thread``): on a shared machine torch's threads wait on busy cores, and one thread
was 10x faster for a 640 x 192 probe with the other core busy.

Any other registered strategy (finetune, head-sgd, a plugin's) is called as ``benchbone run`` calls it
(``strategy_step``), on views that keep the guarantee (``strategy_views``): its "train" view is the round's
training subsample less a class-stratified carve of ``INNER_FRACTION``, its "val" view (where it chooses
hyper-parameters or stops early) that carve, and its "test" view the items scored: the validation items, or
at the test step the test split. A strategy that measures its own metrics (``Predictions.metrics``, as
retrieval's recall@k and mAP) is refused: select compares per-item correctness, which those cannot carry.
"""
from __future__ import annotations

import time

import numpy as np

from benchbone.errors import UsageError

INNER_FRACTION = 0.2
ONE_THREAD_BELOW = 20_000_000  # rows x features: smaller CPU problems are fitted on one thread


def one_thread(small: bool, device: str = "cpu"):
    """torch and BLAS on one thread inside, when ``small`` and on the CPU (``compute.threads.cpu_threads``)."""
    from benchbone.compute.threads import cpu_threads

    return cpu_threads(1 if small and str(device) == "cpu" else None)


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


def window_sweep(inner, Xheld, yheld, p: dict, around: float | None):
    """``compute.sweep.choose_c`` over the sweep's strengths, or with ``around`` over the one nearest it and its
    neighbours, then one more strength (toward the edge, started from the edge's fit) at a time while the best
    is at the window's edge and the sweep goes on past it; ``(C, accuracy, fit, strengths tried)``."""
    from benchbone.compute.sweep import choose_c, sweep_values

    grid = sweep_values(p)
    last = len(grid) - 1
    points: dict = {}  # grid index -> (held-out accuracy, (C, accuracy, fit) where it was the best of its run)

    def run(lo: int, hi: int, start=None) -> None:
        part = {**p, "c_min": grid[lo], "c_max": grid[hi], "c_steps": hi - lo + 1}
        sweep, best = choose_c(inner, Xheld, yheld, part, lambda it, desc: it, start)
        for i, point in enumerate(sweep):
            points[lo + i] = (point["val_top1"], best if point["C"] == best[0] else None)

    def leader() -> int:  # ties: the stronger regularisation, as choose_c
        return max(points, key=lambda i: (points[i][0], -i))

    if around is None:
        run(0, last)
    else:
        nearest = int(np.argmin([abs(np.log(C / around)) for C in grid]))
        run(max(0, nearest - 1), min(last, nearest + 1))
        while (best := leader()) in (min(points), max(points)) and 0 < best < last:
            step = -1 if best == min(points) else 1
            run(best + step, best + step, points[best][1][2].x.clone())
    C, accuracy, fit = points[leader()][1]
    return C, accuracy, fit, len(points)


def _objective(X, y, num_classes: int, standardize: bool, in_span: bool):
    """(the probe's objective on rows ``X``, the ``RowSpace`` it is written in, or None): in the span of the rows
    (``compute.rowspace``) when ``in_span``."""
    from benchbone.compute.logistic import LogisticObjective
    from benchbone.compute.rowspace import RowSpace

    if not in_span:
        return LogisticObjective(X, y, num_classes, standardize), None
    space = RowSpace(X, standardize)
    return LogisticObjective(space.rows, y, num_classes), space


def linear_probe(Xtr, ytr, num_classes: int, params: dict, seed: int, device: str = "cpu", around: float | None = None):
    """Fit as the module docstring says; return (predict, info), ``predict(X)`` the classes of the rows of X."""
    import torch

    from benchbone.compute.lbfgs import minimise
    from benchbone.compute.logistic import pack

    p = dict(params)
    dtype = {"float32": torch.float32, "float64": torch.float64}[p.get("dtype", "float32")]
    X, y = torch.as_tensor(Xtr).to(device, dtype), torch.as_tensor(ytr)
    info = {"probe": "linear-probe", "fit_rows": len(y)}
    in_span = len(X) < X.shape[1]  # fewer rows than features
    objective, space = _objective(X, y.to(device), num_classes, p["standardize"], in_span)
    start = pack(objective)
    if p.get("C") is None:
        fit_pos, held_pos = _stratified_carve(y.numpy(), INNER_FRACTION, seed)
        inner, inner_space = _objective(X[fit_pos], y[fit_pos].to(device), num_classes, p["standardize"], in_span)
        held = inner_space(X[held_pos]) if inner_space else X[held_pos]
        C, inner_acc, inner_fit, tried = window_sweep(inner, held, y[held_pos], p, around)
        start = space.carry(inner_fit.x, inner_space) if space else inner_fit.x.clone()
        info.update(C_chosen_on=f"{len(held_pos)} held-out training images ({INNER_FRACTION:g} of the subsample)",
                    inner_top1=round(inner_acc, 5), strengths_tried=tried,
                    **({"around": around} if around is not None else {}))
    else:
        C = float(p["C"])
        info.update(C_chosen_on="fixed (--set C)")
    fit = minimise(objective, C, start, p["tol"], p["max_iter"])
    info.update(C=C, iterations=fit.iterations, converged=fit.converged,
                **({"row_space": f"{space.rank} of {X.shape[1]} dimensions"} if space else {}))
    objective.forget_rows()

    def predict(x):
        x = torch.as_tensor(x).to(device, dtype)
        return objective.scores(space(x) if space else x, fit.x).argmax(1).cpu().numpy()

    return predict, info


def knn(Xtr, ytr, num_classes: int, params: dict, seed: int, device: str = "cpu", around=None):
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


def fit(strategy: str, Xtr, ytr, Xev: list, num_classes: int, params: dict, seed: int, device: str = "cpu",
        around: float | None = None):
    """``PROBES[strategy]`` fitted on (Xtr, ytr) (``around``: the C of the candidate's previous round), on one thread
    where the problem is small (see ``one_thread``); returns (the predictions of each array of ``Xev``, info, predict)."""
    small = Xtr.shape[0] * Xtr.shape[1] < ONE_THREAD_BELOW
    with one_thread(small, device):
        predict, info = PROBES[strategy](Xtr, ytr, num_classes, params, seed, device, around)
        return [predict(x) for x in Xev], info, predict


def strategy_views(chunks: list, scored, seed: int) -> dict:
    """The generic path's views: "train" the rows of ``chunks`` less a class-stratified carve of ``INNER_FRACTION``
    of them, "val" that carve, "test" ``scored`` (a SplitView)."""
    from benchbone.inputs.splits import SplitView

    indices = np.concatenate([c.indices for c in chunks])
    order = np.argsort(indices)
    indices, labels = indices[order], np.concatenate([c.labels for c in chunks])[order]
    fit, held = _stratified_carve(labels, INNER_FRACTION, seed)
    first = chunks[0]
    return {"train": SplitView(first.source, first.dataset, indices[fit], labels[fit]),
            "val": SplitView(first.source, first.dataset, indices[held], labels[held]), "test": scored}


def strategy_step(sel, cand, chunks: list, scored, test: bool, workdir) -> dict:
    """``cand``'s registered strategy called as ``execution.cell_run.run_cell`` calls it, with a ``Context`` (from
    ``Selector`` ``sel``) on ``strategy_views`` of ``chunks`` scoring ``scored`` (the round's validation items, or
    with ``test`` the test items) and their images; the step's record: the correctness of each item scored
    (``correct`` and ``n``, or with ``test`` ``test_correct`` and ``test_n``), info, and seconds: its wall time
    plus the stored seconds of the features it read from the cache."""
    from torch.utils.data import Subset

    from benchbone.api import DatasetSplits
    from benchbone.execution.cell_run import checked_predictions
    from benchbone.execution.context import Context
    from benchbone.execution.session import seed_everything
    from benchbone.inputs.transforms import Augmentation

    session, cell, classes = sel.session, cand.cell, list(sel.data.classes)
    views = strategy_views(chunks, scored, cell.seed)
    backbone, preprocess, settings = sel._build(cand)
    augment = session.registries.datasets.get(cell.dataset).meta.get("augment")
    ctx = Context(device=session.device, seed=cell.seed, params=dict(cell.params), classes=classes, backbone=backbone,
                  views=views, images=lambda src: session.images(cell.dataset, cell.data_dir, src, cell.dataset_params),
                  preprocess=preprocess, feature_identity=sel._identity(cand, backbone), store=session.store,
                  memory=session._features, extraction=settings, progress=session.progress, workdir=workdir,
                  augmentation=Augmentation.declared_by(cell.dataset, augment))
    subsets = {s: Subset(v.dataset, v.indices.tolist()) for s, v in views.items()}
    data = DatasetSplits(subsets["train"], subsets["test"], classes, subsets["val"], dict(sel.data.info))
    seed_everything(cell.seed)
    t = time.perf_counter()
    predictions = session.registries.strategies.get(cell.strategy).obj(backbone, data, ctx)
    seconds = time.perf_counter() - t
    _, y_pred, _ = checked_predictions(cell, predictions, len(classes), len(views["test"]), scored.labels)
    if predictions.metrics:
        raise UsageError(f"--strategy {cell.strategy!r} measures {', '.join(predictions.metrics)} itself, which "
                         "per-item correctness cannot carry: select compares classes predicted item by item; "
                         "use a classifier (linear-probe, knn, finetune, head-sgd)")
    cached = {e["source"]: e["seconds"] for e in ctx.extraction.values() if e["cached"] and e.get("seconds")}
    seconds += sum(cached.values())
    info = {**ctx.info, **predictions.info, "views": {s: len(v) for s, v in views.items()},
            "val_is": f"a carve of {INNER_FRACTION:g} of the training subsample (never the validation items)"}
    right = np.packbits(np.asarray(y_pred) == scored.labels).tobytes().hex()
    return {"seconds": seconds, "fit_s": seconds, "info": info,
            **({"test_n": len(scored), "test_correct": right} if test else {"n": len(scored), "correct": right})}
