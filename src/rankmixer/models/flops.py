"""The one FLOP counter: matmul FLOPs of any model or call, counted by torch as it runs.

Model-agnostic on purpose: the accuracy benchmark puts every model's compute next to its AUC,
and the speed benchmark divides measured time by FLOPs. Only RankMixer also has a closed form
(``rankmixer_flops_per_sample``, the paper's count, which the tests check against this
counter). ``torch.utils.flop_counter.FlopCounterMode`` counts matmul-like ops (2 FLOPs per
multiply-add); element-wise ops, normalisation and embedding lookups are not counted, as in the
papers' FLOPs columns.

The counter sees only the aten ops it has formulas for: the fused CPU attention kernels that
``nn.MultiheadAttention`` (its eval "fast path") and ``scaled_dot_product_attention`` pick count
as zero, and so does cuDNN's fused RNN kernel (``_cudnn_rnn``, what ``nn.GRU`` runs on CUDA).
:func:`count_flops` therefore runs with the fast path off, SDPA on its math backend and cuDNN
off, so attention and recurrent layers compute the same function with plain matmuls, counted
alike on every device.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from rankmixer.data.batch import Batch

__all__ = ["count_flops", "forward_flops_per_sample", "train_flops_per_sample"]


def count_flops(fn: Callable[[], object]) -> int:
    """Matmul FLOPs of everything ``fn()`` runs: a forward, or a forward and its backward if
    ``fn`` calls ``backward()``. Attention runs on plain matmuls while counting (see above)."""
    fast_path = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with sdpa_kernel(SDPBackend.MATH), torch.backends.cudnn.flags(enabled=False), \
                FlopCounterMode(display=False) as counter:
            fn()
    finally:
        torch.backends.mha.set_fastpath_enabled(fast_path)
    return counter.get_total_flops()


def forward_flops_per_sample(model: nn.Module, batch: Batch) -> float:
    """Matmul FLOPs of one eval-mode forward on ``batch``, divided by its rows.

    Eval mode is what a served model computes (e.g. a sparse MoE runs only its active experts,
    so its count depends on the routing of these rows); the model's mode is restored after."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            flops = count_flops(lambda: model(batch))
    finally:
        model.train(was_training)
    return flops / max(1, batch.labels.shape[0])


def train_flops_per_sample(model: nn.Module, loss: Callable[[], Tensor], rows: int) -> dict[str, float]:
    """FLOPs per row of one training-mode forward and of one forward + backward.

    ``loss()`` runs ``model``'s forward on ``rows`` rows and returns a scalar; the backward
    computes what autograd needs (weight gradients where parameters require them, input
    gradients where something upstream does). The gradients it leaves are cleared and the
    model's mode is restored. Returns ``{"forward_per_sample", "train_per_sample"}``."""
    was_training = model.training
    model.train()
    try:
        forward = count_flops(loss)
        both = count_flops(lambda: loss().backward())
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    return {"forward_per_sample": forward / rows, "train_per_sample": both / rows}
