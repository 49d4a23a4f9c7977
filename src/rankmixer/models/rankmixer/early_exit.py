"""Early exit for RankMixer: the exit heads' config and inference that stops early.

After Zhou et al. 2025 ("The Efficiency vs. Accuracy Trade-off: Optimizing RAG-Enhanced LLM
Recommender Systems Using Multi-Head Early Exit", arXiv 2501.02173). With
``model.early_exit`` set, RankMixer has an exit head after every block (mean over the block's
tokens -> its own TaskHeads; the final head is the last exit), trained jointly: the trainer sums
the exits' BCE losses with :meth:`EarlyExitConfig.weights`.

At inference (:func:`forward_early_exit`) a row stops at the first exit whose confidence passes
that exit's threshold, and later blocks run only on the rows still in flight. Confidence is the
paper's criterion, the ratio of the positive to the negative prediction, taken in log space and
in either direction: ``|logit|`` of the confidence task (``|logit| >= t`` is
``max(p, 1-p) >= sigmoid(t)``). ``rankmixer calibrate-exit`` picks the thresholds
(``rankmixer/early_exit.py``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from rankmixer.core.strict import StrictModel
from rankmixer.data.batch import Batch


class EarlyExitConfig(StrictModel):
    """Exit heads after every block. The paper trains its heads jointly but gives no loss
    weights for a ranking model; ``linear`` weighs exit ``i`` (1-based) by ``i`` as PABEE
    (Zhou et al. 2020) does, so deeper, better exits weigh more. Weights are normalised to sum
    to 1, which keeps the loss on the single-head BCE scale."""

    loss_weights: Literal["linear", "uniform"] | list[float] = Field(
        default="linear", description="per-exit loss weights: linear (i), uniform, or one number per block"
    )
    head_hidden: list[int] | None = Field(
        default=None, description="hidden widths of the intermediate exits' towers (default: head_hidden)"
    )
    confidence_task: int = Field(default=0, ge=0, description="task whose |logit| decides the exit")

    def weights(self, num_exits: int) -> list[float]:
        if self.loss_weights == "uniform":
            raw = [1.0] * num_exits
        elif self.loss_weights == "linear":
            raw = [float(i + 1) for i in range(num_exits)]
        else:
            raw = [float(w) for w in self.loss_weights]
        total = sum(raw)
        return [w / total for w in raw]


@dataclass
class EarlyExitOutput:
    """logits ``[B, n_tasks]`` (each row's from the exit it took); exit_index ``[B]`` (0-based;
    ``num_exits - 1`` = the final head); rows_per_block: rows that entered each block."""

    logits: Tensor
    exit_index: Tensor
    rows_per_block: list[int]


@torch.no_grad()
def forward_early_exit(model: nn.Module, batch: Batch, thresholds: Sequence[float | None]) -> EarlyExitOutput:
    """Inference with early exit on a :class:`~rankmixer.models.rankmixer.RankMixer` (what
    its ``forward_early_exit`` method calls): after block ``i`` (of the first L-1), the rows
    whose confidence ``|logit[:, confidence_task]|`` is ``>= thresholds[i]`` take that exit's
    logits and leave; only the remaining rows (indexed, not masked) enter block ``i+1``.
    ``None`` (or inf) never exits there, and skips that exit head's compute. Rows still in
    flight after block L take the final head. With no exit taken, the logits are those of
    ``forward`` in eval mode."""
    if model.exit_heads is None:
        raise ValueError("this RankMixer has no exit heads (set model.early_exit)")
    n_inner = len(model.exit_heads)
    if len(thresholds) != n_inner:
        raise ValueError(f"need {n_inner} thresholds (one per exit before the final head), got {len(thresholds)}")
    task = model.cfg.early_exit.confidence_task
    x = model.tokens(batch)
    linear = model.linear_term(batch)
    B = x.shape[0]
    logits = x.new_empty(B, model.heads.num_tasks)
    exit_index = torch.full((B,), n_inner, dtype=torch.long, device=x.device)
    rows = torch.arange(B, device=x.device)  # original index of each row still in flight
    rows_per_block: list[int] = []
    backbone = model.backbone
    blocks, recent = backbone.blocks, [x]

    def head(h: nn.Module, x: Tensor) -> Tensor:
        z = h(backbone.final_norm(x).mean(dim=1))
        return z + (linear[rows] if isinstance(linear, Tensor) else linear)

    for i in range(len(blocks)):
        rows_per_block.append(int(rows.numel()))
        x, recent = backbone.step(i, x, recent)[:2]
        t = thresholds[i] if i < n_inner else None
        if t is None or math.isinf(t):
            continue
        z = head(model.exit_heads[i], x)
        done = z[:, task].abs() >= t
        if bool(done.any()):
            logits[rows[done]] = z[done].to(logits.dtype)
            exit_index[rows[done]] = i
            keep = ~done
            rows, x, recent = rows[keep], x[keep], [r[keep] for r in recent]
            if rows.numel() == 0:
                break
    rows_per_block += [0] * (len(blocks) - len(rows_per_block))
    if rows.numel():
        logits[rows] = head(model.heads, x).to(logits.dtype)
    return EarlyExitOutput(logits=logits, exit_index=exit_index, rows_per_block=rows_per_block)
