"""The regularisation sweep of the exact probe: the strengths C to try, each fitted warm-started from the last ones, the best chosen on validation, and the points that float32 could not resolve."""
from __future__ import annotations

import math

from benchbone.compute.lbfgs import extrapolated_start, minimise
from benchbone.compute.logistic import pack
from benchbone.errors import SummarisedWarning

__all__ = ["sweep_values", "choose_c", "close_unresolved", "unresolved_warning", "stalled", "SWEEP_DEFAULTS"]

# The sweep's strengths and each fit's stopping rule (linear-probe's parameters of the same names).
SWEEP_DEFAULTS = dict(C=None, c_min=1e-4, c_max=1e4, c_steps=17, max_iter=1000, tol=1e-6)


def sweep_values(p: dict) -> list[float]:
    """The strengths to try, strongest regularisation (smallest C) first."""
    import numpy as np

    if p["C"] is not None:
        return [float(p["C"])]
    return [float(c) for c in np.logspace(np.log10(p["c_min"]), np.log10(p["c_max"]), p["c_steps"])]


def choose_c(objective, Xva, yva, p: dict, progress, start=None) -> tuple[list[dict], tuple]:
    """Fit ``objective`` at each strength of the sweep, the first from ``start`` (parameters; zeros by default), the
    others warm-started from the last solution or the secant through
    the last two (``extrapolated_start``); return every point's record and ``(C, val_top1, fit)`` of the best on
    ``(Xva, yva)`` (ties keep the stronger regularisation). Curvature pairs do not carry from one C to the next:
    on real features they saved no iterations, and at the weak end they led to another of the many points that
    meet the tolerance."""
    sweep, start, curvature, best, path = [], pack(objective) if start is None else start, None, None, []
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

        warnings.warn(unresolved_warning(doubtful, p.get("dtype")), stacklevel=2)
    return sweep, best


def unresolved_warning(doubtful: list[float], dtype: str | None) -> SummarisedWarning:
    """What ``choose_c`` warns of when points close to the best are unresolved: the detail (which C) for this cell,
    and a summary that the harness shows once per run with the number of cells. ``dtype``: the strategy's
    parameter, None for a sweep without one (finetune's starting head), which can only fit in float32."""
    precision = dtype or "float32"
    detail = (f"at C={', '.join(f'{C:g}' for C in doubtful)} the fit stopped after at most one iteration because "
              f"{precision} could not hold further progress, with the gradient still above tol, within 1% (at least "
              f"5 images) of the best validation accuracy: a converged fit there might change the chosen C")
    if dtype == "float32":
        advice = "--set linear-probe.dtype=float64 settles it"
    elif dtype is None:
        advice = "such a sweep fits in float32 only; the chosen C is as good as any within that 1%"
    else:
        advice = f"{precision} holds no further progress there: the chosen C is as good as any within that 1%"
    summary = (f"{{count}} cell(s) stopped a fit of the C sweep at {precision}'s limit at a C within 1% of the best "
               f"validation accuracy, so a converged fit might choose another C (their records mark the sweep point "
               f"resolved: false; see docs/scale-out.md, 'Large feature sets'); {advice}")
    return SummarisedWarning(f"{'linear-probe: ' if dtype else ''}{detail}"
                             f"{' (dtype=float64 settles it)' if dtype == 'float32' else ''}", summary)


def close_unresolved(sweep: list[dict], best_acc: float, n_val: int) -> list[float]:
    """The strengths whose point is not resolved and whose validation accuracy is within the margin of the best:
    the only ones where a converged fit might choose another C. The others are flagged in the record alone."""
    margin = max(0.01, 5 / n_val)  # 1% of the validation images, at least 5
    return [point["C"] for point in sweep if not point["resolved"] and point["val_top1"] >= best_acc - margin]


def stalled(fit, tol: float) -> bool:
    """Whether a fit stopped on the objective rule within one iteration with its gradient above ``tol``: its
    working precision saw no progress it could hold, which does not show that the point is optimal."""
    return fit.stop == "objective" and fit.iterations <= 1 and fit.gradient > tol
