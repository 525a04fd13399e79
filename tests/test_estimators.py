"""Transferability estimators (plugins/transferability.py), each against an independent computation: another
implementation (transformer-ranker's LogME and H-score, scikit-learn's Ledoit-Wolf, k-NN, PCA and mutual
information) or the paper's formula evaluated another way here (the marginal likelihood with scipy, numerical
integration, explicit sums). Cases: N > D, N < D, a class of one sample, constant features."""
from __future__ import annotations

import importlib
import importlib.util
import itertools
import math
import sys
import textwrap
import types
from pathlib import Path

import numpy as np
import pytest
import scipy.integrate
import scipy.linalg
import scipy.optimize
import scipy.stats

from benchbone_plugins import transferability as tr


def blobs(n, d, k, *, sep=1.0, seed=0, singleton=False):
    """Gaussian classes with random means; every class present; with ``singleton`` the last class has one sample."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % (k - 1 if singleton else k)
    if singleton:
        y[-1] = k - 1
    y = rng.permutation(y)
    x = rng.normal(size=(n, d)) + sep * rng.normal(size=(k, d))[y]
    return x, y


CASES = {
    "n>d": {"n": 60, "d": 5, "k": 3},
    "n<d": {"n": 14, "d": 30, "k": 3},
    "n=d": {"n": 20, "d": 20, "k": 4},
    "singleton": {"n": 30, "d": 6, "k": 4, "singleton": True},
    "singleton-n<d": {"n": 12, "d": 25, "k": 3, "singleton": True},
}


def case(name, seed=0):
    spec = dict(CASES[name])
    return blobs(spec.pop("n"), spec.pop("d"), spec.pop("k"), seed=seed, **spec)


def constant(n=20, d=6, k=3, value=0.7):
    return np.full((n, d), value), np.arange(n) % k


def transformer_ranker_estimators():
    """transformer-ranker's LogME and HScore (torch), imported without the package's ``__init__``, which
    imports transformers and datasets (8 s): its estimator modules need only torch."""
    pytest.importorskip("torch")
    spec = importlib.util.find_spec("transformer_ranker")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("transformer-ranker (in the test extra) is not installed")
    if "_transformer_ranker_estimators" not in sys.modules:
        package = types.ModuleType("_transformer_ranker_estimators")
        package.__path__ = [str(Path(next(iter(spec.submodule_search_locations))) / "estimators")]
        sys.modules[package.__name__] = package
    return types.SimpleNamespace(**{name: getattr(importlib.import_module(f"_transformer_ranker_estimators.{module}"),
                                                  name) for module, name in (("logme", "LogME"), ("hscore", "HScore"))})


# ------------------------------------------------------------------------------------------------
# LogME
# ------------------------------------------------------------------------------------------------


def marginal_loglik(f, y, alpha, beta):
    """log N(y; 0, F F^T / alpha + I / beta): the evidence of the Bayesian linear model, in closed form."""
    cov = f @ f.T / alpha + (np.eye(len(y)) / beta if math.isfinite(beta) else 0)
    if not math.isfinite(alpha):
        cov = np.eye(len(y)) / beta
    return scipy.stats.multivariate_normal(np.zeros(len(y)), cov).logpdf(y)


def cholesky_loglik(f, y, log_alpha, log_beta):
    """The same, through a Cholesky factor (valid where scipy's density calls the covariance singular)."""
    cov = f @ f.T * math.exp(-log_alpha) + np.eye(len(y)) * math.exp(-log_beta)
    try:
        c, low = scipy.linalg.cho_factor(cov, lower=True)
    except np.linalg.LinAlgError:
        return -np.inf
    return float(-0.5 * y @ scipy.linalg.cho_solve((c, low), y) - np.sum(np.log(np.diag(c)))
                 - 0.5 * len(y) * math.log(2 * math.pi))


@pytest.mark.parametrize("name", list(CASES))
def test_logme_evidence_is_the_marginal_likelihood_at_its_alpha_beta(name):
    x, y = case(name)
    fits = tr.logme_classes(x, y)
    for c, (evidence, alpha, beta) in enumerate(fits):
        target = (y == c).astype(float)
        assert evidence == pytest.approx(marginal_loglik(x, target, alpha, beta), abs=1e-8, rel=1e-10)
    assert tr.logme(x, y) == pytest.approx(np.mean([marginal_loglik(x, (y == c) * 1.0, a, b)
                                                    for c, (_, a, b) in enumerate(fits)]) / len(y), abs=1e-10)


@pytest.mark.parametrize("name", [*CASES, "constant", "duplicated-columns"])
def test_logme_is_the_maximum_evidence(name):
    """No (alpha, beta) found by a general optimiser has a higher evidence than LogME's (N < D included)."""
    if name == "constant":
        x, y = constant()
    elif name == "duplicated-columns":
        x, y = case("n>d")
        x = np.hstack([x, x[:, :3], 2 * x[:, :3]])
    else:
        x, y = case(name)
    fits = tr.logme_classes(x, y)
    for c, (evidence, alpha, beta) in enumerate(fits):
        target = (y == c).astype(float)
        best = -np.inf
        for start in ([0.0, 0.0], [5.0, 5.0], [-3.0, 10.0], [8.0, 1.0]):
            found = scipy.optimize.minimize(lambda p, t=target: -cholesky_loglik(x, t, *p), start, method="Nelder-Mead",
                                            bounds=[(-15, 40), (-15, 28)],
                                            options={"xatol": 1e-9, "fatol": 1e-12, "maxiter": 4000})
            best = max(best, -found.fun)
        assert evidence >= best - 1e-6, (c, evidence, best, alpha, beta)
        assert evidence <= best + 1e-4 * max(1.0, abs(best)), (c, evidence, best)  # a supremum, not beyond it


def test_logme_at_n_below_d_reaches_the_noiseless_limit_exactly():
    """With N < D and F F^T of full rank, the evidence's supremum is at beta = inf; LogME returns it in closed form."""
    x, y = case("n<d")
    for c, (evidence, alpha, beta) in enumerate(tr.logme_classes(x, y)):
        target = (y == c).astype(float)
        if math.isinf(beta):
            assert evidence == pytest.approx(
                scipy.stats.multivariate_normal(np.zeros(len(y)), x @ x.T / alpha).logpdf(target), abs=1e-8)


def test_logme_agrees_with_transformer_ranker_where_it_applies():
    estimators = transformer_ranker_estimators()
    import torch

    worst = 0.0
    for n, d, k, seed in [(300, 20, 4, 0), (150, 60, 6, 1), (80, 80, 3, 2), (100, 30, 2, 3)]:  # N >= D
        x, y = blobs(n, d, k, sep=0.4, seed=seed)
        theirs = estimators.LogME().fit(torch.tensor(x), torch.tensor(y), max_iter=3000, tol=1e-13)
        worst = max(worst, abs(tr.logme(x, y) - float(theirs)))
    # their update divides by |m|^2 + 1e-5 rather than |m|^2: about 1e-8 apart
    assert worst < 1e-6
    # (with N < D, transformer-ranker's LogME, like the authors' code, does not maximise the evidence: see above)


def test_logme_singleton_constant_and_zero_features_are_finite():
    for x, y in [case("singleton"), case("singleton-n<d"), constant(), constant(value=0.0)]:
        assert math.isfinite(tr.logme(x, y))
    x, y = constant(value=0.0)  # no features at all: every target is noise, beta = N / |y|^2
    expected = np.mean([scipy.stats.norm(0, math.sqrt(np.mean(t ** 2))).logpdf(t).sum()
                        for t in ((y == c) * 1.0 for c in range(3))]) / len(y)
    assert tr.logme(x, y) == pytest.approx(expected, abs=1e-10)


def test_logme_features_that_reproduce_the_labels_score_high_and_finite():
    y = np.arange(15) % 3
    x = np.eye(3)[y]  # the one-hot labels themselves: an unbounded evidence, capped
    assert math.isfinite(tr.logme(x, y)) and tr.logme(x, y) > tr.logme(*case("n>d"))


# ------------------------------------------------------------------------------------------------
# H-score
# ------------------------------------------------------------------------------------------------


def hscore_reference(x, y):
    """tr(LW^-1 (1 - a) cov(E[f | y])) with scikit-learn's Ledoit-Wolf and the class means spread over the samples."""
    from sklearn.covariance import ledoit_wolf

    cov, shrinkage = ledoit_wolf(x)
    means = np.stack([x[y == c].mean(axis=0) for c in np.unique(y)])
    per_sample = means[np.searchsorted(np.unique(y), y)]
    between = np.cov(per_sample.T, bias=True).reshape(x.shape[1], x.shape[1])
    return float(np.trace(np.linalg.solve(cov, (1 - shrinkage) * between)))


@pytest.mark.parametrize("name", list(CASES))
def test_ledoit_wolf_agrees_with_scikit_learn(name):
    from sklearn.covariance import ledoit_wolf

    x, _ = case(name)
    cov, shrinkage = tr.ledoit_wolf(x)
    theirs, their_shrinkage = ledoit_wolf(x)
    assert shrinkage == pytest.approx(their_shrinkage, abs=1e-12)
    assert np.max(np.abs(cov - theirs)) < 1e-12


@pytest.mark.parametrize("name", list(CASES))
def test_hscore_agrees_with_the_formula(name):
    x, y = case(name)
    assert tr.hscore(x, y) == pytest.approx(hscore_reference(x, y), rel=1e-9)


def test_hscore_agrees_with_transformer_ranker():
    estimators = transformer_ranker_estimators()
    import torch

    worst = 0.0
    for name in CASES:
        x, y = case(name)
        theirs = float(estimators.HScore().fit(torch.tensor(x), torch.tensor(y)))
        # their between-class covariance divides by N - 1, the feature covariance (and ours, both) by N
        worst = max(worst, abs(tr.hscore(x, y) / (theirs * (len(y) - 1) / len(y)) - 1))
    assert worst < 1e-7  # they scale class means by torch.sqrt of an integer count: float32, 3e-8 relative


def test_hscore_of_constant_features_is_zero():
    assert tr.hscore(*constant()) == 0.0


# ------------------------------------------------------------------------------------------------
# k-NN, leave one out
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize("k", [1, 5])
@pytest.mark.parametrize("name", ["n>d", "n<d", "singleton"])
def test_knn_loo_agrees_with_scikit_learn(name, k, metric):
    from sklearn.model_selection import LeaveOneOut, cross_val_predict
    from sklearn.neighbors import KNeighborsClassifier

    x, y = case(name)
    knn = KNeighborsClassifier(n_neighbors=k, metric=metric, algorithm="brute" if metric == "cosine" else "kd_tree")
    expected = np.mean(cross_val_predict(knn, x, y, cv=LeaveOneOut()) == y)
    assert tr.knn_loo(x, y, k=k, metric=metric, chunk=7) == pytest.approx(expected, abs=1e-12)


def test_knn_loo_default_and_constant_features():
    x, y = case("n>d")
    assert tr.knn_loo(x, y) == tr.knn_loo(x, y, k=5, metric="cosine")
    assert 0.0 <= tr.knn_loo(*constant()) <= 1.0 and 0.0 <= tr.knn_loo(*constant(value=0.0)) <= 1.0
    with pytest.raises(ValueError, match="metric"):
        tr.knn_loo(x, y, metric="manhattan")


# ------------------------------------------------------------------------------------------------
# GBC
# ------------------------------------------------------------------------------------------------


def bc_by_integration(m1, v1, m2, v2):
    """Bhattacharyya coefficient of two diagonal Gaussians: the integral of sqrt(p q), one dimension at a time."""
    total = 1.0
    for a, va, b, vb in zip(m1, v1, m2, v2):
        p, q = scipy.stats.norm(a, math.sqrt(va)), scipy.stats.norm(b, math.sqrt(vb))
        sa, sb = math.sqrt(va), math.sqrt(vb)  # pieces on each density's own scale: one may be very narrow
        edges = sorted({m + f * sd for m, sd in ((a, sa), (b, sb)) for f in (-60, -5, 0, 5, 60)})
        value = sum(scipy.integrate.quad(lambda t, p=p, q=q: math.sqrt(p.pdf(t) * q.pdf(t)), lo, hi, limit=400,
                                         epsabs=1e-15, epsrel=1e-12)[0] for lo, hi in itertools.pairwise(edges))
        total *= value
    return total


@pytest.mark.parametrize("name", ["n>d", "singleton", "small-n<d"])
def test_gbc_agrees_with_numerical_integration(name):
    if name == "small-n<d":
        x, y = blobs(5, 8, 2, sep=0.7, seed=4)
    else:
        x, y = blobs(40, 3, 3, sep=0.8, seed=5, singleton=name == "singleton")
    floor = 1e-6 * np.mean(np.var(x, axis=0))  # the documented variance floor
    classes = np.unique(y)
    stats = [(x[y == c].mean(axis=0), x[y == c].var(axis=0) + floor) for c in classes]
    expected = -sum(bc_by_integration(*stats[i], *stats[j]) for i in range(len(classes))
                    for j in range(len(classes)) if i != j)
    assert tr.gbc(x, y, pca_dim=None) == pytest.approx(expected, rel=1e-7, abs=1e-12)


def test_gbc_projects_on_principal_components_like_scikit_learn():
    from sklearn.decomposition import PCA

    x, y = blobs(80, 12, 4, sep=0.5, seed=6)
    reduced = PCA(n_components=3).fit_transform(x)
    assert tr.gbc(x, y) == pytest.approx(tr.gbc(x, y, pca_dim=None), rel=1e-12)  # D = 12 < 64: nothing to reduce
    assert tr.gbc(x, y, pca_dim=3) == pytest.approx(tr.gbc(reduced, y, pca_dim=None), rel=1e-10)
    x, y = blobs(30, 50, 3, sep=0.5, seed=7)  # N < D: the components come from X X^T
    assert tr.gbc(x, y, pca_dim=5) == pytest.approx(tr.gbc(PCA(n_components=5).fit_transform(x), y, pca_dim=None),
                                                    rel=1e-10)


def test_gbc_of_constant_features_is_total_overlap():
    x, y = constant(k=4)
    assert tr.gbc(x, y) == pytest.approx(-4 * 3)


# ------------------------------------------------------------------------------------------------
# SFDA (regularised Fisher step)
# ------------------------------------------------------------------------------------------------


def sfda_reference(x, y, a=1.0):
    """The Fisher step another way: whiten by ((1 - lam) S_W + lam I)^(-1/2), take the top K-1 principal axes of
    the whitened S_B, then the softmax of the Gaussian discriminant with identity covariance."""
    n, d = x.shape
    x = x - x.mean(axis=0)
    classes = np.unique(y)
    k = len(classes)
    s_w = sum(((x[y == c] - x[y == c].mean(0)).T @ (x[y == c] - x[y == c].mean(0))) for c in classes) / n
    s_b = sum(np.sum(y == c) * np.outer(x[y == c].mean(0), x[y == c].mean(0)) for c in classes) / n
    lam = math.exp(-a * np.linalg.eigvalsh(s_b).max())
    reg = (1 - lam) * s_w + lam * np.eye(d)
    reg += 1e-10 * np.trace(reg) / d * np.eye(d)  # the documented jitter
    values, vectors = np.linalg.eigh(reg)
    whiten = vectors @ np.diag(values ** -0.5) @ vectors.T
    _, axes = np.linalg.eigh(whiten @ s_b @ whiten)
    p = x @ whiten @ axes[:, ::-1][:, :k - 1]
    means = np.stack([p[y == c].mean(0) for c in classes])
    priors = np.array([np.mean(y == c) for c in classes])
    delta = p @ means.T - 0.5 * np.sum(means ** 2, axis=1) + np.log(priors)
    prob = scipy.special.softmax(delta, axis=1)
    return float(np.mean(prob[np.arange(n), np.searchsorted(classes, y)]))


@pytest.mark.parametrize("name", list(CASES))
def test_sfda_agrees_with_the_whitened_fisher_space(name):
    x, y = case(name)
    x = x * 0.3  # moderate between-class spread: lambda well inside (0, 1)
    assert tr.sfda(x, y) == pytest.approx(sfda_reference(x, y), abs=1e-8)


def test_hscore_and_sfda_at_the_screens_size_agree_with_their_references():
    """The screen's shape (200 images, 1,280 features): both work in the row space, the references in all D."""
    x, y = blobs(200, 1280, 10, sep=0.05)
    assert tr.hscore(x, y) == pytest.approx(hscore_reference(x, y), rel=1e-9)
    assert tr.sfda(x * 0.05, y) == pytest.approx(sfda_reference(x * 0.05, y), abs=1e-8)


def test_sfda_of_constant_features_is_the_prior():
    x, y = constant(n=21, k=3)
    assert tr.sfda(x, y) == pytest.approx(1 / 3)


# ------------------------------------------------------------------------------------------------
# NCE and LEEP
# ------------------------------------------------------------------------------------------------


def source_logits(y, s=7, seed=0, signal=2.0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(len(y), s)) + signal * np.eye(s)[(y * 2) % s]


@pytest.mark.parametrize("name", ["n>d", "singleton"])
def test_nce_is_mutual_information_minus_label_entropy(name):
    from sklearn.metrics import mutual_info_score

    _, y = case(name)
    logits = source_logits(y)
    z = logits.argmax(axis=1)
    expected = mutual_info_score(y, z) - scipy.stats.entropy(np.bincount(y))  # -H(Y|Z) = I(Y;Z) - H(Y)
    assert tr.nce(None, y, logits) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("name", ["n>d", "singleton"])
def test_leep_agrees_with_explicit_sums(name):
    _, y = case(name)
    logits = source_logits(y, seed=1)
    n, s = logits.shape
    theta = [[math.exp(v) / sum(math.exp(w) for w in row) for v in row] for row in logits]
    labels = sorted(set(y.tolist()))
    joint = {(a, z): sum(theta[i][z] for i in range(n) if y[i] == a) / n for a in labels for z in range(s)}
    marginal = {z: sum(joint[a, z] for a in labels) for z in range(s)}
    expected = sum(math.log(sum(joint[y[i], z] / marginal[z] * theta[i][z] for z in range(s))) for i in range(n)) / n
    assert tr.leep(None, y, logits) == pytest.approx(expected, abs=1e-12)


def test_nce_and_leep_bounds_and_source_logits_needed():
    y = np.arange(30) % 3
    perfect = 50.0 * np.eye(5)[y]
    assert tr.nce(None, y, perfect) == pytest.approx(0.0, abs=1e-12)
    assert tr.leep(None, y, perfect) == pytest.approx(0.0, abs=1e-9)
    assert tr.leep(None, y, source_logits(y)) < 0
    for fn in (tr.nce, tr.leep):
        with pytest.raises(ValueError, match="source classifier's logits"):
            fn(np.zeros((30, 2)), y, None)


# ------------------------------------------------------------------------------------------------
# The static prior
# ------------------------------------------------------------------------------------------------


def test_static_prior_formula():
    resnet50 = {"params_m": 25.6, "input_size": 224, "imagenet_top1": 80.9}
    assert tr.static_prior(resnet50) == pytest.approx(0.809 + 0.01 * math.log2(25.6))
    assert tr.static_prior({**resnet50, "input_size": (3, 448, 448)}) == pytest.approx(tr.static_prior(resnet50) + 0.01)
    counted = {"params_m": None, "num_params": 25_600_000, "imagenet_top1": 0.809}  # a count, and a fraction
    assert tr.static_prior(counted) == pytest.approx(tr.static_prior(resnet50))
    no_top1 = tr.static_prior({"params_m": 25.6})
    assert no_top1 == pytest.approx(0.62 + 0.04 * math.log2(25.6) + 0.01 * math.log2(25.6))
    assert tr.static_prior({**resnet50, "pretrained": False}) < 0.1
    with pytest.raises(ValueError, match="top-1 .* or its parameter count"):
        tr.static_prior({"input_size": 224})


# ------------------------------------------------------------------------------------------------
# Every estimator: bad input is one clear ValueError, awkward input a finite number
# ------------------------------------------------------------------------------------------------

ON_FEATURES = [name for name, (_, _, needs, _) in tr.ESTIMATORS.items() if "features" in needs]
ON_LOGITS = [name for name, (_, _, needs, _) in tr.ESTIMATORS.items() if "source_logits" in needs]


@pytest.mark.parametrize("name", ON_FEATURES + ON_LOGITS)
def test_awkward_inputs_give_finite_scores(name):
    fn = tr.ESTIMATORS[name][0]
    for x, y in [case("n<d"), case("singleton"), case("singleton-n<d"), constant(), constant(value=0.0),
                 (case("n>d")[0].astype(np.float32), case("n>d")[1] + 10)]:
        assert math.isfinite(fn(x, y, source_logits(y)))


@pytest.mark.parametrize("name", ON_FEATURES + ON_LOGITS)
def test_what_cannot_be_computed_is_one_clear_value_error(name):
    fn = tr.ESTIMATORS[name][0]
    x, y = case("n>d")
    with pytest.raises(ValueError, match="at least 2 classes"):
        fn(x, np.zeros(len(y), dtype=int), source_logits(y))
    with pytest.raises(ValueError, match="samples|per sample"):
        fn(x[:-1] if "features" in tr.ESTIMATORS[name][2] else x, y[:-3], source_logits(y)[:-1])
    if "features" in tr.ESTIMATORS[name][2]:
        bad = x.copy()
        bad[0, 0] = np.nan
        with pytest.raises(ValueError, match="NaN"):
            fn(bad, y, None)


def test_each_estimator_declares_what_it_needs_and_a_cost():
    assert set(tr.ESTIMATORS) == {"logme", "hscore", "knn-loo", "gbc", "sfda", "nce", "leep", "static-prior"}
    for fn, cost, needs, description in tr.ESTIMATORS.values():
        assert callable(fn) and cost >= 0 and description
        assert set(needs) <= {"features", "labels", "source_logits", "meta"}
    assert tr.ESTIMATORS["nce"][2] == tr.ESTIMATORS["leep"][2] == ("labels", "source_logits")
    assert tr.ESTIMATORS["static-prior"][2] == ("meta",)


# ------------------------------------------------------------------------------------------------
# The hook
# ------------------------------------------------------------------------------------------------


def test_hook_benchbone_register_estimators(cli, tmp_path):
    plugin = tmp_path / "my_estimators.py"
    plugin.write_text(textwrap.dedent('''
        from benchbone import hookimpl

        def spread(features, labels, source_logits):
            return float(features.std())

        @hookimpl
        def benchbone_register_estimators(register):
            register("feature-spread", spread, cost=0.05, needs=("features",), description="how spread out")
    '''))
    result = cli("list", "estimators", "-p", str(plugin))
    assert result.code == 0, result.err
    line = next(line for line in result.out.splitlines() if line.startswith("feature-spread "))
    assert "[my_estimators]" in line and "cost 0.05, needs features; how spread out" in line
    for name in tr.ESTIMATORS:  # the built-ins, through the same path
        assert any(line.startswith(f"{name} ") and "[transferability]" in line for line in result.out.splitlines())


def test_estimator_registration_checks_needs_and_cost(benchbone_pm):
    from benchbone.errors import UsageError
    from benchbone.registry import REGISTRARS

    entry = benchbone_pm.registries().estimators.get("logme")
    assert entry.meta["needs"] == ("features", "labels") and entry.meta["cost"] == 1.0
    register = REGISTRARS["estimator"]("p")
    with pytest.raises(UsageError, match="needs="):
        register("x", tr.logme, needs=("pixels",))
    with pytest.raises(UsageError, match="needs="):
        register("x", tr.static_prior, needs=("meta", "labels"))
    with pytest.raises(UsageError, match="cost="):
        register("x", tr.logme, cost=-1)


def test_an_estimator_writing_through_an_alias_is_named_and_the_next_reads_the_candidates_features(benchbone_pm):
    """The screen's estimators read one candidate's features in turn: one that writes into them through
    torch.from_numpy is left out with one line naming it, and the next estimator scores the features as extracted."""
    import torch

    from benchbone.registry import Registry
    from benchbone.selection import screen

    def hostile(features, labels, source_logits):
        torch.from_numpy(features).mul_(0)
        return 1.0

    registry = Registry("estimator")
    registry.add("hostile", hostile, plugin="hostile_plugin")
    logme = benchbone_pm.registries().estimators.get("logme")
    registry.add("logme", logme.obj, plugin=logme.plugin, **logme.meta)
    x, y = case("n>d")
    x = x.astype(np.float32)
    pristine, lines = x.copy(), []
    with pytest.warns(UserWarning, match="not writable"):  # torch's own warning, then ours
        scores = screen.score(registry, ["hostile", "logme"], x, y, {}, {"f": 1}, None,
                              lambda line, important=False: lines.append(line), "cand")
    assert "hostile" not in scores and len(lines) == 1
    assert "estimator hostile failed on cand" in lines[0] and "hostile_plugin" in lines[0] and "alias" in lines[0]
    assert scores["logme"]["score"] == pytest.approx(tr.logme(pristine, y), rel=1e-12)
    assert np.array_equal(x, pristine)  # the candidate's own features too
