"""Optimizers and learning-rate schedules, built from the ``train`` config.

Dense parameters and embedding tables get separate optimizers (tables see few rows per step and
do better with per-row steps such as Adagrad). ``impl`` chooses torch's update kernel: fused
(one kernel over all tensors) or foreach where torch has them, since torch's CPU default, the
per-tensor loop, spends more on temporaries than on the update for large stacked weights.

Reduce-LR-on-plateau (``train.lr_plateau``) composes with the schedule: each optimizer's
learning rate is ``plateau_lr(base lr, k) * schedule(step)``, ``k`` being the number of
validations so far that did not improve; the trainer keeps ``k`` in its checkpointed state.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

from rankmixer.train.config import LRPlateau, OptimizerConfig

__all__ = ["apply_scheduled_lr", "impl_kwargs", "lr_lambda", "make_optimizer", "make_schedulers", "plateau_lr"]

_FUSED = ("adamw", "adam", "sgd", "adagrad")  # torch optimizers with a fused CPU/CUDA kernel


def impl_kwargs(cfg: OptimizerConfig, sparse: bool) -> dict:
    """``fused``/``foreach`` flags for ``cfg.impl``. torch's own default on CPU is the
    per-tensor loop, whose temporaries cost more than the update itself on large stacked
    weights (see docs/performance.md)."""
    impl = cfg.impl
    if cfg.name == "sparse_adam":
        return {}
    if impl == "auto":
        impl = "forloop" if sparse else ("fused" if cfg.name in _FUSED else "foreach")
    if impl == "fused":
        if cfg.name not in _FUSED or sparse:
            raise ValueError(f"optimizer {cfg.name!r} has no fused implementation{' for sparse gradients' if sparse else ''}")
        return {"fused": True}
    return {"foreach": impl == "foreach"}


def make_optimizer(cfg: OptimizerConfig, params: list[nn.Parameter], sparse: bool = False) -> torch.optim.Optimizer:
    extra = {} if cfg.eps is None else {"eps": cfg.eps}
    extra.update(impl_kwargs(cfg, sparse))
    if cfg.name == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, **extra)
    if cfg.name == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay, **extra)
    if cfg.name == "rmsprop":
        return torch.optim.RMSprop(params, lr=cfg.lr, weight_decay=cfg.weight_decay, momentum=cfg.momentum, **extra)
    if cfg.name == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, weight_decay=cfg.weight_decay, momentum=cfg.momentum)
    if cfg.name == "adagrad":
        return torch.optim.Adagrad(params, lr=cfg.lr, weight_decay=cfg.weight_decay, **extra)
    if cfg.name == "sparse_adam":
        return torch.optim.SparseAdam(params, lr=cfg.lr, **extra)
    raise ValueError(f"unknown optimizer {cfg.name!r}")


def lr_lambda(schedule: str, warmup: int, total: int) -> Callable[[int], float]:
    def fn(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        if schedule == "constant" or total <= warmup:
            return 1.0
        frac = min(1.0, (step - warmup) / max(1, total - warmup))
        return 0.5 * (1 + math.cos(math.pi * frac)) if schedule == "cosine" else 1.0 - frac

    return fn


def plateau_lr(base_lr: float, reductions: int, plateau: LRPlateau) -> float:
    """The learning rate after ``reductions`` plateaus, computed as FuxiCTR's ``lr_decay`` does
    it, one multiplication at a time: ``lr = max(lr * factor, min_lr)``."""
    lr = base_lr
    for _ in range(reductions):
        lr = max(lr * plateau.factor, plateau.min_lr)
    return lr


def make_schedulers(
    optimizers: dict[str, torch.optim.Optimizer],
    schedule: Callable[[int], float],
    plateau: LRPlateau | None = None,
    reductions: Callable[[], int] = lambda: 0,
) -> dict[str, torch.optim.lr_scheduler.LambdaLR]:
    """One ``LambdaLR`` per optimizer: ``schedule(step)`` times, with ``plateau``, the factor
    that ``plateau_lr`` gives each param group's base lr for ``reductions()`` plateaus so far."""
    if plateau is None:
        return {k: torch.optim.lr_scheduler.LambdaLR(o, schedule) for k, o in optimizers.items()}

    def scaled(base: float) -> Callable[[int], float]:
        return lambda step: schedule(step) * plateau_lr(base, reductions(), plateau) / base

    return {k: torch.optim.lr_scheduler.LambdaLR(o, [scaled(g["lr"]) for g in o.param_groups])
            for k, o in optimizers.items()}


def apply_scheduled_lr(scheduler: torch.optim.lr_scheduler.LambdaLR) -> None:
    """Set every param group's lr to what ``scheduler`` gives at its current step, now (after the
    plateau count changed) rather than at the next ``scheduler.step()``."""
    for group, fn, base in zip(scheduler.optimizer.param_groups, scheduler.lr_lambdas, scheduler.base_lrs, strict=True):
        group["lr"] = base * fn(scheduler.last_epoch)
