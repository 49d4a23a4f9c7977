"""Implicit-differentiation hypergradients against explicit linear algebra and finite
differences (float64 throughout)."""

import torch

from rankmixer.train.hypergradient import hvp_operator, loss_weight_hypergradients, solve_cg, solve_neumann

D, N, T = 6, 50, 2


def _problem(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    X = [torch.randn(N, D, generator=g, dtype=torch.float64) for _ in range(T)]
    Y = [torch.randn(N, generator=g, dtype=torch.float64) for _ in range(T)]
    V = torch.randn(N, D, generator=g, dtype=torch.float64)
    Z = torch.randn(N, generator=g, dtype=torch.float64)

    def task_losses(ps):
        return torch.stack([((X[t] @ ps[0] - Y[t]) ** 2).mean() / 2 for t in range(T)])

    def objectives(ps):  # two upper objectives: a validation fit and the squared norm
        return torch.stack([((V @ ps[0] - Z) ** 2).mean() / 2, (ps[0] ** 2).sum()])

    def optimum(w):  # the quadratic lower level's exact minimiser
        H = sum(w[t] * X[t].T @ X[t] / N for t in range(T)) / T
        b = sum(w[t] * X[t].T @ Y[t] / N for t in range(T)) / T
        return torch.linalg.solve(H, b)

    return task_losses, objectives, optimum


def _central_difference(fn, w, eps=1e-6):
    cols = []
    for t in range(len(w)):
        e = torch.zeros_like(w)
        e[t] = eps
        cols.append((fn(w + e) - fn(w - e)) / (2 * eps))
    return torch.stack(cols, dim=1)


def test_hvp_matches_the_explicit_hessian():
    task_losses, _, _ = _problem()
    w = torch.tensor([0.4, 1.6], dtype=torch.float64)
    theta = torch.randn(D, dtype=torch.float64)

    def lower(ps):
        return (w * task_losses(ps)).sum() / T

    H = torch.autograd.functional.hessian(lambda x: lower((x,)), theta)
    v = torch.randn(D, dtype=torch.float64)
    hv = hvp_operator(lower, (theta,), damping=0.5)((v,))[0]
    torch.testing.assert_close(hv, H @ v + 0.5 * v)


def test_cg_and_neumann_solve_a_positive_definite_system():
    g = torch.Generator().manual_seed(3)
    A = torch.randn(D, D, generator=g, dtype=torch.float64)
    H = A @ A.T / D + 0.5 * torch.eye(D, dtype=torch.float64)
    b = torch.randn(D, generator=g, dtype=torch.float64)
    exact = torch.linalg.solve(H, b)
    hvp = lambda v: (H @ v[0],)  # noqa: E731
    torch.testing.assert_close(solve_cg(hvp, (b,), iterations=D)[0], exact)
    alpha = 1.0 / float(torch.linalg.eigvalsh(H).max())
    torch.testing.assert_close(solve_neumann(hvp, (b,), iterations=3000, alpha=alpha)[0], exact)


def test_cg_hypergradient_equals_finite_differences_of_the_optimum():
    task_losses, objectives, optimum = _problem()
    w = torch.tensor([0.7, 1.3], dtype=torch.float64)
    theta = optimum(w)
    values, grads = loss_weight_hypergradients(task_losses, objectives, (theta,), w, solver="cg", iterations=50)
    torch.testing.assert_close(values, objectives((theta,)))
    reference = _central_difference(lambda ww: objectives((optimum(ww),)), w)
    torch.testing.assert_close(grads, reference, rtol=1e-6, atol=1e-9)


def test_neumann_hypergradient_equals_finite_differences_through_unrolled_steps():
    # K gradient steps of size alpha from the optimum: their derivative in w is exactly the
    # K-term Neumann series for a quadratic lower level.
    task_losses, objectives, optimum = _problem(seed=1)
    w = torch.tensor([1.2, 0.8], dtype=torch.float64)
    theta = optimum(w)
    alpha, K = 0.3, 4

    def unrolled(ww):
        x = theta.clone()
        for _ in range(K):
            x = x.requires_grad_(True)
            g = torch.autograd.grad((ww * task_losses((x,))).sum() / T, x)[0]
            x = (x - alpha * g).detach()
        return objectives((x,))

    _, grads = loss_weight_hypergradients(task_losses, objectives, (theta,), w, solver="neumann",
                                          iterations=K, alpha=alpha)
    torch.testing.assert_close(grads, _central_difference(unrolled, w), rtol=1e-6, atol=1e-9)
    # ...and it is not the full implicit derivative (K is too small for the series to converge)
    _, implicit = loss_weight_hypergradients(task_losses, objectives, (theta,), w, solver="cg", iterations=50)
    assert not torch.allclose(grads, implicit, rtol=1e-2)


def test_hypergradient_of_a_logistic_lower_level():
    # A non-quadratic lower level: two weighted logistic regressions (ridge 0.1), solved by Newton.
    g = torch.Generator().manual_seed(5)
    X = [torch.randn(200, 4, generator=g, dtype=torch.float64) for _ in range(T)]
    Y = [(torch.rand(200, generator=g, dtype=torch.float64) < 0.3).double() for _ in range(T)]
    V = torch.randn(200, 4, generator=g, dtype=torch.float64)
    Z = (torch.rand(200, generator=g, dtype=torch.float64) < 0.4).double()
    bce = torch.nn.functional.binary_cross_entropy_with_logits

    def task_losses(ps):
        return torch.stack([bce(X[t] @ ps[0], Y[t]) + 0.05 * (ps[0] ** 2).sum() for t in range(T)])

    def objectives(ps):
        return bce(V @ ps[0], Z).reshape(1)

    def optimum(w):
        x = torch.zeros(4, dtype=torch.float64)
        f = lambda y: (w * task_losses((y,))).sum() / T  # noqa: E731
        for _ in range(30):
            grad = torch.autograd.functional.jacobian(f, x)
            x = x - torch.linalg.solve(torch.autograd.functional.hessian(f, x), grad)
        return x

    w = torch.tensor([0.5, 1.5], dtype=torch.float64)
    _, grads = loss_weight_hypergradients(task_losses, objectives, (optimum(w),), w, solver="cg", iterations=20)
    reference = _central_difference(lambda ww: objectives((optimum(ww),)), w, eps=1e-5)
    torch.testing.assert_close(grads, reference, rtol=1e-5, atol=1e-9)
    assert grads.abs().min() > 1e-4  # the check is not vacuous
