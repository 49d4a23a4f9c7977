"""RankMixer's parameter-free multi-head token mixing.

Every token ``x_t`` (width ``D``) is split into ``H`` heads of width ``D/H``; new token ``h`` is
the concatenation over ``t`` of head ``h`` of token ``t``:

    out[b, h, t*(D/H) : (t+1)*(D/H)] = x[b, t, h*(D/H) : (h+1)*(D/H)]

In tensor terms ``x.view(B, T, H, D/H).transpose(1, 2).reshape(B, H, T*D/H)``. With ``H = T``
(the paper's choice, and the only one here) the output is again ``[B, T, D]``, ``D`` must be
divisible by ``T``, and the map is a transpose of a ``T x T`` grid of ``D/T``-wide blocks:
not the identity for ``T > 1``, a permutation of the elements, and its own inverse.
"""

from __future__ import annotations

from torch import Tensor, nn


def token_mixing(x: Tensor) -> Tensor:
    """``[B, T, D] -> [B, T, D]`` with ``H = T`` heads (``D % T == 0``)."""
    if x.dim() != 3:
        raise ValueError(f"token mixing expects [B, T, D], got {list(x.shape)}")
    B, T, D = x.shape
    if D % T:
        raise ValueError(f"token mixing with H = T needs D divisible by T, got D={D}, T={T}")
    return x.reshape(B, T, T, D // T).transpose(1, 2).reshape(B, T, D)


def inverse_token_mixing(x: Tensor) -> Tensor:
    """The inverse of :func:`token_mixing`; with ``H = T`` it is the same map."""
    return token_mixing(x)


class TokenMixing(nn.Module):
    """Module form of :func:`token_mixing` (no parameters). ``num_tokens``/``dim`` are checked
    at build time so a bad config fails before the first batch."""

    def __init__(self, num_tokens: int, dim: int) -> None:
        super().__init__()
        if num_tokens < 1 or dim % num_tokens:
            raise ValueError(f"token mixing needs hidden_dim divisible by num_tokens, got D={dim}, T={num_tokens}")
        self.num_tokens, self.dim = num_tokens, dim

    def forward(self, x: Tensor) -> Tensor:
        return token_mixing(x)

    def inverse(self, x: Tensor) -> Tensor:
        return inverse_token_mixing(x)

    def extra_repr(self) -> str:
        return f"tokens={self.num_tokens}, heads={self.num_tokens}, head_dim={self.dim // self.num_tokens}"
