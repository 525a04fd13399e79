"""linear-probe: L2-regularised multinomial logistic regression on frozen features, fitted exactly.

The protocol of Kornblith et al. (2019) and CLIP: the regularisation strength C is chosen from a
log-spaced sweep on the validation split, then the probe is refitted on train + val and scored once
on test. The objective is scikit-learn's, ``C * sum(cross-entropy) + ||W||^2 / 2`` (bias not penalised),
minimised full-batch with L-BFGS in torch, warm-started along the sweep.
"""
from __future__ import annotations

from benchbone import Predictions, hookimpl

DEFAULTS = dict(C=None, c_min=1e-4, c_max=1e4, c_steps=9, max_iter=1000, tol=1e-6, standardize=True)


def fit_logistic(X, y, num_classes: int, C: float, max_iter: int = 1000, tol: float = 1e-6, init=None):
    """Weights ``(W [D, K], b [K])`` minimising scikit-learn's multinomial objective at strength ``C``."""
    import torch
    import torch.nn.functional as F

    n, d = X.shape
    W = torch.zeros(d, num_classes, dtype=X.dtype, device=X.device) if init is None else init[0].clone()
    b = torch.zeros(num_classes, dtype=X.dtype, device=X.device) if init is None else init[1].clone()
    W.requires_grad_(True)
    b.requires_grad_(True)
    penalty = 0.5 / (C * n)  # the objective divided by C * n, for a well-scaled loss
    opt = torch.optim.LBFGS([W, b], lr=1, max_iter=max_iter, tolerance_grad=tol, tolerance_change=1e-12,
                            history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(X @ W + b, y) + penalty * W.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return W.detach(), b.detach()


def sweep_values(params: dict) -> list[float]:
    import numpy as np

    if params["C"] is not None:
        return [float(params["C"])]
    return [float(c) for c in np.logspace(np.log10(params["c_min"]), np.log10(params["c_max"]), params["c_steps"])]


def linear_probe(backbone, data, ctx) -> Predictions:
    import torch

    p = ctx.params
    dtype = torch.float64 if ctx.device == "cpu" else torch.float32
    (Xtr, ytr), (Xva, yva), (Xte, yte) = (ctx.features(s) for s in ("train", "val", "test"))
    if p["standardize"]:  # statistics of the training features only
        mean, std = Xtr.mean(0), Xtr.std(0).clamp_min(1e-6)
        Xtr, Xva, Xte = ((X - mean) / std for X in (Xtr, Xva, Xte))
    dev = lambda t: t.to(ctx.device, dtype=dtype if t.is_floating_point() else None)  # noqa: E731
    Xtr, ytr, Xva, yva, Xte = map(dev, (Xtr, ytr, Xva, yva, Xte))
    sweep, init, best = [], None, None
    for C in ctx.progress(sweep_values(p), desc="probe sweep"):
        init = fit_logistic(Xtr, ytr, ctx.num_classes, C, p["max_iter"], p["tol"], init)
        acc = ((Xva @ init[0] + init[1]).argmax(1) == yva).double().mean().item()
        sweep.append({"C": C, "val_top1": acc})
        if best is None or acc > best[1]:
            best = (C, acc, init)
    C, val_acc, init = best
    W, b = fit_logistic(torch.cat([Xtr, Xva]), torch.cat([ytr, yva]), ctx.num_classes, C,
                        p["max_iter"], p["tol"], init)
    scores = torch.softmax(Xte @ W + b, dim=1).float().cpu()
    ctx.info.update(chosen_C=C, val_top1=val_acc, sweep=sweep)
    return Predictions(y_true=yte, y_pred=scores.argmax(1), y_score=scores)


@hookimpl
def benchbone_register_strategies(register):
    register("linear-probe", linear_probe, **DEFAULTS)
