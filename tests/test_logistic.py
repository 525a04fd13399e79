"""The exact logistic-regression solver behind linear-probe: its gradient, its stopping rules, its warm starts."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from benchbone.compute.lbfgs import extrapolated_start, fit_logistic, minimise
from benchbone.compute.logistic import LogisticObjective, pack


@pytest.fixture(scope="module")
def digits():
    """scikit-learn digits, standardised: 1,797 images, 64 correlated pixel features, 10 classes."""
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    X = torch.tensor(X, dtype=torch.float64)
    return (X - X.mean(0)) / X.std(0).clamp_min(1e-6), torch.tensor(y)


def objective_by_autograd(X, y, x, C):
    """scikit-learn's objective divided by C * n, and its gradient, by torch autograd in float64."""
    x = x.detach().double().requires_grad_()
    W, b = x[:, :-1], x[:, -1]
    value = F.cross_entropy(X.double() @ W.T + b, y) + W.pow(2).sum() / (2 * C * len(y))
    (gradient,) = torch.autograd.grad(value, x)
    return value.item(), gradient


@pytest.mark.parametrize("C", [1e-3, 1.0, 1e3])
def test_value_and_gradient_match_autograd(digits, C):
    X, y = digits
    objective = LogisticObjective(X, y, 10)
    objective.C = C
    x = torch.randn(10, 65, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 0.3
    point = objective.at(x)
    value, gradient = objective_by_autograd(X, y, x, C)
    assert objective.value(point) == pytest.approx(value, rel=1e-12)
    assert torch.allclose(objective.gradient(point), gradient, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("C", [1e-3, 1.0, 1e3])
def test_float32_value_and_gradient_on_the_cpu_match_autograd(digits, C):
    """In float32 on a CPU the products run in oneDNN, on the features packed for it: same objective."""
    X, y = digits
    objective = LogisticObjective(X.float(), y, 10)
    assert objective.products == "oneDNN, packed features" and objective.XT1 is None  # the packed copies replace it
    assert len(objective.live) == 65 - 3  # digits' 3 pixels that are 0 in every image are left out of the products
    objective.C = C
    x = torch.randn(10, 65, generator=torch.Generator().manual_seed(0)) * 0.3
    point = objective.at(x)
    value, gradient = objective_by_autograd(X, y, x, C)
    assert objective.value(point) == pytest.approx(value, rel=1e-6)
    assert torch.allclose(objective.gradient(point).double(), gradient, rtol=1e-4, atol=1e-6)
    assert torch.allclose(objective.logits(x).double(), x.double()[:, :-1] @ X.T + x.double()[:, -1:], atol=1e-4)


def test_the_cross_entropy_holds_where_the_labels_probability_underflows(digits):
    """Logits 100 apart and more: the label's float32 probability is 0 on the rows classified wrong, and their
    cross-entropy still comes out exact (the log-sum-exp never takes the log of a probability below 1 / K)."""
    X, y = digits
    objective = LogisticObjective(X.float(), y, 10)
    x = torch.randn(10, 65, generator=torch.Generator().manual_seed(1)) * 30
    point = objective.at(x)
    value, _ = objective_by_autograd(X, y, x, 1.0)
    labelled = torch.softmax(objective.logits(x), 0).gather(0, y[None])
    assert (labelled == 0).sum() > 100  # many rows where a log of the label's probability would be -inf
    assert objective.value(point) == pytest.approx(value, rel=1e-6)


@pytest.mark.parametrize("C", [1e-2, 1.0, 100.0])
def test_float32_reaches_the_float64_optimum(digits, C):
    """float32 stops on its own precision, close to the float64 optimum on scipy's scale, max(|f|, 1)."""
    X, y = digits
    *_, fit64 = fit_logistic(X, y, 10, C)
    *_, fit32 = fit_logistic(X.float(), y, 10, C)
    assert fit64.converged and fit32.converged
    best, reached = (objective_by_autograd(X, y, fit.x, C)[0] for fit in (fit64, fit32))
    assert best <= reached <= best + 1e-5 * max(best, 1)


def test_stops_when_the_largest_gradient_entry_is_within_tol(digits):
    X, y = digits
    *_, fit = fit_logistic(X, y, 10, 0.1, tol=1e-7)
    assert fit.stop == "gradient"
    assert objective_by_autograd(X, y, fit.x, 0.1)[1].abs().max() <= 1e-7


def test_gives_up_at_max_iter_and_says_so(digits):
    X, y = digits
    *_, fit = fit_logistic(X, y, 10, 100.0, max_iter=3)
    assert (fit.iterations, fit.stop, fit.converged) == (3, "max_iter", False)


def test_a_carried_point_starts_where_recomputing_it_would(digits):
    """Warm starts along a sweep carry the logits and data gradient instead of recomputing them."""
    X, y = digits
    objective = LogisticObjective(X, y, 10)
    first = minimise(objective, 0.01, pack(objective))
    carried = minimise(objective, 0.1, first.point)
    recomputed = minimise(objective, 0.1, first.x.clone())
    assert carried.iterations == recomputed.iterations
    assert torch.allclose(carried.x, recomputed.x, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("reach", [1.0, -3.0])
def test_an_extrapolated_start_is_taken_only_where_the_objective_is_lower(digits, reach):
    """The sweep's next fit starts at the secant through the last two solutions where autograd's objective is
    lower there than at the last solution (reach 1 on this path), else at the last solution (reach -3, back
    past both), and a secant start carries the logits and gradient that recomputing them gives."""
    X, y = digits
    objective = LogisticObjective(X, y, 10)
    first = minimise(objective, 0.01, pack(objective))
    second = minimise(objective, 0.1, first.point)
    start = extrapolated_start(objective, 1.0, second.point, first.x, reach)
    secant = second.x + reach * (second.x - first.x)
    lower = objective_by_autograd(X, y, secant, 1.0)[0] < objective_by_autograd(X, y, second.x, 1.0)[0]
    assert lower == (reach > 0)
    assert torch.equal(start.x, secant if lower else second.x)
    exact = objective.at(start.x)
    assert torch.allclose(start.logits, exact.logits) and torch.allclose(start.data_gradient, exact.data_gradient)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_features_constant_on_every_row_leave_the_bias_alone(dtype):
    """Every feature constant (zero once standardised): the probe is the bias alone, which settles at the log of
    each class's share, and the objective still matches autograd."""
    y = torch.tensor([0] * 50 + [1] * 30 + [2] * 20)
    X = torch.full((100, 5), 3.0, dtype=dtype)
    objective = LogisticObjective(X, y, 3, standardize=True)
    x = torch.randn(3, 6, dtype=dtype, generator=torch.Generator().manual_seed(0))
    value, gradient = objective_by_autograd(torch.zeros(100, 5), y, x, 1.0)
    assert objective.value(objective.at(x)) == pytest.approx(value, rel=1e-6)
    fit = minimise(objective, 1.0, pack(objective))
    bias, shares = fit.x[:, -1].double(), torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    assert torch.allclose(bias - bias.mean(), shares.log() - shares.log().mean(), atol=1e-4)


def test_standardises_with_the_fitted_rows_statistics(digits):
    X, y = digits
    raw = X * 3 + 5
    objective = LogisticObjective(raw, y, 10, standardize=True)
    standardised = (raw - raw.mean(0)) / raw.std(0).clamp_min(1e-6)
    x = torch.randn(10, 65, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(objective.logits(x), x[:, :-1] @ standardised.T + x[:, -1:])
    assert torch.allclose(objective.features(raw[:5]), standardised[:5])


def test_no_step_along_a_sweep_raises_the_objective(digits):
    """Warm-started along the sweep on 3,072 correlated features (digits upscaled to 32 x 32 x 3), no fit
    ends above where it started: a step past the line's minimum is refused even when its slope looks fine."""
    X, y = digits
    images = X.reshape(-1, 1, 8, 8).float()
    X = F.interpolate(images, size=32, mode="bilinear").expand(-1, 3, -1, -1).reshape(len(y), -1)
    objective = LogisticObjective(X[::2], y[::2], 10, standardize=True)
    start = objective.at(pack(objective))
    for C in torch.logspace(-4, 0, 5).tolist():
        objective.C = C
        before = objective.value(start)
        fit = minimise(objective, C, start)
        assert objective.value(fit.point) <= before
        assert fit.iterations > 1, (C, fit.stop)
        start = fit.point
