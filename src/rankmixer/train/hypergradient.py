"""Hypergradients of upper-level objectives with respect to lower-level loss weights, by implicit
differentiation (the AID estimator of bilevel learning).

The lower level trains parameters ``theta`` on ``g(theta, w) = (1/T) sum_t w_t L_t(theta)``; the
upper level judges the result by objectives ``f_s(theta)``. At a lower-level optimum,
``grad_theta g = 0`` and the implicit function theorem gives

    d f_s / d w_t = -(1/T) grad L_t(theta)^T  H^{-1} grad f_s(theta),    H = hess_theta g.

``H^{-1} b`` is never formed: conjugate gradients or a truncated Neumann series solve it from
Hessian-vector products, each one reverse-over-reverse pass built once with ``torch.func``
(the gradient's graph is linearised once, every product reuses it). ``damping`` adds
``damping * I`` to ``H``: a network's Hessian is indefinite away from the optimum, and an L2
penalty adds exactly such a term.

Truncated at ``K`` terms with step ``alpha``, the Neumann series is the exact derivative of ``K``
unrolled gradient steps of size ``alpha`` started from the optimum (for a quadratic lower
level): the identity the tests check against finite differences.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor

Vec = tuple[Tensor, ...]


def _dot(a: Vec, b: Vec) -> Tensor:
    return sum((x * y).sum() for x, y in zip(a, b, strict=True))


def _axpy(alpha: Tensor | float, x: Vec, y: Vec) -> Vec:
    """``alpha * x + y``."""
    return tuple(alpha * xi + yi for xi, yi in zip(x, y, strict=True))


def hvp_operator(loss: Callable[[Vec], Tensor], params: Vec, damping: float = 0.0) -> Callable[[Vec], Vec]:
    """``v -> (hess loss(params) + damping * I) v``: one ``torch.func.vjp`` of the gradient,
    linearised once at ``params`` and reused by every product."""
    _, vjp = torch.func.vjp(torch.func.grad(loss), params)

    def hvp(v: Vec) -> Vec:
        hv = vjp(v)[0]
        return _axpy(damping, v, hv) if damping else hv

    return hvp


def solve_cg(hvp: Callable[[Vec], Vec], b: Vec, iterations: int, tol: float = 1e-16) -> Vec:
    """Conjugate gradients for ``H x = b`` from ``x = 0`` (H symmetric; positive definite for the
    guarantee, so pass a damped operator). Stops early when the residual's squared norm falls
    below ``tol`` times ``b``'s."""
    x = tuple(torch.zeros_like(t) for t in b)
    r = b
    p = b
    rr = _dot(r, r)
    stop = tol * rr
    for _ in range(iterations):
        if rr <= stop:
            break
        hp = hvp(p)
        curvature = _dot(p, hp)
        if curvature <= 0:  # a direction of non-positive curvature: keep what we have
            break
        step = rr / curvature
        x = _axpy(step, p, x)
        r = _axpy(-step, hp, r)
        rr_new = _dot(r, r)
        p = _axpy(rr_new / rr, p, r)
        rr = rr_new
    return x


def solve_neumann(hvp: Callable[[Vec], Vec], b: Vec, iterations: int, alpha: float) -> Vec:
    """``alpha * sum_{k<iterations} (I - alpha H)^k b``: ``H^{-1} b`` when ``alpha`` is below
    ``1 / lambda_max(H)`` and the series has converged; with few terms, the derivative of as many
    unrolled gradient steps of size ``alpha``."""
    term = b
    total = b
    for _ in range(iterations - 1):
        term = _axpy(-alpha, hvp(term), term)
        total = _axpy(1.0, term, total)
    return tuple(alpha * t for t in total)


def loss_weight_hypergradients(
    task_losses: Callable[[Vec], Tensor],
    objectives: Callable[[Vec], Tensor],
    params: Vec,
    weights: Tensor,
    *,
    solver: Literal["cg", "neumann"] = "cg",
    iterations: int = 10,
    damping: float = 0.0,
    alpha: float = 0.1,
) -> tuple[Tensor, Tensor]:
    """(objective values ``[S]``, hypergradients ``[S, T]`` = d f_s / d w_t) at ``params``.

    ``task_losses(params)``: the lower level's per-task losses ``[T]`` on a training batch;
    ``objectives(params)``: the upper level's ``[S]``; ``weights``: the current ``w`` ``[T]``
    (the lower loss is ``(weights * task_losses).sum() / T``). ``solver``: conjugate gradients
    (``iterations`` products) or the Neumann series (``iterations`` terms of step ``alpha``);
    ``damping``: added to the Hessian's diagonal.
    """
    params = tuple(p.detach() for p in params)
    weights = weights.detach()
    n_tasks = weights.numel()

    def lower(ps: Vec) -> Tensor:
        return (weights * task_losses(ps)).sum() / n_tasks

    values, pull_objectives = torch.func.vjp(objectives, params)
    losses, pull_losses = torch.func.vjp(task_losses, params)
    eye_s = torch.eye(values.numel(), dtype=values.dtype, device=values.device)
    eye_t = torch.eye(losses.numel(), dtype=losses.dtype, device=losses.device)
    task_grads = [pull_losses(eye_t[t])[0] for t in range(n_tasks)]
    hvp = hvp_operator(lower, params, damping)
    rows = []
    for s in range(values.numel()):
        b = pull_objectives(eye_s[s])[0]
        v = solve_cg(hvp, b, iterations) if solver == "cg" else solve_neumann(hvp, b, iterations, alpha)
        rows.append(torch.stack([-_dot(g, v) / n_tasks for g in task_grads]))
    return values.detach(), torch.stack(rows).detach()
