"""L-BFGS for the logistic objective: curvature pairs in one preallocated buffer, a line search on logits alone (approximate Wolfe conditions of Hager and Zhang, 2005), warm starts extrapolated from earlier fits, and ``fit_logistic``."""
from __future__ import annotations

from typing import NamedTuple

from benchbone.compute.logistic import LogisticObjective, Point, pack, unpack

__all__ = ["Curvature", "line_search", "extrapolated_start", "Fit", "minimise", "fit_logistic"]


class Curvature:
    """L-BFGS's last ``size`` curvature pairs ``(s, y)`` (10 by default, as scipy's and so scikit-learn's) in one
    preallocated ``[2 size, P]`` buffer (s rows, then y rows), with all their inner products in float64: the
    two-loop recursion then runs on those numbers and costs two matrix-vector products with the buffer, instead
    of 4 ``size`` vector operations.

    The pairs were measured at one penalty curvature; :meth:`retarget` moves them to another (the refit's rows
    at the chosen C), ``y += (new - old) s`` for every pair, so that one fit's curvature starts the next.
    :meth:`clear` drops the pairs but keeps the scale ``s.y / y.y`` of the newest as the first step's size.
    """

    def __init__(self, like, size: int = 10):
        import numpy as np
        import torch

        self.size = size
        self.rows = torch.zeros(2 * size, like.numel(), dtype=like.dtype, device=like.device)
        self.gram = np.zeros((2 * size, 2 * size))
        self.order: list[int] = []  # slots, oldest pair first
        self.penalty: float | None = None
        self.scale = 1.0

    def clear(self) -> None:
        self.order = []

    def copy(self) -> "Curvature":
        import copy

        twin = copy.copy(self)
        twin.rows, twin.gram, twin.order = self.rows.clone(), self.gram.copy(), list(self.order)
        return twin

    def add(self, s, y) -> None:
        import torch

        m = self.size
        slot = self.order.pop(0) if len(self.order) == m else min(set(range(m)) - set(self.order))
        self.rows[slot], self.rows[m + slot] = s, y
        products = (self.rows @ torch.stack((s, y)).T).double().cpu().numpy()  # [2m, 2]
        self.gram[:, slot] = self.gram[slot, :] = products[:, 0]
        self.gram[:, m + slot] = self.gram[m + slot, :] = products[:, 1]
        self.order.append(slot)

    def retarget(self, penalty: float) -> None:
        """Shift every pair's y to the penalty curvature ``penalty``; drop pairs whose s.y is no longer > 0."""
        if self.penalty is not None and self.order and penalty != self.penalty:
            m, delta, G = self.size, penalty - self.penalty, self.gram
            SS, SY, YY = G[:m, :m].copy(), G[:m, m:].copy(), G[m:, m:].copy()
            self.rows[m:].add_(self.rows[:m], alpha=delta)
            G[:m, m:] = SY + delta * SS
            G[m:, :m] = G[:m, m:].T
            G[m:, m:] = YY + delta * (SY + SY.T) + delta * delta * SS
            self.order = [i for i in self.order if G[i, m + i] > 0]
        self.penalty = penalty

    def direction(self, g):
        """``-H g`` for the L-BFGS inverse Hessian H of the pairs (the identity when there are none), by the
        two-loop recursion written on coefficients: the result is ``-gamma g + sum a_i s_i + sum b_i y_i``."""
        import numpy as np
        import torch

        if not self.order:
            return g * -self.scale
        m, G, k = self.size, self.gram, len(self.order)
        s_idx = np.array(self.order)
        y_idx = s_idx + m
        dots = (self.rows @ g).double().cpu().numpy()  # s_i.g and y_i.g for every slot
        rho = 1 / G[s_idx, y_idx]
        alpha, b = np.zeros(k), np.zeros(k)  # q = -g + sum b_j y_j
        for i in range(k - 1, -1, -1):
            alpha[i] = rho[i] * (-dots[s_idx[i]] + G[s_idx[i], y_idx[i + 1:]] @ b[i + 1:])
            b[i] = -alpha[i]
        gamma = self.scale = G[s_idx[-1], y_idx[-1]] / G[y_idx[-1], y_idx[-1]]
        qy = gamma * (-dots[y_idx] + G[np.ix_(y_idx, y_idx)] @ b)  # y_i . (gamma q)
        a = np.zeros(k)  # r = gamma q + sum a_j s_j
        for i in range(k):
            a[i] = alpha[i] - rho[i] * (qy[i] + G[y_idx[i], s_idx[:i]] @ a[:i])
        coefficients = np.zeros(2 * m)
        coefficients[s_idx], coefficients[y_idx] = a, gamma * b
        weights = torch.from_numpy(coefficients).to(g.device, g.dtype)
        return torch.addmv(g, self.rows.T, weights, beta=-gamma)


def line_search(objective, point: Point, direction, slope0: float, value0: float, max_tries: int = 30):
    """``(point, objective)`` at ``x + t d`` for the first step t found that meets the approximate Wolfe
    conditions of Hager and Zhang (2005), or None. The new point's logits are the trial's, and the old point's
    become the scratch for the next trials.

    With phi(t) the objective along d: 0.9 phi'(0) <= phi'(t) <= -0.8 phi'(0) and phi(t) <= phi(0) + 1e-6
    |phi(0)|. phi is convex, so a step that raises phi lies past the minimum, and a bracket is narrowed by
    the secant of phi'. Trying a step costs no product with the features, and the labels' logits, being
    linear in t, are summed once.
    """
    import torch

    direction_logits = objective.logits(direction.view_as(point.x), out=objective.direction_logits)
    flat_direction_logits = direction_logits.flatten()
    (ww, wd), (_, dd) = objective.penalty_products(point.x, direction.view_as(point.x))
    penalty, penalty_slope, penalty_curvature = (v * objective.penalty for v in (ww / 2, wd, dd))
    labelled0, labelled_slope = point.labelled, objective.labelled(direction_logits)
    lo, slope_lo, hi, slope_hi, t = 0.0, slope0, None, None, 1.0
    for _ in range(max_tries):
        trial = torch.add(point.logits, direction_logits, alpha=t, out=objective.trial)
        labelled = labelled0 + t * labelled_slope
        residual, cross_entropy = objective.evaluate(trial, labelled)
        slope = float(residual.flatten() @ flat_direction_logits) / objective.n + penalty_slope + t * penalty_curvature
        value = cross_entropy + penalty + t * penalty_slope + t * t * penalty_curvature / 2
        if value > value0 + 1e-6 * abs(value0):
            hi, slope_hi = t, max(slope, 0.0)
        elif 0.9 * slope0 <= slope <= -0.8 * slope0:
            objective.trial = point.logits  # the trial's logits are the new point's; the old ones, scratch
            x = torch.add(point.x, direction.view_as(point.x), alpha=t)
            return objective.point(x, trial, residual, cross_entropy, labelled), value
        elif slope < 0.9 * slope0:
            lo, slope_lo = t, slope
        else:
            hi, slope_hi = t, slope
        if hi is None:
            t *= 4
        else:
            secant = lo - slope_lo * (hi - lo) / (slope_hi - slope_lo)
            t = min(max(secant, lo + 0.1 * (hi - lo)), hi - 0.1 * (hi - lo))
    return None


def extrapolated_start(objective, C: float, point: Point, previous, reach: float) -> Point:
    """Where a sweep's fit at ``C`` starts: ``point`` (the last strength's solution), or the secant through
    ``previous`` and it carried on by ``reach`` times their distance (the regularisation path extended in log C),
    whichever has the lower objective at ``C``. Finding out costs one product with the features, and taking
    the secant point one more (its gradient); on a path that bends the last solution is kept."""
    import torch

    objective.C = C
    x = torch.add(point.x, point.x - previous, alpha=reach)
    logits, residual, cross_entropy, labelled = objective.evaluated(x)
    if objective.value(Point(x, logits, None, cross_entropy, labelled)) >= objective.value(point):  # no gradient yet
        return point
    return objective.point(x, logits, residual, cross_entropy, labelled)


class Fit(NamedTuple):
    point: Point
    iterations: int
    stop: str  # "gradient" or "objective" (converged), "max_iter" or "line search" (not)
    curvature: Curvature  # the last pairs: they start the next strength's fit
    gradient: float  # the largest gradient entry where it stopped

    @property
    def x(self):
        return self.point.x

    @property
    def converged(self) -> bool:
        return self.stop in ("gradient", "objective")


def minimise(objective, C: float, start, tol: float = 1e-6, max_iter: int = 1000, curvature: Curvature | None = None,
             ftol: float | None = None) -> Fit:
    """L-BFGS from ``start`` (parameters, or a Point of this objective), stopped by scipy's rules as
    scikit-learn sets them, in the working precision. ``curvature`` carries a previous fit's pairs.

    It stops when the largest gradient entry is at most ``tol`` (scipy's pgtol), checked on logits
    recomputed from x, or when a step lowers the objective by a relative amount below ``ftol``: by default
    scikit-learn's 64 float64 ulps, or in float32 one float32 ulp, progress float32 cannot hold. A Point
    carries the logits and data gradient along a sweep of C, so a warm start costs no product; its logits
    are taken over and become scratch (no copy of [K, n]: pass a Point with cloned logits to keep them).
    """
    import torch

    objective.C = C
    point = start if isinstance(start, Point) else objective.at(start)
    if ftol is None:
        ftol = max(64 * torch.finfo(torch.float64).eps, torch.finfo(point.x.dtype).eps)
    curvature = curvature if curvature is not None else Curvature(point.x)
    curvature.retarget(objective.penalty)
    g, f, exact = objective.gradient(point), objective.value(point), False
    for iteration in range(max_iter):
        if (largest := float(g.abs().max())) <= tol:
            if not exact:  # drop the rounding that updating the logits step by step accumulated
                point, exact = objective.at(point.x), True
                g = objective.gradient(point)
                largest = float(g.abs().max())
            if largest <= tol:
                return Fit(point, iteration, "gradient", curvature, largest)
        flat_g = g.flatten()
        q = curvature.direction(flat_g)
        if (slope := float(flat_g @ q)) >= 0:  # rounding spoilt the curvature pairs: start them again
            curvature.clear()
            curvature.scale = 1.0
            q = -flat_g
            slope = -float(q @ q)
        found = line_search(objective, point, q, slope, f)
        if found is None:
            return Fit(point, iteration, "line search", curvature, largest)
        new, f_new = found
        g_new = objective.gradient(new)
        s, y = (new.x - point.x).flatten(), (g_new - g).flatten()
        f_before, f, point, g, exact = f, f_new, new, g_new, False
        if f_before - f <= ftol * max(abs(f_before), abs(f), 1):
            return Fit(point, iteration + 1, "objective", curvature, float(g.abs().max()))
        if float(s @ y) > 0:
            curvature.add(s, y)
    return Fit(point, max_iter, "max_iter", curvature, float(g.abs().max()))


def fit_logistic(X, y, num_classes: int, C: float, max_iter: int = 1000, tol: float = 1e-6, init=None):
    """``(W [D, K], b [K], fit)`` minimising scikit-learn's multinomial objective at strength ``C`` on X as given."""
    objective = LogisticObjective(X, y, num_classes)
    fit = minimise(objective, C, pack(objective, init), tol, max_iter)
    return (*unpack(objective, fit.x), fit)
