"""Self-attention over field embeddings ``[B, F, d]``: AutoInt's interacting layer and HiFormer's
heterogeneous attention.

Shapes: ``B`` batch, ``F`` (or ``L``) fields/tokens, ``d`` embedding width, ``H`` heads.

The attention itself is written as two matmuls and a softmax (:func:`attend`), not
``F.scaled_dot_product_attention``: with a few dozen tokens the fused kernel buys nothing, and
``torch.utils.flop_counter.FlopCounterMode`` (our FLOPs-per-sample column) counted zero FLOPs for
the fused kernel on CPU (torch 2.13), under-reporting these models.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def attend(q: Tensor, k: Tensor, v: Tensor, scale: float, dropout: float = 0.0) -> Tensor:
    """``softmax(q k^T * scale) v`` over the last two axes (``[..., n, d_k]``, ``[..., L, d_k]``,
    ``[..., L, d_v]`` -> ``[..., n, d_v]``), with dropout on the attention weights."""
    weights = torch.softmax(torch.matmul(q, k.transpose(-1, -2)) * scale, dim=-1)
    if dropout > 0:
        weights = F.dropout(weights, dropout)
    return torch.matmul(weights, v)


class InteractingLayer(nn.Module):
    """AutoInt's interacting layer (Song et al. 2019, "AutoInt: Automatic Feature Interaction
    Learning via Self-Attentive Neural Networks", eqs. 5-8)::

        alpha^h_{m,k} = softmax_k(<W_Q^h e_m, W_K^h e_k> / s)       s = 1, or sqrt(d_h) with use_scale
        e~^h_m       = sum_k alpha^h_{m,k} W_V^h e_k
        e^Res_m      = ReLU([e~^1_m || ... || e~^H_m] + W_Res e_m)

    ``[B, F, in_dim] -> [B, F, attention_dim]`` with ``attention_dim = H * d_h``. Projections are
    bias-free (the paper's ``W``). ``W_Res`` is the identity when the widths agree (as FuxiCTR
    does) and a bias-free linear map otherwise; ``use_residual=False`` drops it. ``layer_norm``
    (not in the paper, FuxiCTR's option) normalises before the ReLU. ``dropout`` is on the
    attention weights.
    """

    def __init__(
        self,
        in_dim: int,
        attention_dim: int,
        num_heads: int = 1,
        use_residual: bool = True,
        use_scale: bool = False,
        layer_norm: bool = False,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if attention_dim % num_heads:
            raise ValueError(f"attention_dim {attention_dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = attention_dim // num_heads
        self.out_features = attention_dim
        self.scale = 1.0 / math.sqrt(self.head_dim) if use_scale else 1.0
        self.dropout = dropout
        self.w_q = nn.Linear(in_dim, attention_dim, bias=False)
        self.w_k = nn.Linear(in_dim, attention_dim, bias=False)
        self.w_v = nn.Linear(in_dim, attention_dim, bias=False)
        self.use_residual = use_residual
        self.w_res = nn.Linear(in_dim, attention_dim, bias=False) if use_residual and in_dim != attention_dim else None
        self.norm = nn.LayerNorm(attention_dim) if layer_norm else None

    def _heads(self, t: Tensor) -> Tensor:
        B, n, _ = t.shape
        return t.view(B, n, self.num_heads, self.head_dim).transpose(1, 2)  # [B, H, F, d_h]

    def forward(self, x: Tensor) -> Tensor:
        B, n, _ = x.shape
        q, k, v = self._heads(self.w_q(x)), self._heads(self.w_k(x)), self._heads(self.w_v(x))
        out = attend(q, k, v, self.scale, self.dropout if self.training else 0.0)  # [B, H, F, d_h]
        out = out.transpose(1, 2).reshape(B, n, self.out_features)
        if self.use_residual:
            out = out + (self.w_res(x) if self.w_res is not None else x)
        if self.norm is not None:
            out = self.norm(out)
        return torch.relu(out)


def _per_token_(w: Tensor, fan_in: int) -> None:
    bound = 1.0 / math.sqrt(fan_in)  # nn.Linear's default, token by token
    nn.init.uniform_(w, -bound, bound)


class HeterogeneousAttention(nn.Module):
    """HiFormer's attention (Gui et al. 2023, "Hiformer: Heterogeneous Feature Interactions
    Learning with Transformers for Recommender Systems") over ``L`` tokens ``[B, L, d]``.

    Every query token ``i`` has its own query projection ``Q_i`` and output projection ``O_i``
    (feature-specific, "heterogeneous"). Keys and values:

    ``heterogeneous`` (the paper's heterogeneous attention layer)
        ``k_j = e_j K_j``, ``v_j = e_j V_j``: one projection per token.
    ``composite`` (the paper's Hiformer layer)
        ``[k_1 .. k_L] = flatten(e) K^``, ``[v_1 .. v_L] = flatten(e) V^`` with
        ``K^, V^ : [L d, L H d_k]``: every token's key and value read *all* tokens. With ``rank``
        ``r`` both are low-rank, ``K^ = U_K W_K`` (``[L d, r] x [r, L H d_k]``), computed as
        ``(flatten(e) U_K) W_K`` (the paper's low-rank approximation of the composite projections).

    Then per head ``h``: ``a^h_{ij} = softmax_j(<q^h_i, k^h_j> / sqrt(d_k))``,
    ``o_i = [sum_j a^h_{ij} v^h_j]_h O_i``. ``num_queries`` (``n``): only the first ``n`` tokens
    have queries and output projections, so the output is ``[B, n, d]`` (the paper's pruning of
    the last layer, where only the task tokens are read); keys and values still come from every
    token. It computes exactly the first ``n`` rows of the unpruned layer with the same weights
    (the pruned layer's per-token parameters are those rows).
    """

    def __init__(
        self,
        num_tokens: int,
        dim: int,
        num_heads: int = 2,
        head_dim: int | None = None,
        mode: str = "composite",
        rank: int | None = None,
        num_queries: int | None = None,
    ) -> None:
        super().__init__()
        if mode not in ("composite", "heterogeneous"):
            raise ValueError(f"unknown attention mode {mode!r}; known: composite, heterogeneous")
        L, d, H = num_tokens, dim, num_heads
        dk = head_dim or max(1, d // H)
        self.num_tokens, self.dim, self.num_heads, self.head_dim = L, d, H, dk
        self.mode, self.rank = mode, rank
        n = self.num_queries = num_queries or L
        if not 1 <= n <= L:
            raise ValueError(f"num_queries must be in [1, {L}], got {n}")

        def composite() -> nn.Module:
            # token-major output: the H*dk values of token j are rows j*H*dk .. (j+1)*H*dk - 1
            if rank is None:
                return nn.Linear(L * d, L * H * dk, bias=False)
            return nn.Sequential(nn.Linear(L * d, rank, bias=False), nn.Linear(rank, L * H * dk, bias=False))

        self.w_q = nn.Parameter(torch.empty(n, d, H * dk))
        self.w_o = nn.Parameter(torch.empty(n, H * dk, d))
        _per_token_(self.w_q, d)
        _per_token_(self.w_o, H * dk)
        if mode == "heterogeneous":
            self.w_k = nn.Parameter(torch.empty(L, d, H * dk))
            self.w_v = nn.Parameter(torch.empty(L, d, H * dk))
            _per_token_(self.w_k, d)
            _per_token_(self.w_v, d)
        else:
            self.k_proj = composite()
            self.v_proj = composite()

    def keys_values(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(k, v)``, each ``[B, L, H * d_k]``."""
        B, L, _ = x.shape
        if self.mode == "heterogeneous":
            return torch.einsum("bld,ldk->blk", x, self.w_k), torch.einsum("bld,ldk->blk", x, self.w_v)
        flat = x.reshape(B, L * self.dim)
        return self.k_proj(flat).view(B, L, -1), self.v_proj(flat).view(B, L, -1)

    def forward(self, x: Tensor) -> Tensor:
        B, L, d = x.shape
        if L != self.num_tokens or d != self.dim:
            raise ValueError(f"expected [B, {self.num_tokens}, {self.dim}], got {list(x.shape)}")
        n, H, dk = self.num_queries, self.num_heads, self.head_dim
        q = torch.einsum("bld,ldk->blk", x[:, :n], self.w_q)
        k, v = self.keys_values(x)
        q = q.view(B, n, H, dk).transpose(1, 2)  # [B, H, n, dk]
        k = k.view(B, L, H, dk).transpose(1, 2)
        v = v.view(B, L, H, dk).transpose(1, 2)
        o = attend(q, k, v, 1.0 / math.sqrt(dk))
        o = o.transpose(1, 2).reshape(B, n, H * dk)
        return torch.einsum("blk,lkd->bld", o, self.w_o)


class TransformerEncoderLayer(nn.Module):
    """Post-norm transformer encoder layer over ``[B, F, d]``: the function of
    ``torch.nn.TransformerEncoderLayer(d, heads, ffn_dim, dropout, activation="relu",
    batch_first=True)`` (tests check it with copied weights), written with :func:`attend` so its
    FLOPs are counted: torch's layer takes a fused fast path in eval mode, which
    ``FlopCounterMode`` counted as zero FLOPs on CPU (torch 2.13)::

        S  = LN(X + Dropout(MHA(X)))         MHA: fused QKV projection, H heads, output projection
        X' = LN(S + Dropout(W2 Dropout(ReLU(W1 S))))
    """

    def __init__(self, dim: int, num_heads: int, ffn_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads, self.head_dim, self.dropout = num_heads, dim // num_heads, dropout
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.ff1, self.ff2 = nn.Linear(dim, ffn_dim), nn.Linear(ffn_dim, dim)
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)

    def forward(self, x: Tensor) -> Tensor:
        B, n, d = x.shape
        p = self.dropout if self.training else 0.0
        q, k, v = self.qkv(x).view(B, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        a = attend(q, k, v, 1.0 / math.sqrt(self.head_dim), p).transpose(1, 2).reshape(B, n, d)
        s = self.norm1(x + F.dropout(self.out(a), p))
        h = F.dropout(torch.relu(self.ff1(s)), p)
        return self.norm2(s + F.dropout(self.ff2(h), p))
