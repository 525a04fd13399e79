"""Multinomial logistic regression fitted exactly in torch: scikit-learn's objective, minimised by L-BFGS.

Each iteration costs two matrix products with the features: the logits of the search direction, and the
gradient at the accepted step. The line search works on logits alone, since the logits of ``x + t d`` are
``logits(x) + t logits(d)``: trying a step costs no product with the features. Steps meet the approximate
Wolfe conditions of Hager and Zhang (2005), a bound on the slope and an objective no more than 1e-6 of
itself above where it was: near the optimum float32 cannot resolve the decrease an Armijo test asks for.
"""
from __future__ import annotations

from typing import Any, NamedTuple


class Point(NamedTuple):
    """Parameters x = ``[W.T | b]`` and what the features say there, which no strength C changes."""

    x: Any
    logits: Any  # [K, n]
    data_gradient: Any  # of the mean cross-entropy, like x
    cross_entropy: float  # mean, summed in float64


class LogisticObjective:
    """scikit-learn's multinomial objective divided by ``C * n``: mean cross-entropy + ``||W||^2 / (2 C n)``.

    Parameters are one ``[K, D + 1]`` tensor, ``[W.T | b]``; the bias is not penalised. The work is done
    class-major ([K, n] logits) on one feature-major copy of the features: on a CPU both products are then
    several times faster than with sample-major features, and one copy stays in cache where two would not.
    """

    def __init__(self, X, y, num_classes: int, standardize: bool = False):
        import torch
        import torch.nn.functional as F

        self.XT = X.T.contiguous()  # [D, n]
        self.mean = self.std = None
        if standardize:  # with the statistics of the rows fitted on, computed in the feature-major copy
            self.mean = self.XT.mean(1)
            self.std = self.XT.sub_(self.mean[:, None]).norm(dim=1).div_((len(y) - 1) ** 0.5).clamp_(min=1e-6)
            self.XT.div_(self.std[:, None])
        self.onehotT = F.one_hot(y, num_classes).T.to(X.dtype).contiguous()  # [K, n]
        self.labels = y[None]  # [1, n]
        self.n, self.d = X.shape
        self.C = 1.0
        # [K, n] scratch for a search direction's logits and for trial steps, reused: allocating fresh
        # megabytes for each costs a CPU page faults that take longer than the arithmetic done in them
        self.direction_logits, self.trial = torch.empty_like(self.onehotT), torch.empty_like(self.onehotT)

    def features(self, X):
        """Other rows (validation, test) as the fitted rows were transformed."""
        return X if self.mean is None else (X - self.mean) / self.std

    def logits(self, x, out=None):
        import torch

        return torch.addmm(x[:, self.d:], x[:, : self.d], self.XT, out=out)

    def evaluate(self, logits):
        """``(softmax - one-hot [K, n], mean cross-entropy)``, computed in the place of ``logits``.

        The cross-entropy is summed in float64: its changes, not the gradient, need the digits."""
        import torch

        labelled = logits.gather(0, self.labels).sum(dtype=torch.float64)
        top = logits.amax(0)
        exp = logits.sub_(top).exp_()
        total = exp.sum(0)
        residual = exp.div_(total).sub_(self.onehotT)
        logsumexp = total.log_().add_(top).sum(dtype=torch.float64)
        return residual, float((logsumexp - labelled) / self.n)

    def point(self, x, logits, residual, cross_entropy: float) -> Point:
        import torch

        data_gradient = torch.empty_like(x)
        torch.mm(residual, self.XT.T, out=data_gradient[:, : self.d]).div_(self.n)
        torch.sum(residual, 1, out=data_gradient[:, self.d]).div_(self.n)
        return Point(x, logits, data_gradient, cross_entropy)

    def at(self, x) -> Point:
        logits = self.logits(x)
        return self.point(x, logits, *self.evaluate(self.trial.copy_(logits)))

    def gradient(self, point: Point):
        g = point.data_gradient.clone()
        g[:, : self.d].add_(point.x[:, : self.d], alpha=1 / (self.C * self.n))
        return g

    def value(self, point: Point) -> float:
        return point.cross_entropy + float(point.x[:, : self.d].double().pow(2).sum()) / (2 * self.C * self.n)


    def penalty_along(self, x, direction):
        """``(p, p', p'')`` of the penalty at ``x`` along ``direction``: at ``x + t d`` it is ``p + t p' + t^2 p'' / 2``."""
        W, dW = x[:, : self.d].double(), direction[:, : self.d].double()
        scale = 1 / (self.C * self.n)
        return float((W * W).sum()) * scale / 2, float((W * dW).sum()) * scale, float((dW * dW).sum()) * scale


def line_search(objective, point: Point, direction, slope0: float, max_tries: int = 30):
    """The point ``x + t d`` for the first step t found that meets the approximate Wolfe conditions of Hager
    and Zhang (2005), or None. The new point takes over the old one's logits.

    With phi(t) the objective along d: 0.9 phi'(0) <= phi'(t) <= -0.8 phi'(0) and phi(t) <= phi(0) + 1e-6
    |phi(0)|. phi is convex, so a step that raises phi lies past the minimum, and a bracket is narrowed by
    the secant of phi'. Trying a step costs no product with the features.
    """
    import torch

    direction_logits = objective.logits(direction, out=objective.direction_logits)
    flat_direction_logits = direction_logits.flatten()
    penalty, penalty_slope, penalty_curvature = objective.penalty_along(point.x, direction)
    value0 = point.cross_entropy + penalty
    lo, slope_lo, hi, slope_hi, t = 0.0, slope0, None, None, 1.0
    for _ in range(max_tries):
        residual, cross_entropy = objective.evaluate(torch.add(point.logits, direction_logits, alpha=t, out=objective.trial))
        slope = float(residual.flatten() @ flat_direction_logits) / objective.n + penalty_slope + t * penalty_curvature
        value = cross_entropy + penalty + t * penalty_slope + t * t * penalty_curvature / 2
        if value > value0 + 1e-6 * abs(value0):
            hi, slope_hi = t, max(slope, 0.0)
        elif 0.9 * slope0 <= slope <= -0.8 * slope0:
            logits = point.logits.add_(direction_logits, alpha=t)
            return objective.point(torch.add(point.x, direction, alpha=t), logits, residual, cross_entropy)
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


class Fit(NamedTuple):
    point: Point
    iterations: int
    stop: str  # "gradient" or "objective" (converged), "max_iter" or "line search" (not)
    scale: float | None  # s.y / y.y of the last step: the curvature's scale, a first step for the next fit

    @property
    def x(self):
        return self.point.x

    @property
    def converged(self) -> bool:
        return self.stop in ("gradient", "objective")


def minimise(objective, C: float, start, tol: float = 1e-6, max_iter: int = 1000, history: int = 20,
             scale: float | None = None) -> Fit:
    """L-BFGS from ``start`` (parameters, or a Point of this objective), stopped by scipy's rules as
    scikit-learn sets them, in the working precision. ``scale`` sizes the first step (a previous fit's).

    It stops when the largest gradient entry is at most ``tol`` (scipy's pgtol), checked on logits
    recomputed from x, or when a step lowers the objective by a relative amount below ``ftol``:
    scikit-learn's 64 float64 ulps, or in float32 one float32 ulp, progress float32 cannot hold. A Point
    carries the logits and data gradient along a sweep of C, so a warm start costs no product.
    """
    import torch

    objective.C = C
    point = start._replace(logits=start.logits.clone()) if isinstance(start, Point) else objective.at(start)
    ftol = max(64 * torch.finfo(torch.float64).eps, torch.finfo(point.x.dtype).eps)
    g, f, exact = objective.gradient(point), objective.value(point), False
    pairs = []
    for iteration in range(max_iter):
        if g.abs().max() <= tol:
            if not exact:  # drop the rounding that updating the logits step by step accumulated
                point, exact = objective.at(point.x), True
                g = objective.gradient(point)
            if g.abs().max() <= tol:
                return Fit(point, iteration, "gradient", scale)
        q, alphas = -g.flatten(), []
        for s, y, rho in reversed(pairs):  # the two-loop recursion, one fused update per vector
            alphas.append(rho * float(s @ q))
            q.add_(y, alpha=-alphas[-1])
        if pairs:
            scale = 1 / (pairs[-1][2] * float(pairs[-1][1] @ pairs[-1][1]))  # s.y / y.y
        if scale is not None:
            q *= scale
        for (s, y, rho), alpha in zip(pairs, reversed(alphas)):
            q.add_(s, alpha=alpha - rho * float(y @ q))
        if (slope := float(g.flatten() @ q)) >= 0:  # rounding spoilt the curvature pairs: start them again
            pairs, q = [], -g.flatten()
            slope = -float(q @ q)
        new = line_search(objective, point, q.view_as(point.x), slope)
        if new is None:
            return Fit(point, iteration, "line search", scale)
        f_before, f = f, objective.value(new)
        g_before, g = g, objective.gradient(new)
        s, y = (new.x - point.x).flatten(), (g - g_before).flatten()
        point, exact = new, False
        if f_before - f <= ftol * max(abs(f_before), abs(f), 1):
            return Fit(point, iteration + 1, "objective", scale)
        if (sy := float(s @ y)) > 0:
            pairs = (pairs + [(s, y, 1 / sy)])[-history:]
    return Fit(point, max_iter, "max_iter", scale)


def fit_logistic(X, y, num_classes: int, C: float, max_iter: int = 1000, tol: float = 1e-6, init=None):
    """``(W [D, K], b [K], fit)`` minimising scikit-learn's multinomial objective at strength ``C`` on X as given."""
    objective = LogisticObjective(X, y, num_classes)
    fit = minimise(objective, C, pack(objective, init), tol, max_iter)
    return (*unpack(objective, fit.x), fit)


def pack(objective, init=None):
    """``[W.T | b]`` from ``(W, b)``, or zeros."""
    import torch

    x = torch.zeros(objective.onehotT.shape[0], objective.d + 1, dtype=objective.XT.dtype, device=objective.XT.device)
    if init is not None:
        x[:, : objective.d], x[:, objective.d] = init[0].T, init[1]
    return x


def unpack(objective, x):
    """``(W [D, K], b [K])`` from ``[W.T | b]``."""
    return x[:, : objective.d].T, x[:, objective.d].clone()
