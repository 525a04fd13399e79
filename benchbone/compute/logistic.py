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

from benchbone.compute.chunks import row_chunks

__all__ = ["Point", "LogisticObjective", "OneDNNFeatures", "ChunkedLogisticObjective", "standardise_", "chunked_mean_std", "pack", "unpack"]


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
