"""linear-probe: L2-regularised multinomial logistic regression on frozen features, fitted exactly.

The protocol of Kornblith et al. (2019) and CLIP: the regularisation strength C is chosen from a
log-spaced sweep on the validation split, then the probe is refitted on train + val and scored once
on test. The objective is scikit-learn's, ``C * sum(cross-entropy) + ||W||^2 / 2`` (bias not penalised),
minimised full-batch by the L-BFGS of ``benchbone.compute.lbfgs`` with scikit-learn's stopping rules, in
float32 by default (``dtype=float64`` on request), warm-started from strong to weak regularisation: each fit
starts where the last two solutions point (the path extended in log C) where the objective is lower there.
Features are standardised with the statistics of the rows the probe is fitted on. Each sweep point
records its iterations, which rule stopped it, its largest gradient entry and whether it is ``resolved``:
a point that float32 stopped within one iteration with the gradient above tol is not, and a warning names it
where its validation accuracy is within 1% of the best (where a converged fit might choose another C).
Features too large for a working copy in memory (or on the device) are read where they are, in row chunks.

A small problem (at most ``SMALL_PROBLEM`` entries in the refit's features, ``rows x (features + 1)``) is fitted
and scored on one torch intra-op thread, whatever torch's setting, which is restored afterwards: its products
are too short to share out, and threads that wait for each other at every product made it 9 to 20 times
slower where another job kept one core of two busy (results/perf.md, section 7). The count is chosen from the problem's size
alone, so that a problem fits the same way (the products rounded the same) however busy the machine is; the
record's ``threads`` says how many the fit used.

``shots=K`` is the K-shot probe: K images per class drawn with the cell's seed from the train split.
The validation split stays as carved (it only chooses C), and the probe is not refitted on train + val,
so the final probe has seen K labelled images per class.
"""
from __future__ import annotations

from benchbone import Predictions, UsageError, hookimpl
from benchbone.compute.chunks import fits_in_memory, row_chunks
from benchbone.compute.lbfgs import minimise
from benchbone.compute.logistic import ChunkedLogisticObjective, LogisticObjective
from benchbone.compute.sweep import SWEEP_DEFAULTS, choose_c
from benchbone.compute.threads import cpu_threads

# Half-decade steps over 1e-4..1e4: fine enough that the chosen C sits within ~0.25 decade of the best.
DEFAULTS = dict(SWEEP_DEFAULTS, standardize=True, shots=None, dtype="float32")


def check_params(p: dict) -> None:
    if p["C"] is not None and not (isinstance(p["C"], (int, float)) and p["C"] > 0):
        raise UsageError(f"linear-probe: C={p['C']!r} must be a positive number (or none to sweep)")
    if not 0 < p["c_min"] <= p["c_max"]:
        raise UsageError(f"linear-probe: need 0 < c_min <= c_max, got c_min={p['c_min']}, c_max={p['c_max']}")
    if p["c_steps"] < 1 or p["max_iter"] < 1 or p["tol"] <= 0:
        raise UsageError("linear-probe: c_steps and max_iter must be >= 1 and tol > 0")
    if p["dtype"] not in ("float32", "float64"):
        raise UsageError(f"linear-probe: dtype={p['dtype']!r} must be float32 or float64")
    shots = p["shots"]
    if shots is not None and (not isinstance(shots, int) or isinstance(shots, bool) or shots < 1):
        raise UsageError(f"linear-probe: shots={shots!r} must be a positive whole number of images per class")


def check_train_labels(p: dict, counts: dict[str, int]) -> None:
    """``shots`` fits in the smallest class of the training split (``counts``: images per class name)."""
    smallest = min(counts, key=counts.get)
    if p["shots"] is not None and counts[smallest] < p["shots"]:
        raise UsageError(f"linear-probe: shots={p['shots']} but class {list(counts).index(smallest)} has only "
                         f"{counts[smallest]} training images ({smallest!r}, after the validation carve); ask for "
                         f"at most {counts[smallest]}")


def sample_shots(y, shots: int, num_classes: int, generator):
    """Sorted row indices of ``shots`` random rows per class of ``y``."""
    import torch

    picked = []
    for k in range(num_classes):
        rows = (y == k).nonzero().flatten()
        if len(rows) < shots:
            raise UsageError(f"linear-probe: shots={shots} but class {k} has only {len(rows)} training images")
        picked.append(rows[torch.randperm(len(rows), generator=generator)[:shots]])
    return torch.cat(picked).sort().values


# Entries of the refit's features, rows x (features + 1), up to which the probe fits on one intra-op thread: 8M
# float32 entries (32 MiB). On a quiet 2-core machine one
# thread was as fast as two on 45,000 x 64 and 1,131 x 1,280 (results/perf.md, 3a and 3a'), and two threads
# 1.8x as fast on 45,000 x 1,280.
SMALL_PROBLEM = 2**23


def fit_threads(rows: int, features: int) -> int:
    """torch intra-op threads to fit a probe on ``rows`` x ``features`` with: one for a small problem, else torch's
    setting."""
    import torch

    return 1 if rows * (features + 1) <= SMALL_PROBLEM else torch.get_num_threads()


# Probes fitted in this process, by what determines them: cells that differ only in their test images (the
# conditions of --set corruption=...) score the same probe instead of refitting it. The last few are kept.
_FITTED: dict[str, tuple] = {}


def fit_key(tensors, p: dict, num_classes: int, device: str) -> str:
    """sha256 of the fitting rows, parameters, classes and device: equal keys fit equal probes. The rows are
    hashed in chunks, so that memory-mapped features are never copied whole."""
    import hashlib
    import json

    import torch

    h = hashlib.sha256(json.dumps([p, num_classes, device], sort_keys=True, default=str).encode())
    for tensor in tensors:
        h.update(str((tensor.dtype, tuple(tensor.shape))).encode())
        rows = tensor.reshape(len(tensor), -1)
        for start, stop in row_chunks(len(rows), rows.shape[1], rows.element_size()):
            h.update(rows[start:stop].contiguous().view(torch.uint8).numpy())
    return h.hexdigest()


def linear_probe(backbone, data, ctx) -> Predictions:
    import torch

    p = ctx.params
    check_params(p)
    (Xtr, ytr), (Xva, yva), (Xte, yte) = (ctx.features(s) for s in ("train", "val", "test"))
    if p["shots"] is not None:
        keep = sample_shots(ytr, p["shots"], ctx.num_classes, ctx.generator(offset=7))
        Xtr, ytr = Xtr[keep], ytr[keep]
    key = fit_key((Xtr, ytr, Xva, yva), p, ctx.num_classes, ctx.device)
    threads = fit_threads(len(Xtr) + (len(Xva) if p["shots"] is None else 0), Xtr.shape[1])
    with cpu_threads(threads):
        if key not in _FITTED:
            while len(_FITTED) >= 4:
                _FITTED.pop(next(iter(_FITTED)))
            _FITTED[key] = fit_probe(Xtr, ytr, Xva, yva, p, ctx)
            _FITTED[key][2]["threads"] = threads
        objective, x, info = _FITTED[key]
        scores = torch.softmax(objective.scores(Xte, x), dim=1).float().cpu()
    ctx.info.update(info)  # the same whether fitted here or reused: the fit is deterministic
    return Predictions(y_true=yte, y_pred=scores.argmax(1), y_score=scores)


def fitting_objective(parts, y, p: dict, ctx, dtype):
    """The objective on the rows of ``parts`` (fitted on as one): on a copy of them on the device where one
    fits in memory, else on the rows where they are (memory-mapped), read in chunks."""
    import torch

    n, d = sum(len(part) for part in parts), parts[0].shape[1]
    in_memory = 4 * n * (d + 1) * dtype.itemsize  # the rows, a feature-major copy, two oneDNN layouts (or scratch)
    if fits_in_memory(in_memory, ctx.device):
        X = parts[0] if len(parts) == 1 else torch.cat(parts)
        return LogisticObjective(X.to(ctx.device, dtype), y.to(ctx.device), ctx.num_classes, p["standardize"])
    return ChunkedLogisticObjective(parts, y, ctx.num_classes, p["standardize"], dtype, ctx.device)


def fit_probe(Xtr, ytr, Xva, yva, p: dict, ctx) -> tuple:
    """The probe fitted as the module docstring says: ``(objective, [W.T | b], info)``."""
    import torch

    dtype = {"float32": torch.float32, "float64": torch.float64}[p["dtype"]]
    objective = fitting_objective([Xtr], ytr, p, ctx, dtype)
    sweep, (C, val_acc, fit) = choose_c(objective, Xva, yva, p, ctx.progress)
    if p["shots"] is None:
        yfit = torch.cat([ytr, yva])
        objective = fitting_objective([Xtr, Xva], yfit, p, ctx, dtype)
        fit = minimise(objective, C, fit.x, p["tol"], p["max_iter"], fit.curvature)
        refit = "train+val"
    else:
        yfit, refit = ytr, f"none: the probe fitted on {len(ytr)} shots at the chosen C"
    products = objective.products
    objective.forget_rows()  # it is kept to score test rows: its copies of the fitted rows are freed
    info = dict(
        chosen_C=C, val_top1=val_acc, sweep=sweep, refit=refit, fit_rows=len(yfit), final_iterations=fit.iterations,
        final_stop=fit.stop, converged=fit.converged, dtype=str(dtype).removeprefix("torch."), shots=p["shots"],
        solver="L-BFGS, approximate Wolfe steps on logits, full batch",
        features="in memory" if type(objective) is LogisticObjective else "read in row chunks (out of core)",
        products=products,
    )
    return objective, fit.x, info


@hookimpl
def benchbone_register_strategies(register):
    register("linear-probe", linear_probe, params=DEFAULTS, types={"C": float, "shots": int}, check=check_params,
             description="logistic regression on frozen features, C chosen on the validation split")


linear_probe.check_train_labels = check_train_labels  # called with its training split's class sizes before the first cell
