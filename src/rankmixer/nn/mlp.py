"""A plain multi-layer perceptron, the building block of every tower in the repo."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn


class Dice(nn.Module):
    """DIN's data-adaptive activation (Zhou et al. 2018): ``f(s) = p(s) s + (1 - p(s)) alpha s``,
    ``p(s) = sigmoid((s - E[s]) / sqrt(Var[s] + eps))`` per unit, with batch statistics in
    training and running ones at inference (a ``BatchNorm1d`` without affine; ``eps`` 1e-9 and
    momentum 0.01 as DIN's code and FuxiCTR's ``Dice``); ``alpha`` per unit, starting at 0.
    Inputs ``[..., width]``: the statistics run over every leading position."""

    def __init__(self, width: int, eps: float = 1e-9, momentum: float = 0.01) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(width, affine=False, eps=eps, momentum=momentum)
        self.alpha = nn.Parameter(torch.zeros(width))

    def forward(self, x: Tensor) -> Tensor:
        p = torch.sigmoid(self.bn(x.reshape(-1, x.shape[-1])).reshape(x.shape))
        return p * x + (1 - p) * self.alpha * x


_ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "swish": nn.SiLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "leaky_relu": nn.LeakyReLU,
    "prelu": nn.PReLU,
    "identity": nn.Identity,
}


def make_activation(name: str, width: int | None = None) -> nn.Module:
    """A fresh activation module by name (relu, gelu, silu/swish, tanh, sigmoid, leaky_relu,
    prelu, identity, and dice, which needs the ``width`` of its input for its per-unit
    statistics)."""
    if name.lower() == "dice":
        if width is None:
            raise ValueError("activation 'dice' needs the layer width; this layer does not give it")
        return Dice(width)
    try:
        return _ACTIVATIONS[name.lower()]()
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; known: {', '.join([*_ACTIVATIONS, 'dice'])}") from None


class MLP(nn.Module):
    """``in_dim -> hidden[0] -> ... -> hidden[-1] [-> out_dim]``.

    Each hidden layer is Linear -> (BatchNorm1d) -> activation -> (Dropout). The optional output
    layer is a bare Linear (no normalisation, activation or dropout). With ``hidden=[]`` and
    ``out_dim=None`` the MLP is the identity. ``out_features`` is the output width.
    Inputs may have any leading shape ``[..., in_dim]`` unless ``batch_norm`` (then ``[B, in_dim]``).
    """

    def __init__(
        self,
        in_dim: int,
        hidden: Sequence[int],
        out_dim: int | None = None,
        activation: str = "relu",
        dropout: float = 0.0,
        batch_norm: bool = False,
    ) -> None:
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        layers: list[nn.Module] = []
        d = in_dim
        for h in hidden:
            layers.append(nn.Linear(d, h))
            if batch_norm:
                layers.append(nn.BatchNorm1d(h))
            layers.append(make_activation(activation, h))
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            d = h
        if out_dim is not None:
            layers.append(nn.Linear(d, out_dim))
            d = out_dim
        self.layers = nn.Sequential(*layers)
        self.in_features = in_dim
        self.out_features = d

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)

