"""Multinomial logistic regression fitted exactly in torch: scikit-learn's objective, minimised by L-BFGS.

Each iteration costs two matrix products with the features: the logits of the search direction, and the
gradient at the accepted step. The line search works on logits alone, since the logits of ``x + t d`` are
``logits(x) + t logits(d)``: trying a step costs no product with the features. Steps meet the approximate
Wolfe conditions of Hager and Zhang (2005), a bound on the slope and an objective no more than 1e-6 of
itself above where it was: near the optimum float32 cannot resolve the decrease an Armijo test asks for.

The curvature pairs live in one preallocated buffer with their inner products, so that the two-loop
recursion costs two matrix-vector products, and a fit can start from another's (shifted by the change of the
penalty's curvature): the refit at the chosen C on train + val starts from the sweep's pairs at that C.
Features that do not fit in memory (a memory-mapped tensor) are read in row chunks by
:class:`ChunkedLogisticObjective`, the same objective.

On an x86-64 CPU in float32 both products run in oneDNN, on the features packed for it once
(:class:`OneDNNFeatures`): its kernels for these skinny shapes ([K, D + 1] x [D + 1, n]) on packed features are
about three times as fast as MKL's, which torch.mm uses.
"""
from __future__ import annotations

from typing import Any, NamedTuple

from benchbone_plugins.chunks import row_chunks


class Point(NamedTuple):
    """Parameters x = ``[W.T | b]`` and what the features say there, which no strength C changes."""

    x: Any
    logits: Any  # [K, n]
    data_gradient: Any  # of the mean cross-entropy, like x
    cross_entropy: float  # mean, summed in float64
    labelled: float  # the sum over rows of the label's logit, in float64


class LogisticObjective:
    """scikit-learn's multinomial objective divided by ``C * n``: mean cross-entropy + ``||W||^2 / (2 C n)``.

    Parameters are one ``[K, D + 1]`` tensor, ``[W.T | b]``; the bias is not penalised. The work is done
    class-major ([K, n] logits) on a feature-major copy of the features with a row of ones below them (the
    bias), so that each product is one matrix product. In float32 on a CPU that copy is packed twice for
    oneDNN (:class:`OneDNNFeatures`) and the dense one dropped; elsewhere (float64, CUDA) it is used as it is.
    """

    def __init__(self, X, y, num_classes: int, standardize: bool = False):
        import torch

        self.n, self.d = X.shape
        self.XT1 = torch.ones(self.d + 1, self.n, dtype=X.dtype, device=X.device)  # [D + 1, n]
        self.XT1[: self.d].copy_(X.T)
        self.mean = self.std = None
        if standardize:  # with the statistics of the rows fitted on, computed in the feature-major copy
            self.mean, self.std = standardise_(self.XT1[: self.d])
        # a column of [X | 1] that is zero on every fitted row adds nothing to any product: it is left out of them
        live = self.XT1.amax(1).ne(0) | self.XT1.amin(1).ne(0)
        self.live = None if live.all() else live.nonzero().flatten()  # the columns kept, where some are left out
        if self.live is not None:
            self.XT1 = self.XT1[self.live]
        self.onednn = OneDNNFeatures.of(self.XT1, num_classes)
        if self.onednn is not None:  # the dense copy is no longer needed
            self.XT1 = None
        self._setup(y, num_classes, X.dtype, X.device)

    def _setup(self, y, num_classes: int, dtype, device) -> None:
        import torch

        self.dtype, self.device, self.num_classes = dtype, device, num_classes
        self.labels = y.to(device)[None]  # [1, n]
        self.minus_one = torch.full((1, self.n), -1.0, dtype=dtype, device=device)  # the one-hot, subtracted in place
        self.penalised = torch.ones(num_classes, self.d + 1, dtype=dtype, device=device)
        self.penalised[:, self.d] = 0  # the bias column
        self.C = 1.0
        # [K, n] scratch, reused: a search direction's logits, a trial step's, and their softmax (the residual).
        # Allocating fresh megabytes for each costs page faults that take longer than the arithmetic done in them
        self.direction_logits = torch.empty(num_classes, self.n, dtype=dtype, device=device)
        self.trial = torch.empty_like(self.direction_logits)
        self.probabilities = torch.empty_like(self.direction_logits)

    @property
    def penalty(self) -> float:
        """The penalty's curvature ``1 / (C n)``."""
        return 1 / (self.C * self.n)

    def features(self, X):
        """Other rows (validation, test) as the fitted rows were transformed."""
        return X if self.mean is None else (X - self.mean) / self.std

    def scores(self, X, x):
        """Logits [m, K] of other rows X (on the CPU, possibly memory-mapped), read in row chunks."""
        import torch

        out = torch.empty(len(X), x.shape[0], dtype=self.dtype, device=self.device)
        W, b = unpack(self, x)
        for start, stop in row_chunks(len(X), X.shape[1], self.dtype.itemsize):
            torch.addmm(b, self.features(X[start:stop].to(self.device, self.dtype)), W, out=out[start:stop])
        return out

    def logits(self, x, out=None):
        import torch

        x = x if self.live is None else x[:, self.live]
        if self.onednn is not None:
            return self.onednn.logits(x, out)
        return torch.mm(x, self.XT1, out=out)

    def data_gradient(self, residual, out):
        """The mean cross-entropy's gradient from ``softmax - one-hot`` [K, n], written into ``out`` [K, D + 1]: zero
        in the columns left out, which are zero on every fitted row."""
        if self.live is not None:
            out.zero_()[:, self.live] = self._data_gradient(residual, out.new_empty(len(out), len(self.live)))
            return out
        return self._data_gradient(residual, out)

    def _data_gradient(self, residual, out):
        import torch

        if self.onednn is not None:
            return self.onednn.gradient(residual, 1 / self.n, out)
        return torch.addmm(out, residual, self.XT1.T, beta=0, alpha=1 / self.n, out=out)

    @property
    def products(self) -> str:
        """What computes the products with the features, for the record: each rounds its own way."""
        return "oneDNN, packed features" if self.onednn is not None else "torch.mm"

    def forget_rows(self) -> None:
        """Drop the fitted rows' copies: what is left scores other rows (:meth:`scores`) and nothing else."""
        self.XT1 = self.onednn = None

    def evaluate(self, logits, labelled: float):
        """``(softmax - one-hot [K, n], mean cross-entropy)`` at ``logits``, given ``labelled``, the sum of the
        labels' logits. The cross-entropy is summed in float64: its changes, not the gradient, need the digits.

        One fused softmax; each row's log-sum-exp is then its largest logit less the log of its largest
        probability, ``1 / sum(exp(logit - largest))``, which is at least 1 / K and so never underflows."""
        import torch

        probabilities = torch.softmax(logits, 0, out=self.probabilities)
        largest_logits, largest_probabilities = logits.amax(0), probabilities.amax(0)
        logsumexp = float(largest_logits.sum(dtype=torch.float64) - largest_probabilities.log_().sum(dtype=torch.float64))
        return probabilities.scatter_add_(0, self.labels, self.minus_one), (logsumexp - labelled) / self.n

    def labelled(self, logits) -> float:
        """The sum over rows of the label's logit."""
        import torch

        return float(logits.gather(0, self.labels).sum(dtype=torch.float64))

    def point(self, x, logits, residual, cross_entropy: float, labelled: float) -> Point:
        import torch

        return Point(x, logits, self.data_gradient(residual, torch.empty_like(x)), cross_entropy, labelled)

    def evaluated(self, x):
        """``(logits, softmax - one-hot, mean cross-entropy, labelled)`` at parameters ``x``: one product."""
        logits = self.logits(x)
        labelled = self.labelled(logits)
        return (logits, *self.evaluate(logits, labelled), labelled)

    def at(self, x) -> Point:
        return self.point(x, *self.evaluated(x))

    def gradient(self, point: Point):
        import torch

        return torch.addcmul(point.data_gradient, point.x, self.penalised, value=self.penalty)

    def penalty_products(self, *vectors) -> list[list[float]]:
        """The float64 inner products of the penalised parts (W) of ``vectors``, as a nested list."""
        import torch

        W = torch.stack(vectors)[:, :, : self.d].double().flatten(1)
        return (W @ W.T).tolist()

    def value(self, point: Point) -> float:
        return point.cross_entropy + self.penalty_products(point.x)[0][0] * self.penalty / 2


class OneDNNFeatures(NamedTuple):
    """The features of ``XT1`` [D + 1, n] (all but its last row, the ones of the bias) packed once by oneDNN as
    the weight of its linear product, in the two orientations its products want: ``rows`` [n, D] for the
    logits [K, n], ``columns`` [D, n] for the gradient [K, D + 1]. Packed for K rows on the other side, the
    product runs about 1.5 to 3 times as fast as on oneDNN's plain layout, and twice to four times as fast as
    torch.mm (MKL's sgemm) on these skinny shapes. The bias is added apart: packed, a row of ones below 64
    features would cost a third more than the 64."""

    rows: Any
    columns: Any

    @classmethod
    def of(cls, XT1, num_classes: int) -> "OneDNNFeatures | None":
        """``XT1``'s features packed where oneDNN computes its products: float32 on an x86-64 CPU with oneDNN and
        torch's packed linear ops (where its speed was measured), and at least one feature; else None."""
        import platform

        import torch

        if (XT1.device.type != "cpu" or XT1.dtype != torch.float32 or not torch.backends.mkldnn.is_available()
                or platform.machine().lower() not in ("x86_64", "amd64")
                or not all(hasattr(torch.ops.mkldnn, op) for op in ("_reorder_linear_weight", "_linear_pointwise"))
                or len(XT1) < 2):  # no feature left to pack: only the bias's row of ones
            return None
        pack, features = torch.ops.mkldnn._reorder_linear_weight, XT1[:-1]
        return cls(pack(features.T.contiguous(), num_classes), pack(features.contiguous(), num_classes))

    @staticmethod
    def _product(input, packed):
        import torch

        return torch.ops.mkldnn._linear_pointwise(input.contiguous(), packed, None, "none", [], "")

    def logits(self, x, out=None):
        """``x @ XT1`` [K, n]."""
        import torch

        return torch.add(self._product(x[:, :-1], self.rows), x[:, -1:], out=out)

    def gradient(self, residual, scale: float, out):
        """``scale * residual @ XT1.T``, written into ``out`` [K, D + 1]."""
        import torch

        torch.mul(self._product(residual, self.columns), scale, out=out[:, :-1])
        torch.sum(residual, 1, out=out[:, -1]).mul_(scale)
        return out


class ChunkedLogisticObjective(LogisticObjective):
    """The same objective on features kept where they are (CPU tensors, possibly memory-mapped and larger than
    memory, in any float dtype), read in row chunks: each product streams the rows once, and nothing of the
    size of the features is allocated. Standardisation statistics are accumulated over the chunks in float64
    and folded into the parameters (``W / std`` on raw rows, the bias less ``W / std . mean``).

    :param parts: row blocks fitted on as one (train and val for the refit), never concatenated.
    """

    def __init__(self, parts, y, num_classes: int, standardize: bool, dtype, device, rows: int | None = None):
        import torch

        self.parts, self.n, self.d = list(parts), len(y), parts[0].shape[1]
        self.rows = rows
        self.mean = self.std = None
        if standardize:
            self.mean, self.std = (s.to(device, dtype) for s in chunked_mean_std(self.chunks(torch.float64, "cpu")))
        self._setup(y, num_classes, dtype, device)

    products = "torch.addmm on row chunks"

    def chunks(self, dtype=None, device=None):
        """``(first row, rows [m, D])`` over the parts, each chunk converted to ``dtype`` on ``device``."""
        dtype, device = dtype or self.dtype, device or self.device
        offset = 0
        for part in self.parts:
            for start, stop in row_chunks(len(part), self.d, dtype.itemsize, self.rows):
                yield offset + start, part[start:stop].to(device, dtype)
            offset += len(part)

    def folded(self, x):
        """``(W', b')`` [K, D], [K] acting on raw rows as ``x`` acts on standardised ones."""
        W, b = x[:, : self.d], x[:, self.d]
        if self.mean is None:
            return W, b
        W = W / self.std
        return W, b - W @ self.mean

    def logits(self, x, out=None):
        import torch

        out = torch.empty_like(self.trial) if out is None else out
        W, b = self.folded(x)
        for start, rows in self.chunks():
            out[:, start:start + len(rows)] = torch.addmm(b[:, None], W, rows.T)
        return out

    def data_gradient(self, residual, out):
        import torch

        raw = torch.zeros(residual.shape[0], self.d, dtype=self.dtype, device=self.device)
        for start, rows in self.chunks():
            raw.addmm_(residual[:, start:start + len(rows)], rows)
        total = residual.sum(1)
        if self.mean is not None:  # d/dW of W (x - mean) / std
            raw.sub_(total[:, None] * self.mean).div_(self.std)
        out[:, : self.d], out[:, self.d] = raw, total
        return out.div_(self.n)


def standardise_(XT):
    """Standardise feature-major ``XT`` [D, n] in place, each feature by its mean and standard deviation (ddof 1,
    at least 1e-6); return ``(mean, std)``."""
    mean = XT.mean(1)
    std = XT.sub_(mean[:, None]).norm(dim=1).div_((XT.shape[1] - 1) ** 0.5).clamp_(min=1e-6)
    XT.div_(std[:, None])
    return mean, std


def chunked_mean_std(chunks):
    """Per-column mean and standard deviation (ddof 1, at least 1e-6) of the rows of ``chunks`` (float64),
    merged chunk by chunk as Chan, Golub and LeVeque (1979) do: no cancellation of large sums."""
    count, mean, m2 = 0, 0.0, 0.0
    for _, rows in chunks:
        m, chunk_mean = len(rows), rows.mean(0)
        chunk_m2 = (rows - chunk_mean).pow_(2).sum(0)
        delta = chunk_mean - mean
        mean = mean + delta * (m / (count + m))
        m2 = m2 + chunk_m2 + delta.pow(2) * (count * m / (count + m))
        count += m
    return mean, (m2 / (count - 1)).sqrt().clamp(min=1e-6)


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


def pack(objective, init=None):
    """``[W.T | b]`` from ``(W, b)``, or zeros."""
    import torch

    x = torch.zeros(objective.num_classes, objective.d + 1, dtype=objective.dtype, device=objective.device)
    if init is not None:
        x[:, : objective.d], x[:, objective.d] = init[0].T, init[1]
    return x


def unpack(objective, x):
    """``(W [D, K], b [K])`` from ``[W.T | b]``."""
    return x[:, : objective.d].T, x[:, objective.d].clone()
