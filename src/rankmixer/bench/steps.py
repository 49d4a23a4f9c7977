"""What the speed benchmarks time: a training step as the trainer runs it, and an inference call.

Timing our models with the trainer's own choices (optimizer factory, autocast, fp32 loss) means
a benchmark row measures what ``rankmixer train`` would do, not a hand-tuned copy of it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rankmixer.core.hardware import autocast
from rankmixer.train import optim
from rankmixer.train.config import OptimizerConfig

__all__ = ["infer_call", "make_optimizer", "make_train_step"]


def make_optimizer(name: str, params: list[nn.Parameter], impl: str = "auto", lr: float = 1e-3) -> torch.optim.Optimizer:
    """The trainer's optimizer factory (``impl``: auto = fused/foreach, forloop = torch's CPU
    default, what public code gets)."""
    return optim.make_optimizer(OptimizerConfig(name=name, lr=lr, impl=impl), params)


def make_train_step(
    forward: Callable[[], tuple[Tensor, Tensor | None]],
    labels: Tensor,
    optimizers: Sequence[torch.optim.Optimizer],
    precision: str,
    device: torch.device,
) -> Callable[[], Tensor]:
    """One training step as ``Trainer.train_step`` runs it: zero grads, autocast forward, BCE
    (+ aux loss) in fp32, backward, optimizer steps. fp16 uses a GradScaler (CUDA). No host
    sync: the loss is returned as a tensor. ``forward() -> (logits, aux_loss or None)``."""
    scaler = torch.amp.GradScaler(device.type) if precision == "fp16" and device.type == "cuda" else None

    def step() -> Tensor:
        for opt in optimizers:
            opt.zero_grad(set_to_none=True)
        with autocast(precision, device):
            logits, aux = forward()
        loss = F.binary_cross_entropy_with_logits(logits.float(), labels)
        if aux is not None:
            loss = loss + aux.float()
        if scaler is None:
            loss.backward()
            for opt in optimizers:
                opt.step()
        else:
            scaler.scale(loss).backward()
            for opt in optimizers:
                scaler.step(opt)
            scaler.update()
        return loss.detach()

    return step


def infer_call(fn: Callable[[], Tensor], model: nn.Module, precision: str, device: torch.device) -> Tensor:
    """``fn()`` as served: ``model`` in eval mode, under ``inference_mode`` and autocast."""
    model.eval()
    with torch.inference_mode(), autocast(precision, device):
        return fn()
