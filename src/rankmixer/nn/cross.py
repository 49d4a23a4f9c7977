"""DCNv2 cross network (Wang et al. 2021, "DCN V2: Improved Deep & Cross Network and Practical
Lessons for Web-scale Learning to Rank Systems", WWW 2021)."""

from __future__ import annotations

from torch import Tensor, nn


class CrossLayerV2(nn.Module):
    """One cross layer: ``x_{l+1} = x0 * (W x_l + b) + x_l``.

    Full rank: ``W`` is ``[D, D]``. Low rank (``rank=r``): ``W = U V^T`` with ``U, V`` of shape
    ``[D, r]``, computed as ``U (V^T x_l)`` in O(D r) (the paper's eq. 2 without the mixture of
    experts).
    """

    def __init__(self, dim: int, rank: int | None = None) -> None:
        super().__init__()
        self.dim = dim
        self.rank = rank
        if rank is None:
            self.w = nn.Linear(dim, dim)  # W x + b
        else:
            if rank < 1:
                raise ValueError(f"low rank must be >= 1, got {rank}")
            self.v = nn.Linear(dim, rank, bias=False)  # weight [r, D] = V^T
            self.u = nn.Linear(rank, dim)  # weight [D, r] = U, bias = b

    def forward(self, x0: Tensor, x: Tensor) -> Tensor:
        wx = self.w(x) if self.rank is None else self.u(self.v(x))
        return x0 * wx + x


class CrossNetV2(nn.Module):
    """A stack of ``num_layers`` :class:`CrossLayerV2` over ``[B, D]`` input; output ``[B, D]``."""

    def __init__(self, dim: int, num_layers: int, low_rank: int | None = None) -> None:
        super().__init__()
        self.layers = nn.ModuleList(CrossLayerV2(dim, low_rank) for _ in range(num_layers))
        self.out_features = dim

    def forward(self, x0: Tensor) -> Tensor:
        x = x0
        for layer in self.layers:
            x = layer(x0, x)
        return x
