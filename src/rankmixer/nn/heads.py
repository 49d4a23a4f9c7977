"""Per-task output towers."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from rankmixer.nn.mlp import MLP


class TaskHeads(nn.Module):
    """One tower per task, each ending in a single logit: ``[B, in_dim] -> [B, num_tasks]``.

    Tower ``t`` is ``MLP(in_dim, hidden, out_dim=1)``. With ``hidden=[]`` every tower is a single
    linear map, and all of them are computed as one ``Linear(in_dim, num_tasks)`` (the same
    function, one matmul).
    """

    def __init__(
        self,
        in_dim: int,
        num_tasks: int,
        hidden: Sequence[int] = (),
        activation: str = "relu",
        dropout: float = 0.0,
        batch_norm: bool = False,
    ) -> None:
        super().__init__()
        if num_tasks < 1:
            raise ValueError(f"num_tasks must be >= 1, got {num_tasks}")
        self.num_tasks = num_tasks
        self.hidden = list(hidden)
        if self.hidden:
            self.towers = nn.ModuleList(
                MLP(in_dim, self.hidden, 1, activation=activation, dropout=dropout, batch_norm=batch_norm)
                for _ in range(num_tasks)
            )
            self.linear = None
        else:
            self.towers = None
            self.linear = nn.Linear(in_dim, num_tasks)

    def forward(self, x: Tensor) -> Tensor:
        if self.linear is not None:
            return self.linear(x)
        return torch.cat([tower(x) for tower in self.towers], dim=1)
