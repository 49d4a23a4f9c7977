"""Token normalisation layers by name: ``layernorm`` (``nn.LayerNorm``) or ``rmsnorm``
(``nn.RMSNorm``: ``x / sqrt(mean(x^2) + eps) * g``, no centring and no bias, the norm
TokenMixer-Large uses). Both normalise the last dimension and use ``eps = 1e-5`` so that the
two differ only in what they compute, not in their epsilon."""

from __future__ import annotations

from typing import Literal

from torch import nn

NormKind = Literal["layernorm", "rmsnorm"]
EPS = 1e-5


def make_norm(kind: str, dim: int) -> nn.Module:
    """A normalisation of the last dimension (width ``dim``) with a learnt gain."""
    if kind == "layernorm":
        return nn.LayerNorm(dim, eps=EPS)
    if kind == "rmsnorm":
        return nn.RMSNorm(dim, eps=EPS)
    raise ValueError(f"unknown norm {kind!r}; known: layernorm, rmsnorm")


def norm_params(kind: str, dim: int) -> int:
    """Parameters of :func:`make_norm` (LayerNorm: gain and bias; RMSNorm: gain)."""
    return 2 * dim if kind == "layernorm" else dim
