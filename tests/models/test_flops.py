"""The one FLOP counter (models/flops.py) against hand counts: forward, forward + backward with
and without input gradients, attention on its math path, state restored."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from rankmixer.models.flops import count_flops, train_flops_per_sample


def test_forward_and_backward_by_hand():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 3)).eval()
    x = torch.randn(4, 5)
    fwd = 2 * (5 * 7 + 7 * 3)  # per row, 2 FLOPs per multiply-add
    assert count_flops(lambda: model(x)) == 4 * fwd
    out = train_flops_per_sample(model, lambda: model(x).sum(), rows=4)
    # backward: both weight gradients (fwd again), and the input gradient of the second layer
    # only (x does not require a gradient, so the first layer's is never computed)
    assert out == {"forward_per_sample": fwd, "train_per_sample": fwd + fwd + 2 * 7 * 3}
    assert all(p.grad is None for p in model.parameters()) and not model.training  # cleaned up, mode restored
    x.requires_grad_(True)
    assert train_flops_per_sample(model, lambda: model(x).sum(), rows=4)["train_per_sample"] == 3 * fwd


def test_attention_is_counted_on_its_math_path():
    torch.manual_seed(0)
    B, L, E = 2, 6, 8
    mha = nn.MultiheadAttention(E, num_heads=2, batch_first=True).eval()
    x = torch.randn(B, L, E)
    with torch.no_grad():
        counted = count_flops(lambda: mha(x, x, x, need_weights=False))
    projections = 4 * 2 * L * E * E  # q, k, v, out
    scores = 2 * 2 * L * L * E  # Q K^T and A V over all heads
    assert counted == B * (projections + scores)
    assert torch.backends.mha.get_fastpath_enabled()  # restored


def _gru_flops_by_hand(B: int, L: int, n_in: int, h: int) -> int:
    # per step: input projection [n_in -> 3h] and hidden projection [h -> 3h], 2 FLOPs per MAC
    return B * L * 2 * 3 * h * (n_in + h)


def test_gru_is_counted_as_its_matmuls():
    B, L, n_in, h = 3, 5, 4, 6
    gru = nn.GRU(n_in, h, batch_first=True).eval()
    x = torch.randn(B, L, n_in)
    with torch.no_grad():
        assert count_flops(lambda: gru(x)) == _gru_flops_by_hand(B, L, n_in, h)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gru_on_cuda_is_counted_like_on_cpu():
    """On CUDA nn.GRU runs cuDNN's fused kernel, which the counter cannot see: counting switches
    cuDNN off, so the count is the CPU's (the hand count)."""
    B, L, n_in, h = 3, 5, 4, 6
    gru = nn.GRU(n_in, h, batch_first=True).eval().cuda()
    x = torch.randn(B, L, n_in, device="cuda")
    with torch.no_grad():
        assert count_flops(lambda: gru(x)) == _gru_flops_by_hand(B, L, n_in, h)
    assert torch.backends.cudnn.enabled  # restored
