"""Wukong's blocks (Zhang et al. 2024, "Wukong: Towards a Scaling Law for Large-Scale
Recommendation", section 3): the Factorization Machine Block, the Linear Compress Block and the
interaction layer that stacks them. All work on ``[B, n, d]`` stacks of embeddings.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from rankmixer.nn.mlp import MLP


def fm_matrix(x: Tensor, proj: Tensor | None = None) -> Tensor:
    """Wukong's FM: all pairwise dot products ``X X^T`` (``[B, n, n]``), or with ``proj`` ``Y``
    (``[n, k]``) the "optimized FM" ``X X^T Y`` computed as ``X (X^T Y)`` in O(n d k) instead of
    O(n^2 d) (``[B, n, k]``)."""
    if proj is None:
        return torch.bmm(x, x.transpose(1, 2))
    return torch.bmm(x, torch.matmul(x.transpose(1, 2), proj))  # [B, n, d] x [B, d, k]


class FactorizationMachineBlock(nn.Module):
    """``FMB(X) = reshape(MLP(LN(flatten(FM(X)))), n_F, d)``: ``[B, n, d] -> [B, n_F, d]``.

    ``rank`` ``k``: FM is ``X X^T Y`` with a learned ``Y [n, k]`` (the paper's optimized FM);
    ``None`` uses the full ``X X^T``. The MLP has ReLU hidden layers and a linear output.
    """

    def __init__(self, num_emb: int, dim: int, num_out: int, rank: int | None = 8,
                 hidden: Sequence[int] = (256,), dropout: float = 0.0) -> None:
        super().__init__()
        self.num_emb, self.dim, self.num_out = num_emb, dim, num_out
        self.proj = nn.Parameter(torch.randn(num_emb, rank) / num_emb**0.5) if rank else None
        width = num_emb * (rank or num_emb)
        self.norm = nn.LayerNorm(width)
        self.mlp = MLP(width, list(hidden), out_dim=num_out * dim, dropout=dropout)

    def forward(self, x: Tensor) -> Tensor:
        z = fm_matrix(x, self.proj).flatten(1)
        return self.mlp(self.norm(z)).view(x.shape[0], self.num_out, self.dim)


class LinearCompressBlock(nn.Module):
    """``LCB(X) = W_L X`` with ``W_L [n_L, n]``: linear recombination of the embeddings (no higher
    interaction order), ``[B, n, d] -> [B, n_L, d]``."""

    def __init__(self, num_emb: int, num_out: int) -> None:
        super().__init__()
        self.weight = nn.Linear(num_emb, num_out, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.weight(x.transpose(1, 2)).transpose(1, 2)


class WukongLayer(nn.Module):
    """``X' = LN(concat(FMB(X), LCB(X)) + res(X))``: ``[B, n, d] -> [B, n_F + n_L, d]``; ``res``
    is the identity when ``n == n_F + n_L`` and a linear map over the embedding axis otherwise
    (the paper: "a linear projection is applied to the residual when shapes differ")."""

    def __init__(self, num_emb: int, dim: int, num_fmb: int, num_lcb: int, rank: int | None = 8,
                 fmb_hidden: Sequence[int] = (256,), dropout: float = 0.0) -> None:
        super().__init__()
        self.fmb = FactorizationMachineBlock(num_emb, dim, num_fmb, rank, fmb_hidden, dropout)
        self.lcb = LinearCompressBlock(num_emb, num_lcb)
        n_out = num_fmb + num_lcb
        self.residual = None if n_out == num_emb else LinearCompressBlock(num_emb, n_out)
        self.norm = nn.LayerNorm(dim)
        self.num_out = n_out

    def forward(self, x: Tensor) -> Tensor:
        res = x if self.residual is None else self.residual(x)
        return self.norm(torch.cat([self.fmb(x), self.lcb(x)], dim=1) + res)
