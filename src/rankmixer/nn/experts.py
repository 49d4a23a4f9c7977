"""A dense mixture of MLP experts with softmax gates (Jacobs et al. 1991, "Adaptive Mixtures of
Local Experts"; one gate per task as in MMoE, Ma et al. 2018)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from rankmixer.nn.mlp import MLP


class MixtureOfExperts(nn.Module):
    """``E`` expert MLPs on the same input and ``G`` softmax gates:

        out_g(x) = sum_e softmax(W_g x + b_g)_e * expert_e(x)

    ``[B, in_dim] -> ([G, B, H], gate weights [G, B, E])``, ``H`` the experts' last width. Every
    expert runs on every row (dense): the gates weight, they do not route.
    """

    def __init__(self, in_dim: int, num_experts: int, hidden: Sequence[int], num_gates: int = 1,
                 dropout: float = 0.0, batch_norm: bool = False) -> None:
        super().__init__()
        if num_experts < 1 or num_gates < 1 or not hidden:
            raise ValueError("need >= 1 expert, >= 1 gate and at least one hidden layer per expert")
        self.experts = nn.ModuleList(
            MLP(in_dim, list(hidden), dropout=dropout, batch_norm=batch_norm) for _ in range(num_experts)
        )
        self.gates = nn.Linear(in_dim, num_gates * num_experts)
        self.num_experts, self.num_gates = num_experts, num_gates
        self.out_features = hidden[-1]

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        experts = torch.stack([e(x) for e in self.experts], dim=1)  # [B, E, H]
        w = self.gates(x).view(x.shape[0], self.num_gates, self.num_experts).softmax(-1)  # [B, G, E]
        out = torch.einsum("bge,beh->gbh", w, experts)
        return out, w.transpose(0, 1)
