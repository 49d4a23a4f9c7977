"""FinalMLP's two pieces (Mao et al. 2023, "FinalMLP: An Enhanced Two-Stream MLP Model for CTR
Prediction", AAAI 2023, sections 3.2-3.3): stream-specific feature gates and the multi-head
bilinear fusion of the two streams."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from rankmixer.nn.mlp import MLP


class FeatureGate(nn.Module):
    """Feature selection for one stream: ``x' = 2 sigmoid(MLP(c)) * x`` over the flat input
    ``x [B, D]``. The context ``c [B, ctx_dim]`` is the embeddings of the stream's context fields;
    with ``ctx_dim=None`` (no context fields) it is a learned vector, zero at the start, shared by
    all rows (as in FuxiCTR's FinalMLP), so the gate starts at 1 for every input value."""

    def __init__(self, out_dim: int, ctx_dim: int | None, embedding_dim: int, hidden: Sequence[int] = (64,)) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(1, embedding_dim)) if ctx_dim is None else None
        self.mlp = MLP(ctx_dim or embedding_dim, list(hidden), out_dim=out_dim)

    def forward(self, x: Tensor, ctx: Tensor | None = None) -> Tensor:
        if self.bias is not None:
            # the same gate for every row: computed once, [1, D], broadcast over the batch
            return x * (2.0 * torch.sigmoid(self.mlp(self.bias)))
        if ctx is None:
            raise ValueError("this gate has context fields; pass their embeddings")
        return x * (2.0 * torch.sigmoid(self.mlp(ctx)))


class BilinearFusion(nn.Module):
    """Multi-head bilinear fusion: the two stream outputs ``x [B, Dx]``, ``y [B, Dy]`` are split
    into ``k`` heads and

        out = b + w_x^T x + w_y^T y + sum_h x_h^T W_h y_h          (W_h: [Dx/k, Dy/k])

    one value per output (``out_dim``, one per task here). ``k=1`` is the full bilinear term;
    more heads cut its parameters ``Dx Dy`` to ``Dx Dy / k``.
    """

    def __init__(self, x_dim: int, y_dim: int, num_heads: int = 1, out_dim: int = 1) -> None:
        super().__init__()
        if x_dim % num_heads or y_dim % num_heads:
            raise ValueError(f"stream widths {x_dim}, {y_dim} must be divisible by num_heads {num_heads}")
        self.num_heads, self.out_dim = num_heads, out_dim
        self.hx, self.hy = x_dim // num_heads, y_dim // num_heads
        self.w_x = nn.Linear(x_dim, out_dim)  # its bias is b
        self.w_y = nn.Linear(y_dim, out_dim, bias=False)
        self.w_xy = nn.Parameter(torch.empty(num_heads, self.hx, self.hy, out_dim))
        nn.init.xavier_normal_(self.w_xy.view(num_heads * self.hx, self.hy * out_dim))

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        B = x.shape[0]
        xh = x.view(B, self.num_heads, self.hx)
        yh = y.view(B, self.num_heads, self.hy)
        bilinear = torch.einsum("bhi,hijo,bhj->bo", xh, self.w_xy, yh)
        return self.w_x(x) + self.w_y(y) + bilinear
