"""Fewer rows than features: the probe's problem in the span of its rows, the same solution for less work.

An L2 penalty does not change under a rotation of the features, and the optimum of the penalised multinomial
logistic regression has its weights in the span of the (standardised) rows Z: a component of W orthogonal to
every row changes no logit and only adds to the penalty (the representer theorem). With Z = U S V^T (rank r,
V [D, r]), fitting on the rows' coordinates Z V = U S [n, r] is the same problem in r <= n dimensions (W = V B),
and each L-BFGS iteration, two products with the features, costs r / D of one on Z; L-BFGS started at zero takes
the same steps in both bases, so the fits agree to rounding. V comes from the eigenvectors of the Gram matrix
Z Z^T [n, n], cheaper than an SVD of Z when n < D. Directions whose squared singular value is below the
Gram matrix's rounding (n eps of the largest) are left out: collinear features (an image's three channels
resized alike) make r smaller still.
"""
from __future__ import annotations

from benchbone.compute.logistic import standardise_

__all__ = ["RowSpace"]


class RowSpace:
    """The rows of ``X`` [n, D] (standardised first with ``standardize``, as ``LogisticObjective`` would) in the
    basis of their span: ``rows`` [n, r]; calling it gives other rows' coordinates in that basis."""

    def __init__(self, X, standardize: bool):
        import torch

        Z = X.T.clone()  # [D, n], standardised in place like the objective's feature-major copy
        self.mean, self.std = standardise_(Z) if standardize else (None, None)
        gram = Z.T @ Z  # [n, n]
        values, vectors = torch.linalg.eigh(gram)
        keep = values > values[-1].clamp(min=0) * len(gram) * torch.finfo(X.dtype).eps
        singular = values[keep].sqrt()
        self.rows = vectors[:, keep] * singular  # U S
        self.V = (Z @ vectors[:, keep]) / singular  # [D, r]: Z^T U / S, orthonormal columns
        self.rank = int(keep.sum())

    def __call__(self, X):
        """Coordinates of rows ``X`` [m, D] in the basis (transformed as the fitted rows were)."""
        Z = X if self.mean is None else (X - self.mean) / self.std
        return Z @ self.V

    def carry(self, x, other: "RowSpace"):
        """Parameters ``[B.T | b]`` of a fit in ``other``'s basis, written in this one (W = V_other B projected)."""
        import torch

        return torch.cat([x[:, :-1] @ other.V.T @ self.V, x[:, -1:]], dim=1)
