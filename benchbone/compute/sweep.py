"""The regularisation sweep of the exact probe: the strengths C to try, each fitted warm-started from the last ones, the best chosen on validation, and the points that float32 could not resolve."""
from __future__ import annotations

import math

from benchbone.compute.lbfgs import extrapolated_start, minimise
from benchbone.compute.logistic import pack

__all__ = ["sweep_values", "choose_c", "close_unresolved", "stalled", "SWEEP_DEFAULTS"]

# The sweep's strengths and each fit's stopping rule (linear-probe's parameters of the same names).
SWEEP_DEFAULTS = dict(C=None, c_min=1e-4, c_max=1e4, c_steps=17, max_iter=1000, tol=1e-6)


def sweep_values(p: dict) -> list[float]:
    """The strengths to try, strongest regularisation (smallest C) first."""
    import numpy as np

    if p["C"] is not None:
        return [float(p["C"])]
    return [float(c) for c in np.logspace(np.log10(p["c_min"]), np.log10(p["c_max"]), p["c_steps"])]


def choose_c(objective, Xva, yva, p: dict, progress) -> tuple[list[dict], tuple]:
    """Fit ``objective`` at each strength of the sweep, warm-started from the last solution or the secant through
    the last two (``extrapolated_start``); return every point's record and ``(C, val_top1, fit)`` of the best on
    ``(Xva, yva)`` (ties keep the stronger regularisation). Curvature pairs do not carry from one C to the next:
    on real features they saved no iterations, and at the weak end they led to another of the many points that
    meet the tolerance."""
    sweep, start, curvature, best, path = [], pack(objective), None, None, []
    yva = yva.to(objective.device)
    for C in progress(sweep_values(p), desc="linear-probe sweep"):
        if len(path) == 2:  # warm start where the last two solutions point, or where the last one ended
            (C0, x0), (C1, _) = path
            start = extrapolated_start(objective, C, start, x0, math.log(C / C1) / math.log(C1 / C0))
        fit = minimise(objective, C, start, p["tol"], p["max_iter"], curvature)
        start, curvature, path = fit.point, fit.curvature, [*path[-1:], (C, fit.x)]
        acc = (objective.scores(Xva, fit.x).argmax(1) == yva).double().mean().item()
        sweep.append({"C": C, "val_top1": round(acc, 6), "iterations": fit.iterations, "stop": fit.stop,
                      "converged": fit.converged, "gradient": float(f"{fit.gradient:.3g}"),
                      "resolved": not stalled(fit, p["tol"])})
        if best is None or acc > best[1]:  # its x and pairs start the refit; its logits [K, n] are not kept
            best = (C, acc, fit._replace(point=fit.point._replace(logits=None), curvature=fit.curvature.copy()))
        curvature.clear()
    if doubtful := close_unresolved(sweep, best[1], len(yva)):
        import warnings

        warnings.warn(f"linear-probe: at C={', '.join(f'{C:g}' for C in doubtful)} the fit stopped after at most one "
                      f"iteration because {p.get('dtype', 'float32')} could not hold further progress, with the gradient still above "
                      f"tol, within 1% (at least 5 images) of the best validation accuracy: a converged fit there might "
                      f"change the chosen C (dtype=float64 settles it)", stacklevel=2)
    return sweep, best


def close_unresolved(sweep: list[dict], best_acc: float, n_val: int) -> list[float]:
    """The strengths whose point is not resolved and whose validation accuracy is within the margin of the best:
    the only ones where a converged fit might choose another C. The others are flagged in the record alone."""
    margin = max(0.01, 5 / n_val)  # 1% of the validation images, at least 5
    return [point["C"] for point in sweep if not point["resolved"] and point["val_top1"] >= best_acc - margin]


def stalled(fit, tol: float) -> bool:
    """Whether a fit stopped on the objective rule within one iteration with its gradient above ``tol``: its
    working precision saw no progress it could hold, which does not show that the point is optimal."""
    return fit.stop == "objective" and fit.iterations <= 1 and fit.gradient > tol
