"""Feature-interaction operators over a stack of field embeddings ``[B, F, d]``."""

from __future__ import annotations

import torch
from torch import Tensor, nn


def dot_interaction(x: Tensor, self_interaction: bool = False) -> Tensor:
    """DLRM dot interaction: ``<x_i, x_j>`` for every pair ``i < j`` (``i <= j`` with
    ``self_interaction``), in row-major upper-triangle order.

    x: [B, F, d] -> [B, F (F - 1) / 2] (or [B, F (F + 1) / 2]).
    """
    n = x.shape[1]
    gram = torch.bmm(x, x.transpose(1, 2))  # [B, F, F]
    i, j = torch.triu_indices(n, n, offset=0 if self_interaction else 1, device=x.device)
    return gram[:, i, j]


def num_dot_pairs(num_fields: int, self_interaction: bool = False) -> int:
    """Output width of :func:`dot_interaction` for ``num_fields`` fields."""
    return num_fields * (num_fields + 1) // 2 if self_interaction else num_fields * (num_fields - 1) // 2


class DotInteraction(nn.Module):
    """Module form of :func:`dot_interaction` (DLRM, Naumov et al. 2019)."""

    def __init__(self, num_fields: int, self_interaction: bool = False) -> None:
        super().__init__()
        self.num_fields = num_fields
        self.self_interaction = self_interaction
        i, j = torch.triu_indices(num_fields, num_fields, offset=0 if self_interaction else 1)
        # Flat indices into the [F, F] gram matrix, cached as a buffer (moves with .to()).
        self.register_buffer("flat_index", i * num_fields + j, persistent=False)
        self.out_features = int(i.numel())

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[1] != self.num_fields:
            raise ValueError(f"expected {self.num_fields} fields, got {x.shape[1]}")
        gram = torch.bmm(x, x.transpose(1, 2)).flatten(1)  # [B, F * F]
        return gram[:, self.flat_index]


def fm_second_order(x: Tensor, reduce: bool = True) -> Tensor:
    """Factorization-machine second-order term ``sum_{i<j} <v_i, v_j>`` via
    ``((sum_i v_i)^2 - sum_i v_i^2) / 2`` (Rendle 2010), O(F d).

    x: [B, F, d] -> [B, 1] if ``reduce`` else the per-dimension terms [B, d] (the "bi-interaction"
    vector of NFM).
    """
    square_of_sum = x.sum(dim=1).pow(2)
    sum_of_square = x.pow(2).sum(dim=1)
    out = 0.5 * (square_of_sum - sum_of_square)
    return out.sum(dim=1, keepdim=True) if reduce else out


class FMInteraction(nn.Module):
    """Module form of :func:`fm_second_order`."""

    def __init__(self, reduce: bool = True) -> None:
        super().__init__()
        self.reduce = reduce

    def forward(self, x: Tensor) -> Tensor:
        return fm_second_order(x, self.reduce)
