"""What every model shares: its output type and its config base class."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor

from rankmixer.core.strict import StrictModel


class ModelConfig(StrictModel):
    """Base of every model's typed config. Unknown keys are errors (a typo must not pass), and
    so is a boolean where a number belongs."""

    # Width of every embedding table; models that need equal widths rely on it.
    embedding_dim: int = 16


def add_losses(*losses: Tensor | None) -> Tensor | None:
    """The sum of the losses present (auxiliary losses of a model's parts), None if none is."""
    present = [x for x in losses if x is not None]
    return sum(present[1:], present[0]) if present else None


@dataclass
class ModelOutput:
    """logits: [B, n_tasks]; aux_loss: added to the task loss by the trainer (MoE sparsity,
    distillation ...); metrics: scalars the trainer logs as they are (e.g. active-expert ratio).

    Multi-exit models (early exit) also set ``exit_logits``: one ``[B, n_tasks]`` tensor per exit,
    shallowest first, the last one being ``logits``; the trainer's task loss is then
    ``sum_i exit_loss_weights[i] * BCE(exit_logits[i])`` instead of ``BCE(logits)``."""

    logits: Tensor
    aux_loss: Tensor | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    exit_logits: list[Tensor] | None = None
    exit_loss_weights: list[float] | None = None
