"""Forward FLOPs per sample of any model, counted by torch on a real batch.

Model-agnostic on purpose: the accuracy benchmark puts every model's compute next to its AUC,
and only RankMixer has an analytic count (``rankmixer_flops_per_sample``, which the RankMixer
tests check against this same counter). ``torch.utils.flop_counter.FlopCounterMode`` counts
matmul-like ops (2 FLOPs per multiply-add); element-wise ops, normalisation and embedding
lookups are not counted, as in the papers' FLOPs columns.

The counter sees only the aten ops it has formulas for: the fused CPU attention kernels that
``nn.MultiheadAttention`` (its eval "fast path") and ``scaled_dot_product_attention`` pick count
as zero. Counting therefore runs with the fast path off and SDPA on its math backend, which
computes the same attention with plain matmuls.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from rankmixer.data.batch import Batch


def forward_flops_per_sample(model: nn.Module, batch: Batch) -> float:
    """Matmul FLOPs of one eval-mode forward on ``batch``, divided by its rows.

    Eval mode is what a served model computes (e.g. a sparse MoE runs only its active experts,
    so its count depends on the routing of these rows); the model's mode is restored after."""
    was_training, fast_path = model.training, torch.backends.mha.get_fastpath_enabled()
    model.eval()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
            model(batch)
    finally:
        torch.backends.mha.set_fastpath_enabled(fast_path)
        model.train(was_training)
    return counter.get_total_flops() / max(1, batch.labels.shape[0])
