"""Multi-objective bilevel learning of task loss weights: WC-MHGD (Zhang et al., "Multi-Objective
Bilevel Learning", arXiv 2511.07824) on a multi-task model.

Lower level: the trainer, minimising ``(1/T) sum_t w_t L_t`` over the model's parameters.
Upper level: one objective per task, its normalised entropy (NE = logloss / entropy of the base
rate) on a fixed pool of validation rows (the whole split by default), under a preference ``r`` (non-negative, summing to 1)
and an ideal point ``z``: minimise the weighted Chebyshev ``max_s r_s (NE_s - z_s)``.

Every ``every_steps`` trainer steps, one upper step:

1. hypergradients ``d NE_s / d w`` by implicit differentiation at the current parameters
   (train/hypergradient.py; the Hessian on the batch just trained on, conjugate gradients or a
   Neumann series), chained to the weight logits ``phi`` (``w = T softmax(phi)``, so the weights
   stay positive and sum to T, equal weights = 1 each, the plain multi-task loss);
2. the weighted-Chebyshev direction: the proximal step of the linearised objective,
   ``min_d max_s r_s (NE_s - z_s + G_s d) + |d|^2 / (2 lr)``, whose dual is
   ``lambda = argmax_{simplex} sum_s lambda_s r_s (NE_s - z_s) - lr/2 |sum_s lambda_s r_s G_s|^2``
   and whose solution is ``d = -lr sum_s lambda_s r_s G_s``. With equal gaps it is the
   preference-weighted minimum-norm (MGDA) direction; far from balance it descends the worst
   weighted objective. Sweeping ``r`` traces the Pareto front.
3. the step: ``phi -= lr_k * d / |d|`` (``step: normalized``, the default) or
   ``phi -= lr_k * d`` (``plain``, the paper's), with ``lr_k = lr`` (``lr_decay: none``, the
   default) or ``lr / sqrt(k + 1)`` at the k-th upper step (``sqrt``, the subgradient method's
   diminishing step). A ranking model's hypergradients shrink by orders of magnitude as its
   training converges, so a plain step that moves the weights early freezes them late; the
   normalised one moves the logits by ``lr_k`` every time.

What the paper leaves to us, documented in docs/pareto.md: the objectives (NE per task), the
ideal point (given, default 0), the parametrisation of the weights, the Hessian batch, which
parameters the implicit differentiation covers (``dense``: every parameter but the embedding
tables, which stay fixed in the Hessian; ``all``), and eval mode (no dropout) for the
hypergradient.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rankmixer.data.batch import Batch
from rankmixer.data.feature_map import FeatureMap
from rankmixer.data.loader import ParquetBatches, make_loader
from rankmixer.nn.embedding import split_parameters
from rankmixer.train.config import BilevelConfig
from rankmixer.train.hypergradient import loss_weight_hypergradients


def project_simplex(v: np.ndarray) -> np.ndarray:
    """Euclidean projection of ``v`` onto the probability simplex (sort-based, exact)."""
    u = np.sort(v)[::-1]
    css = np.cumsum(u) - 1.0
    k = np.nonzero(u - css / np.arange(1, len(v) + 1) > 0)[0][-1]
    return np.maximum(v - css[k] / (k + 1), 0.0)


def chebyshev_multipliers(gaps: np.ndarray, grads: np.ndarray, preference: np.ndarray, lr: float,
                          iterations: int = 500) -> np.ndarray:
    """The dual multipliers ``lambda`` (on the simplex) of the weighted-Chebyshev proximal step:
    the maximiser of ``sum_s lambda_s a_s - lr/2 |sum_s lambda_s b_s|^2`` with ``a = r * gaps``,
    ``b_s = r_s grads[s]`` (``gaps``: ``NE_s - z_s``, ``grads``: ``[S, n]``). Projected gradient
    ascent with step ``1 / L`` on this concave quadratic."""
    a = preference * gaps
    b = preference[:, None] * grads
    gram = lr * (b @ b.T)
    lipschitz = float(np.linalg.eigvalsh(gram).max()) if gram.size else 0.0
    if lipschitz <= 1e-18:  # flat: the largest weighted gap takes everything
        lam = np.zeros_like(a)
        lam[int(np.argmax(a))] = 1.0
        return lam
    lam = np.full_like(a, 1.0 / len(a))
    for _ in range(iterations):
        lam = project_simplex(lam + (a - gram @ lam) / lipschitz)
    return lam


def weights_of(logits: Tensor) -> Tensor:
    """``w = T softmax(phi)``: positive task weights summing to T."""
    return logits.numel() * torch.softmax(logits, dim=0)


class TaskWeightLearner:
    """The upper level of WC-MHGD over a model's task loss weights (see the module docstring).
    Stateless between steps apart from the validation pool: the weight logits live in the
    trainer's state, so a checkpoint resumes them exactly."""

    def __init__(self, model: nn.Module, fm: FeatureMap, cfg: BilevelConfig, device: torch.device,
                 dense_l2: float = 0.0):
        n_tasks = fm.num_tasks
        if len(cfg.preference) != n_tasks:
            raise ValueError(f"train.bilevel.preference has {len(cfg.preference)} values for the "
                             f"{n_tasks} tasks {list(fm.labels)}")
        if cfg.ideal is not None and len(cfg.ideal) != n_tasks:
            raise ValueError(f"train.bilevel.ideal has {len(cfg.ideal)} values for the {n_tasks} tasks {list(fm.labels)}")
        self.cfg = cfg
        self.tasks = list(fm.labels)
        self.preference = np.asarray(cfg.preference, dtype=np.float64)
        self.ideal = np.zeros(n_tasks) if cfg.ideal is None else np.asarray(cfg.ideal, dtype=np.float64)
        # L2 on the dense weights adds dense_l2 * I to the Hessian of what the trainer minimises.
        self.damping = cfg.damping + (dense_l2 if cfg.parameters == "dense" else 0.0)
        emb, _ = split_parameters(model)
        emb_ids = {id(p) for p in emb}
        self.names = [n for n, p in model.named_parameters()
                      if p.requires_grad and (cfg.parameters == "all" or id(p) not in emb_ids)]
        rows = cfg.valid_rows or fm.splits["valid"].rows
        data = ParquetBatches(fm, "valid", rows, shuffle=False)
        self.pool = next(iter(make_loader(data, num_workers=0))).to(device)
        rate = self.pool.labels.double().mean(0)
        for task, r in zip(self.tasks, rate.tolist(), strict=True):
            if not 0.0 < r < 1.0:
                raise ValueError(f"train.bilevel: task {task!r} has base rate {r} in the first {len(self.pool)} "
                                 f"validation rows; NE needs positives and negatives (raise train.bilevel.valid_rows)")
        self.entropy = -(rate * rate.log() + (1 - rate) * (1 - rate).log()).float()

    def _per_task_bce(self, model: nn.Module, params: tuple[Tensor, ...], batch: Batch) -> Tensor:
        out = torch.func.functional_call(model, dict(zip(self.names, params, strict=True)), (batch,))
        return F.binary_cross_entropy_with_logits(out.logits.float(), batch.labels, reduction="none").mean(0)

    def step(self, model: nn.Module, batch: Batch, logits: list[float], k: int = 0) -> tuple[list[float], dict]:
        """The ``k``-th upper step (from 0) at the model's current parameters, ``batch`` the lower
        level's last training batch; returns the new weight logits and a record for the log."""
        cfg = self.cfg
        named = dict(model.named_parameters())
        params = tuple(named[n].detach() for n in self.names)
        phi = torch.tensor(logits, dtype=torch.float64)
        w = weights_of(phi)
        was_training = model.training
        model.eval()
        try:
            values, grads_w = loss_weight_hypergradients(
                lambda ps: self._per_task_bce(model, ps, batch),
                lambda ps: self._per_task_bce(model, ps, self.pool) / self.entropy.to(batch.labels.device),
                params, w.float().to(batch.labels.device),
                solver=cfg.solver, iterations=cfg.iterations, damping=self.damping, alpha=cfg.neumann_alpha,
            )
        finally:
            model.train(was_training)
        values = values.double().cpu().numpy()
        grads_w = grads_w.double().cpu().numpy()
        p = torch.softmax(phi, 0).numpy()
        jac = len(p) * (np.diag(p) - np.outer(p, p))  # d w / d phi
        grads = grads_w @ jac
        gaps = values - self.ideal
        lam = chebyshev_multipliers(gaps, grads, self.preference, cfg.lr)
        direction = (lam * self.preference) @ grads
        norm = float(np.linalg.norm(direction))
        lr = cfg.lr / math.sqrt(k + 1) if cfg.lr_decay == "sqrt" else cfg.lr
        scale = lr / norm if cfg.step == "normalized" and norm > 0 else lr
        new = (phi.numpy() - scale * direction).tolist()
        record = {
            "objective": float(np.max(self.preference * gaps)),
            "multipliers": [float(x) for x in lam],
            "direction_norm": norm,
            "weights": [float(x) for x in weights_of(torch.tensor(new, dtype=torch.float64))],
            **{f"{t}/ne": float(v) for t, v in zip(self.tasks, values, strict=True)},
        }
        if not all(math.isfinite(x) for x in new):
            raise FloatingPointError(f"train.bilevel: the upper step gave non-finite weight logits {new}")
        return new, record
