"""Transferability estimators: rank backbones for a target task without training on it (``benchbone select``).

Each estimator scores one backbone on one labelled target set, and a higher score means better transfer is
expected. Estimators that read features are called as ``fn(features, labels, source_logits)``:
``features`` float ``[N, D]`` (frozen-backbone features), ``labels`` int ``[N]`` (any integers: they are
mapped to ``0..K-1``), ``source_logits`` float ``[N, S]`` of the backbone's own source-task (ImageNet)
classifier, or None. The static prior reads no target data: ``fn(meta)``. Everything is computed in
float64 with numpy and scipy. An estimator that cannot compute a number (a single class, a NaN in the
input, no source logits where they are needed) raises ``ValueError`` with one line saying why; it never
returns NaN.

| name | from | needs | relative cost |
|---|---|---|---|
| ``logme`` | You et al. 2021 (LogME) | features, labels | 1 |
| ``hscore`` | Bao et al. 2019 (H-score), Ledoit-Wolf shrinkage as in Ibrahim et al. 2022 | features, labels | 0.2 |
| ``knn-loo`` | leave-one-out k-nearest-neighbour accuracy (cosine, k = 5) | features, labels | 0.2 |
| ``gbc`` | Pandy et al. 2022 (Gaussian Bhattacharyya Coefficient) | features, labels | 0.3 |
| ``sfda`` | Shao et al. 2022 (SFDA): its regularised Fisher step only, see ``sfda`` | features, labels | 0.4 |
| ``nce`` | Tran et al. 2019 (Negative Conditional Entropy) | labels, source_logits | 0.01 |
| ``leep`` | Nguyen et al. 2020 (LEEP) | labels, source_logits | 0.01 |
| ``static-prior`` | a hand-set function of parameter count, input size and ImageNet top-1 | meta | 0.001 |

The relative cost is the time of one call with LogME's as the unit (its thin SVD of the features dominates),
measured at N = 5,000, D = 1,024, 50 classes on two CPU cores, where LogME takes about 5 s. The estimators on
features cost O(N D min(N, D)) or O(N D^2 + D^3), except ``knn-loo``, O(N^2 D), which overtakes LogME's cost
from N of about 25,000; those on source logits cost O(N S) and the static prior nothing.

Written from the papers; no code of the authors' repositories was used.
"""
from __future__ import annotations

import math

import numpy as np

from benchbone import hookimpl

# --------------------------------------------------------------------------------------------------
# Input checks shared by every estimator on features.
# --------------------------------------------------------------------------------------------------


def _labels(labels, n: int | None = None) -> tuple[np.ndarray, int]:
    """Labels mapped to 0..K-1, and K; at least two samples and two classes."""
    labels = np.asarray(labels)
    if labels.ndim != 1 or (labels.dtype.kind not in "iub" and not (
            labels.dtype.kind == "f" and np.all(np.isfinite(labels)) and np.all(labels == np.round(labels)))):
        raise ValueError(f"labels must be a 1-d array of integers, got shape {labels.shape} dtype {labels.dtype}")
    if n is not None and len(labels) != n:
        raise ValueError(f"{len(labels)} labels for {n} samples")
    if len(labels) < 2:
        raise ValueError(f"a transferability estimate needs at least 2 samples, got {len(labels)}")
    classes, index = np.unique(labels, return_inverse=True)
    if len(classes) < 2:
        raise ValueError(f"a transferability estimate needs at least 2 classes, got only class {classes[0]}")
    return index.reshape(-1), len(classes)


def _features(features, labels) -> tuple[np.ndarray, np.ndarray, int]:
    """``features`` as float64 ``[N, D]`` (finite), labels as 0..K-1, and K."""
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] == 0:
        raise ValueError(f"features must be a 2-d array [N, D] with D >= 1, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("features contain NaN or infinite values")
    y, k = _labels(labels, len(x))
    return x, y, k


def _logits(source_logits, n: int) -> np.ndarray:
    if source_logits is None:
        raise ValueError("this estimator needs the source classifier's logits, and none were given")
    z = np.asarray(source_logits, dtype=np.float64)
    if z.ndim != 2 or len(z) != n or z.shape[1] < 1:
        raise ValueError(f"source_logits must be [N, S] with one row per sample (N={n}), got shape {z.shape}")
    if not np.all(np.isfinite(z)):
        raise ValueError("source_logits contain NaN or infinite values")
    return z


def _finite(value: float, name: str) -> float:
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} did not give a finite number for these features")
    return value


def _onehot(y: np.ndarray, k: int) -> np.ndarray:
    out = np.zeros((len(y), k))
    out[np.arange(len(y)), y] = 1.0
    return out


# --------------------------------------------------------------------------------------------------
# LogME (You et al. 2021)
# --------------------------------------------------------------------------------------------------


def _evidence(n: int, s2: np.ndarray, z2: np.ndarray, rest: float, alpha: float, beta: float) -> float:
    """log p(y | F, alpha, beta) of the Bayesian linear model y = F w + noise, w ~ N(0, I/alpha), noise ~ N(0, I/beta).

    ``s2`` holds the r non-zero squared singular values of F, ``z2`` the squares of y's coordinates on the r
    left singular vectors and ``rest`` = |y|^2 - sum(z2), the part of y outside F's column space. With
    A = alpha I_D + beta F^T F (D eigenvalues: alpha + beta s2 and, D - r times, alpha), the evidence

        N/2 log beta + D/2 log alpha - N/2 log 2 pi - beta/2 |F m - y|^2 - alpha/2 |m|^2 - 1/2 log det A

    depends on D only through (D/2 - (D - r)/2) log alpha = r/2 log alpha: the D - r zero singular values
    (all of them beyond N when N < D) cancel. ``beta = inf`` is the noiseless limit (only when rest = 0).
    """
    if np.isinf(beta):  # y ~ N(0, F F^T / alpha) on a full-rank F F^T (r = N)
        return float(0.5 * n * math.log(alpha) - 0.5 * np.sum(np.log(s2)) - 0.5 * alpha * np.sum(z2 / s2)
                     - 0.5 * n * math.log(2 * math.pi))
    if np.isinf(alpha) or len(s2) == 0:  # w = 0: y is noise alone
        return float(0.5 * n * math.log(beta) - 0.5 * beta * (np.sum(z2) + rest) - 0.5 * n * math.log(2 * math.pi))
    rho = alpha / beta
    m2 = np.sum(s2 * z2 / (rho + s2) ** 2)  # |m|^2, m = beta A^-1 F^T y
    res = np.sum((rho / (rho + s2)) ** 2 * z2) + rest  # |F m - y|^2
    return float(0.5 * n * math.log(beta) - 0.5 * np.sum(np.log1p(s2 / rho)) - 0.5 * beta * res
                 - 0.5 * alpha * m2 - 0.5 * n * math.log(2 * math.pi))


def logme_fit(n: int, s2: np.ndarray, z2: np.ndarray, rest: float, max_iter: int = 2000,
              tol: float = 1e-10) -> tuple[float, float, float]:
    """Maximise the evidence of one target over alpha and beta: ``(log evidence, alpha, beta)``.

    MacKay's fixed point, as in the paper: gamma = sum beta s2 / (alpha + beta s2), alpha = gamma / |m|^2,
    beta = (N - gamma) / |F m - y|^2, from alpha = beta = 1 until both change by less than ``tol`` (relative).
    The evidence's supremum may lie on the boundary, where the iteration only creeps: alpha = inf (y has
    nothing to do with the features) and, when F F^T has full rank N (so N <= D), beta = inf (the features
    explain y without noise). Both limits have closed forms; the best of the three is returned. Where the
    evidence has no finite maximum (the features reproduce y exactly, with F of rank r < N: y lies in a
    subspace), beta is capped at 1e12 N / |y|^2 (noise at least 1e-6 of y's root mean square), so that such a
    perfect fit scores high and finite rather than infinite.
    """
    alpha, beta = 1.0, 1.0
    candidates = []
    total = float(np.sum(z2) + rest)
    beta_max = 1e12 * n / max(total, 1e-300)
    if len(s2) and np.sum(z2) > 0:
        for _ in range(max_iter):
            rho = alpha / beta  # in the ratio, beta ** 2 / (alpha + beta s2) ** 2 cannot overflow
            gamma = float(np.sum(s2 / (rho + s2)))
            m2 = float(np.sum(s2 * z2 / (rho + s2) ** 2))
            res = float(np.sum((rho / (rho + s2)) ** 2 * z2) + rest)
            if m2 <= 0 or res <= 0 or not (0 < gamma < n):
                break
            new_alpha, new_beta = gamma / m2, min((n - gamma) / res, beta_max)
            if not (np.isfinite(new_alpha) and np.isfinite(new_beta) and new_alpha > 0 and new_beta > 0):
                break
            if new_alpha > 1e100 * new_beta:  # w = 0 to working precision: the alpha = inf candidate below
                break
            done = abs(new_alpha - alpha) <= tol * alpha and abs(new_beta - beta) <= tol * beta
            alpha, beta = new_alpha, new_beta
            if done:
                break
        candidates.append((_evidence(n, s2, z2, rest, alpha, beta), alpha, beta))
    if total > 0:  # alpha = inf: the noise-only model, beta = N / |y|^2
        b = n / total
        candidates.append((_evidence(n, s2, z2, rest, math.inf, b), math.inf, b))
    if len(s2) == n and rest <= 1e-12 * max(total, 1e-300) and np.sum(z2 / s2) > 0:  # beta = inf, alpha closed form
        a = n / float(np.sum(z2 / s2))
        candidates.append((_evidence(n, s2, z2, 0.0, a, math.inf), a, math.inf))
    if not candidates:
        raise ValueError("LogME: a target is all zeros")
    return max(candidates, key=lambda c: c[0])


def logme_classes(features, labels) -> list[tuple[float, float, float]]:
    """``(log evidence, alpha, beta)`` of each class's one-vs-rest target, classes in sorted label order.

    The features are used as they are (no centring or scaling, as in the paper). One thin SVD of F serves
    every class; a rank-deficient F (N < D, repeated or constant features) keeps only its r non-zero singular
    values (those above max(N, D) eps times the largest), and the evidence counts the D - r zero ones exactly
    (they cancel: see ``_evidence``).
    """
    x, y, k = _features(features, labels)
    n = len(x)
    u, s, _ = np.linalg.svd(x, full_matrices=False)
    rank = int(np.sum(s > (s[0] if len(s) else 0) * max(x.shape) * np.finfo(np.float64).eps)) if len(s) else 0
    u, s2 = u[:, :rank], s[:rank] ** 2
    targets = _onehot(y, k)
    z = u.T @ targets  # [r, K]
    total = np.sum(targets ** 2, axis=0)
    return [logme_fit(n, s2, z[:, c] ** 2, max(float(total[c] - np.sum(z[:, c] ** 2)), 0.0)) for c in range(k)]


def logme(features, labels, source_logits=None) -> float:
    """LogME: the mean over classes of the maximum log evidence per sample of a one-vs-rest linear model.

    For each class k, the target is the indicator y_k (1 for the class's samples, 0 otherwise), modelled as
    y_k = F w + noise with a Gaussian prior on w (precision alpha) and Gaussian noise (precision beta);
    alpha and beta maximise the evidence p(y_k | F) (``logme_fit``). The score is
    mean_k max_{alpha, beta} log p(y_k | F, alpha, beta) / N (``logme_classes`` gives each class's evidence,
    alpha and beta).
    """
    fits = logme_classes(features, labels)
    return _finite(np.mean([evidence for evidence, _, _ in fits]) / len(np.asarray(labels)), "LogME")


# --------------------------------------------------------------------------------------------------
# Regularised H-score (Bao et al. 2019; shrinkage: Ibrahim et al. 2022)
# --------------------------------------------------------------------------------------------------


def row_space(x: np.ndarray) -> np.ndarray:
    """``x`` [N, D] in coordinates of an orthonormal basis of its row space, [N, R] with R <= min(N, D).

    Scatter and covariance matrices of the rows, class means, and their traces and Frobenius norms all live in
    that space, so estimators built from them give the same scores on these coordinates with O(N^2 D) work
    instead of O(D^3) when N < D (the screen's 200 images of a 1,280-feature backbone: about 30x faster)."""
    if x.shape[0] >= x.shape[1]:
        return x
    values, vectors = np.linalg.eigh(x @ x.T)  # the Gram matrix: x = U S V^T gives x x^T = U S^2 U^T, x V = U S
    keep = values > values.max(initial=0.0) * max(x.shape) * np.finfo(np.float64).eps
    return vectors[:, keep] * np.sqrt(values[keep])


def ledoit_wolf(x: np.ndarray, dim: int | None = None) -> tuple[np.ndarray, float]:
    """Ledoit and Wolf's (2004) shrinkage covariance of ``x`` [N, D], centred here: ``(covariance, shrinkage)``.

    S = X^T X / N (X centred), mu = tr S / D; shrinkage = min(b2, d2) / d2 with
    d2 = |S - mu I|_F^2 / D and b2 = (sum_i |x_i x_i^T - S|_F^2) / (N^2 D); the estimate is
    (1 - shrinkage) S + shrinkage mu I. Constant features (S = 0) give shrinkage 0 and a zero matrix.
    ``dim``: the dimension D of the features when ``x`` holds their ``row_space`` coordinates (default: its own).
    """
    x = x - x.mean(axis=0)
    n, d = x.shape
    dim = d if dim is None else dim
    s = x.T @ x / n
    mu = np.trace(s) / dim
    d2 = (np.sum(s ** 2) - 2 * mu * np.trace(s) + dim * mu ** 2) / dim  # |S - mu I|_F^2 / D
    sq = np.sum(x ** 2, axis=1)
    b2 = (np.sum(sq ** 2) / n - np.sum(s ** 2)) / (n * dim)  # (1/N^2) sum_i |x_i x_i^T - S|^2, over D
    shrinkage = float(min(max(b2, 0.0), d2) / d2) if d2 > 0 else 0.0
    out = (1 - shrinkage) * s
    out[np.diag_indices(d)] += shrinkage * mu
    return out, shrinkage


def hscore(features, labels, source_logits=None) -> float:
    """Regularised H-score: tr(Sigma_a^+ (1 - a) Sigma_between), with Sigma_a the Ledoit-Wolf shrinkage estimate
    (1 - a) Sigma + a (tr Sigma / D) I of the feature covariance.

    Bao et al.'s H-score is tr(cov(f)^-1 cov(E[f | y])): how far apart the class means are, in units of the
    feature covariance. Ibrahim et al. (2022) replace cov(f), singular or ill-conditioned when N is small or
    the features redundant, by its shrinkage estimate, and scale the between-class covariance by the same
    1 - a. Sigma_between = sum_k (n_k / N) (mu_k - mu)(mu_k - mu)^T. The inverse is a pseudo-inverse, so that
    constant features (both matrices zero) score 0.
    """
    x, y, k = _features(features, labels)
    dim = x.shape[1]
    x = row_space(x - x.mean(axis=0))  # the complement of the row space adds nothing to the trace
    cov, shrinkage = ledoit_wolf(x, dim)
    counts = np.bincount(y, minlength=k).astype(np.float64)
    means = np.zeros((k, x.shape[1]))
    np.add.at(means, y, x)
    means /= counts[:, None]
    between = (means * (counts / len(x))[:, None]).T @ means
    values, vectors = np.linalg.eigh(cov)
    keep = values > values.max(initial=0.0) * dim * np.finfo(np.float64).eps
    if not np.any(keep):
        return 0.0
    v = vectors[:, keep]
    score = (1 - shrinkage) * np.sum((v.T @ between @ v).diagonal() / values[keep])
    return _finite(score, "H-score")


# --------------------------------------------------------------------------------------------------
# Leave-one-out k-nearest-neighbour accuracy
# --------------------------------------------------------------------------------------------------


def knn_loo(features, labels, source_logits=None, *, k: int = 5, metric: str = "cosine", chunk: int = 512) -> float:
    """Leave-one-out k-nearest-neighbour accuracy: each sample is classified by the majority class of its ``k``
    nearest other samples, and the score is the share classified right.

    ``metric`` is "cosine" (default: rows scaled to unit length, nearest = most similar; an all-zero row is
    at similarity 0 from everything) or "euclidean". k = 5 by default (at most N - 1); a vote tied between
    classes goes to the smallest class index, as scikit-learn's ``KNeighborsClassifier`` does. Queries go in
    chunks of ``chunk`` rows: memory is O(chunk N), time O(N^2 D).
    """
    x, y, n_classes = _features(features, labels)
    n = len(x)
    if metric not in ("cosine", "euclidean"):
        raise ValueError(f"knn-loo: metric must be 'cosine' or 'euclidean', got {metric!r}")
    if int(k) < 1:
        raise ValueError(f"knn-loo: k must be at least 1, got {k}")
    k = min(int(k), n - 1)
    if metric == "cosine":
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        x = np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)
        sq = np.zeros(n)
    else:
        sq = np.sum(x ** 2, axis=1)
    right = 0
    for start in range(0, n, chunk):
        rows = np.arange(start, min(start + chunk, n))
        closeness = 2 * x[rows] @ x.T - sq[None, :]  # cosine: 2 similarity; euclidean: |q|^2 - distance^2
        closeness[np.arange(len(rows)), rows] = -np.inf  # leave the query out
        nearest = np.argpartition(-closeness, k - 1, axis=1)[:, :k]
        votes = np.zeros((len(rows), n_classes))
        np.add.at(votes, (np.repeat(np.arange(len(rows)), k), y[nearest].reshape(-1)), 1.0)
        right += int(np.sum(np.argmax(votes, axis=1) == y[rows]))  # argmax: the smallest index among ties
    return right / n


# --------------------------------------------------------------------------------------------------
# GBC (Pandy et al. 2022)
# --------------------------------------------------------------------------------------------------


def _pca(x: np.ndarray, dim: int | None) -> np.ndarray:
    """``x`` centred and projected on its first ``dim`` principal components (all of them when None).

    The components come from the eigenvectors of the smaller Gram matrix (X^T X or X X^T), several times
    faster than an SVD of X and as accurate for the leading components, which are all that is kept."""
    from scipy.linalg import eigh

    x = x - x.mean(axis=0)
    n, d = x.shape
    if dim is None or dim >= min(n, d):
        return x
    if d <= n:
        _, vectors = eigh(x.T @ x, subset_by_index=[d - dim, d - 1])
        return x @ vectors[:, ::-1]
    values, vectors = eigh(x @ x.T, subset_by_index=[n - dim, n - 1])  # x v_i = u_i s_i: scores u_i s_i
    return vectors[:, ::-1] * np.sqrt(np.clip(values[::-1], 0, None))


def gbc(features, labels, source_logits=None, *, pca_dim: int | None = 64) -> float:
    """Gaussian Bhattacharyya Coefficient: minus the summed overlap of every pair of class distributions.

    The features are projected on their first ``pca_dim`` principal components (None: kept whole), then each
    class c gets a Gaussian with diagonal covariance: its mean mu_c and per-dimension variance v_c (maximum
    likelihood, floored at 1e-6 times the mean variance of the projected features, so that a class of one
    sample or a constant dimension stays finite). For two classes, with v = (v_i + v_j) / 2 per dimension, the
    Bhattacharyya distance is DB = 1/8 sum (mu_i - mu_j)^2 / v + 1/2 sum log(v / sqrt(v_i v_j)) and the
    coefficient BC = exp(-DB), 1 for identical distributions and 0 for disjoint ones. The score is
    -sum over ordered pairs i != j of BC_ij, between -K(K-1) and 0.
    """
    x, y, k = _features(features, labels)
    if pca_dim is not None and int(pca_dim) < 1:
        raise ValueError(f"gbc: pca_dim must be at least 1 or None, got {pca_dim}")
    x = _pca(x, None if pca_dim is None else int(pca_dim))
    floor = 1e-6 * float(np.mean(np.var(x, axis=0)))
    floor = floor if floor > 0 else 1e-12
    counts = np.bincount(y, minlength=k).astype(np.float64)
    means = np.zeros((k, x.shape[1]))
    np.add.at(means, y, x)
    means /= counts[:, None]
    variances = np.zeros((k, x.shape[1]))
    np.add.at(variances, y, (x - means[y]) ** 2)
    variances = variances / counts[:, None] + floor
    logv = np.log(variances)
    total = 0.0
    for i in range(k):
        v = (variances[i] + variances) / 2  # [K, D]
        db = np.sum((means[i] - means) ** 2 / v, axis=1) / 8 + \
            np.sum(np.log(v) - (logv[i] + logv) / 2, axis=1) / 2
        bc = np.exp(-db)
        total += float(np.sum(bc) - bc[i])
    return _finite(-total, "GBC")


# --------------------------------------------------------------------------------------------------
# SFDA (Shao et al. 2022): the regularised Fisher discriminant step
# --------------------------------------------------------------------------------------------------


def scatter(x: np.ndarray, y: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Within-class and between-class scatter matrices, per sample (divided by N), and the class means."""
    counts = np.bincount(y, minlength=k).astype(np.float64)
    means = np.zeros((k, x.shape[1]))
    np.add.at(means, y, x)
    means /= counts[:, None]
    centred = x - means[y]
    within = centred.T @ centred / len(x)
    spread = means - x.mean(axis=0)
    between = (spread * (counts / len(x))[:, None]).T @ spread
    return within, between, means


def fisher_projection(x: np.ndarray, y: np.ndarray, k: int, a: float = 1.0, dim: int | None = None) -> np.ndarray:
    """The regularised FDA projection U [D, K-1] of SFDA: the top K-1 generalised eigenvectors of
    S_B u = eta ((1 - lam) S_W + lam I) u, normalised so that U^T ((1 - lam) S_W + lam I) U = I, with
    lam = exp(-a sigma_max(S_B)) (strong regularisation when the classes are close together, little when they
    are far apart; a = 1). A jitter of 1e-10 tr/D keeps the regularised S_W positive definite when lam
    underflows and S_W is singular (N < D). ``dim``: the features' D when ``x`` holds their ``row_space``
    coordinates (the jitter's trace counts lam over all D)."""
    from scipy.linalg import eigh

    within, between, _ = scatter(x, y, k)
    d = x.shape[1]
    dim = d if dim is None else dim
    top = float(np.linalg.eigvalsh(between)[-1]) if d else 0.0
    lam = math.exp(-a * max(top, 0.0))
    reg = (1 - lam) * within
    reg[np.diag_indices(d)] += lam
    reg[np.diag_indices(d)] += 1e-10 * max(((1 - lam) * np.trace(within) + lam * dim) / max(dim, 1), 1e-300)
    _, vectors = eigh(between, reg)  # ascending generalised eigenvalues
    return vectors[:, ::-1][:, :max(min(k - 1, d), 1)]


def sfda(features, labels, source_logits=None, *, a: float = 1.0) -> float:
    """SFDA's Fisher step: the mean probability of the true class under a linear discriminant in the regularised
    Fisher space (higher: classes already separate linearly after a cheap projection).

    The features (centred) are projected by ``fisher_projection``: x' = U^T x, where the within-class
    covariance is (close to) the identity. With the projected class means mu'_c and class frequencies pi_c,
    the discriminant delta_c(x') = x'.mu'_c - |mu'_c|^2 / 2 + log pi_c is the Gaussian Bayes classifier with
    shared identity covariance; p(c | x) = softmax_c delta_c, and the score is mean_i p(y_i | x_i).

    Left out: the paper's second, "self-challenging" step (ConfMix), which mixes the features of hard examples
    (those the first step classifies with low confidence) and repeats the projection and scoring on the
    mixed features. This function returns the first step's score, which the paper reports as an ablation.
    """
    x, y, k = _features(features, labels)
    dim = x.shape[1]
    x = row_space(x - x.mean(axis=0))  # every scatter matrix lives in the row space
    u = fisher_projection(x, y, k, a, dim)
    p = x @ u
    counts = np.bincount(y, minlength=k).astype(np.float64)
    means = np.zeros((k, p.shape[1]))
    np.add.at(means, y, p)
    means /= counts[:, None]
    delta = p @ means.T - 0.5 * np.sum(means ** 2, axis=1) + np.log(counts / len(p))
    delta -= delta.max(axis=1, keepdims=True)
    prob = np.exp(delta)
    prob /= prob.sum(axis=1, keepdims=True)
    return _finite(np.mean(prob[np.arange(len(y)), y]), "SFDA")


# --------------------------------------------------------------------------------------------------
# NCE (Tran et al. 2019) and LEEP (Nguyen et al. 2020): from the source classifier's outputs
# --------------------------------------------------------------------------------------------------


def nce(features, labels, source_logits) -> float:
    """Negative Conditional Entropy -H(Y | Z) in nats, Z the source classifier's predicted (argmax) class.

    From the empirical joint distribution P(y, z) of target labels and source predictions over the N samples:
    -H(Y | Z) = sum_{y,z} P(y, z) log (P(y, z) / P(z)). 0 when the source prediction determines the target
    label; -H(Y) when it says nothing about it. ``features`` are not used.
    """
    y, k = _labels(labels)
    z = np.argmax(_logits(source_logits, len(y)), axis=1)
    _, z = np.unique(z, return_inverse=True)
    joint = np.zeros((k, int(z.max()) + 1))
    np.add.at(joint, (y, z.reshape(-1)), 1.0)
    joint /= len(y)
    pz = joint.sum(axis=0, keepdims=True)
    nz = joint > 0
    return _finite(np.sum(joint[nz] * np.log((joint / pz)[nz])), "NCE")


def leep(features, labels, source_logits) -> float:
    """LEEP: the mean log-likelihood of the target labels under the "expected empirical predictor".

    theta(x) = softmax(source logits) [N, S]; the empirical joint P(y, z) = 1/N sum_{i: y_i = y} theta(x_i)_z,
    the conditional P(y | z) = P(y, z) / P(z); LEEP = 1/N sum_i log sum_z P(y_i | z) theta(x_i)_z (<= 0; higher
    is better). ``source_logits`` are logits (before softmax). ``features`` are not used.
    """
    y, k = _labels(labels)
    logits = _logits(source_logits, len(y))
    theta = np.exp(logits - logits.max(axis=1, keepdims=True))
    theta /= theta.sum(axis=1, keepdims=True)
    joint = _onehot(y, k).T @ theta / len(y)  # [K, S]
    pz = joint.sum(axis=0, keepdims=True)
    conditional = np.divide(joint, pz, out=np.zeros_like(joint), where=pz > 0)
    likelihood = np.sum(theta * conditional[y], axis=1)
    if np.any(likelihood <= 0):
        raise ValueError("LEEP: a sample's label has zero likelihood (source probabilities underflowed)")
    return _finite(np.mean(np.log(likelihood)), "LEEP")


# --------------------------------------------------------------------------------------------------
# A static prior from the backbone's metadata
# --------------------------------------------------------------------------------------------------

TOP1_KEYS = ("imagenet_top1", "source_top1", "top1")
PARAM_KEYS = ("params_m", "num_params", "params", "param_count")


def _input_side(meta: dict) -> float:
    size = meta.get("input_size") or 224
    size = float(size[-1] if isinstance(size, (tuple, list)) else size)
    if not (math.isfinite(size) and size > 0):
        raise ValueError(f"static-prior: input_size must be positive, got {meta.get('input_size')!r}")
    return size


def static_prior(meta: dict) -> float:
    """A prior that reads no target data: T + 0.01 log2(P) + 0.01 log2(R / 224).

    ``meta`` keys: ``imagenet_top1`` (or ``source_top1``, ``top1``): the published ImageNet top-1 accuracy, in
    percent (a value of at most 1 is read as a fraction); ``params_m``: parameters in millions (or
    ``num_params``/``params``/``param_count``: a count, read as millions when below 10,000); ``input_size``:
    the input side in pixels (an int, or a tuple whose last entry is the width; default 224); ``pretrained``:
    False for randomly initialised weights.

    T is the top-1 as a fraction (Kornblith et al. 2019: ImageNet accuracy predicts transfer accuracy); when
    the metadata give none, T = clip(0.62 + 0.04 log2(P), 0.5, 0.88), a rough hand-set trend of published
    top-1 against size (3.5 M parameters: 0.69; 25 M: 0.81; 88 M: 0.88). Random weights get T = 0. The size
    terms prefer, by a point of accuracy per doubling, larger networks and larger inputs, which transfer
    better at equal source accuracy. It is a heuristic, not fitted to any benchmark: a tie-breaker and a
    default when no target data are at hand, and it needs the top-1 or the parameter count. A backbone with
    zero parameters (a pixels baseline) has learned nothing: T = 0 and no parameter term.
    """
    if not isinstance(meta, dict):
        raise ValueError(f"static-prior needs a dict of backbone metadata, got {type(meta).__name__}")
    top1 = next((meta[key] for key in TOP1_KEYS if meta.get(key) is not None), None)
    params_key = next((key for key in PARAM_KEYS if meta.get(key) is not None), None)
    params = meta[params_key] if params_key else None
    if top1 is None and params is None:
        raise ValueError("static-prior needs the backbone's ImageNet top-1 (imagenet_top1) or its parameter count "
                         "(params_m)")
    p_m = None
    if params is not None and float(params) == 0:  # no learned weights (a pixels baseline): nothing transfers
        return _finite(0.01 * math.log2(_input_side(meta) / 224), "static-prior")
    if params is not None:
        p_m = float(params)
        if not (math.isfinite(p_m) and p_m > 0):
            raise ValueError(f"static-prior: the parameter count must be positive, got {params!r}")
        p_m = p_m / 1e6 if p_m >= 10_000 and params_key != "params_m" else p_m
    size = _input_side(meta)
    if meta.get("pretrained") is False:
        t = 0.0
    elif top1 is not None:
        t = float(top1)
        t = t / 100 if t > 1 else t
        if not (math.isfinite(t) and 0 <= t <= 1):
            raise ValueError(f"static-prior: top-1 must be a percentage, got {top1!r}")
    else:
        t = min(max(0.62 + 0.04 * math.log2(p_m), 0.5), 0.88)
    score = t + (0.01 * math.log2(p_m) if p_m is not None else 0.0) + 0.01 * math.log2(size / 224)
    return _finite(score, "static-prior")


# --------------------------------------------------------------------------------------------------
# Registration
# --------------------------------------------------------------------------------------------------

ESTIMATORS = {
    # name: (function, relative cost, needs, description)
    "logme": (logme, 1.0, ("features", "labels"),
              "LogME (You et al. 2021): mean per-sample log evidence of one-vs-rest Bayesian linear models"),
    "hscore": (hscore, 0.2, ("features", "labels"),
               "regularised H-score (Bao et al. 2019; Ledoit-Wolf shrinkage, Ibrahim et al. 2022)"),
    "knn-loo": (knn_loo, 0.2, ("features", "labels"),
                "leave-one-out 5-nearest-neighbour accuracy, cosine"),
    "gbc": (gbc, 0.3, ("features", "labels"),
            "Gaussian Bhattacharyya coefficient (Pandy et al. 2022): -sum of class-pair overlaps, PCA to 64"),
    "sfda": (sfda, 0.4, ("features", "labels"),
             "SFDA (Shao et al. 2022), regularised Fisher step only (no ConfMix): mean true-class probability"),
    "nce": (nce, 0.01, ("labels", "source_logits"),
            "NCE (Tran et al. 2019): -H(target label | source argmax class)"),
    "leep": (leep, 0.01, ("labels", "source_logits"),
             "LEEP (Nguyen et al. 2020): log-likelihood of the expected empirical predictor"),
    "static-prior": (static_prior, 0.001, ("meta",),
                     "ImageNet top-1 + 0.01 log2(params in M) + 0.01 log2(input/224); no target data"),
}


@hookimpl
def benchbone_register_estimators(register):
    for name, (fn, cost, needs, description) in ESTIMATORS.items():
        register(name, fn, cost=cost, needs=needs, description=description)
