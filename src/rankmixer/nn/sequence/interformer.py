"""InterFormer's sequence side (Zeng et al. 2024, Meta, arXiv 2411.09852) and the encoder "interformer".

``L`` positions (oldest first, pad at the END) of width ``d_s``; ``N`` non-sequence tokens of width ``d``.

* :func:`rope`: rotary positions, pair ``(2i, 2i+1)`` of a head turned by ``p * base^(-2i/d_h)``.
  Positions count back from the request: the most recent behaviour sits at -1 (``i - length``),
  the CLS tokens at 0, so attention sees how recent a behaviour is, whatever the row's length.
* :class:`RoPEAttention`: multi-head self-attention with RoPE on queries and keys and a key
  padding mask (``F.scaled_dot_product_attention``; the FLOP counter runs it on its math path).
* :class:`PMA`: pooling by multi-head attention (Set Transformer): given queries attend over the
  real positions; an empty history pools to zeros.
* :class:`PersonalisedFFN`: ``PFFN(X_sum, S) = S W`` with ``W = reshape(Linear(flat X_sum))``,
  one ``d_s x d_s`` matrix per row.
* :class:`Gating`: ``sigmoid(z * MLP(z))`` elementwise, as the paper writes it (its values lie in
  (0, 1); the MLP runs on each token's last axis).
* :class:`SequenceArch`: ``U = LN(S + PFFN(X_sum, S))``, ``S' = LN(U + MHA(U))`` (the paper's
  ``MHA(PFFN(X_sum, S))``; the residuals and post-norms are our choice).
* Cross arch: :class:`XSummary` ``X_sum = Gating(MLP(flat X))`` (``num_summary`` tokens of width
  ``d``) and :class:`SSummary` ``S_sum = Gating([CLS || PMA || recent])``: the CLS tokens
  (learned, prepended to the sequence before the first layer, carried through every MHA), PMA
  tokens whose queries are learned seeds plus a linear map of ``X_sum`` (our choice: the pooling
  can ask what the candidate asks for; the paper only says PMA), and the ``num_recent`` last real
  positions, most recent first, zeros where a row has fewer.
* :class:`MaskNetMerge`: several behaviours merged position-wise. Our reading: each behaviour
  right-aligned (the j-th most recent behaviour of every sequence meets at one position, the
  merged length is the longest), their vectors concatenated, ``Linear(z * MLP(z))`` (MaskNet's
  instance-guided mask) to ``d_s``.

The encoder ("interformer") runs the sequence side over one behaviour, the row's fields
(``BehaviourInput.context``) as a fixed non-sequence side (its host, e.g. RankMixer, does the
interaction), and returns the last cross arch's gated ``S_sum``; ``models/interformer.py``
interleaves the interaction arch between the layers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from rankmixer.core.strict import StrictModel
from rankmixer.nn.mlp import MLP
from rankmixer.nn.sequence.base import BehaviourInput, BehaviourSpec, EncoderOutput, register_encoder


def rope(x: Tensor, positions: Tensor, base: float = 10000.0) -> Tensor:
    """Rotary position embedding: ``x [..., L, d_h]`` (``d_h`` even), ``positions [..., L]``
    (broadcast against ``x``'s leading axes). Pair ``(x_2i, x_2i+1)`` at position ``p`` turns by
    ``p * base^(-2i / d_h)``."""
    dh = x.shape[-1]
    inv_freq = base ** (-torch.arange(0, dh, 2, device=x.device, dtype=x.dtype) / dh)
    angle = positions.to(x.dtype).unsqueeze(-1) * inv_freq  # [..., L, d_h / 2]
    cos, sin = angle.cos(), angle.sin()
    even, odd = x[..., 0::2], x[..., 1::2]
    return torch.stack([even * cos - odd * sin, even * sin + odd * cos], dim=-1).flatten(-2)


def attendable(key_mask: Tensor) -> Tensor:
    """``[B, L]`` key mask where a row with no real key may attend to all (so softmax stays
    finite); the caller discards such rows' outputs."""
    return key_mask | ~key_mask.any(dim=-1, keepdim=True)


def _heads(x: Tensor, num_heads: int) -> Tensor:
    """``[B, L, D] -> [B, H, L, D / H]``."""
    B, L, D = x.shape
    return x.view(B, L, num_heads, D // num_heads).transpose(1, 2)


def _merge_heads(x: Tensor) -> Tensor:
    """``[B, H, L, d_h] -> [B, L, H * d_h]``."""
    B, H, L, dh = x.shape
    return x.transpose(1, 2).reshape(B, L, H * dh)


def check_width(dim: int, num_heads: int) -> None:
    """Heads must split ``dim`` into even widths (RoPE turns pairs)."""
    if dim % num_heads or (dim // num_heads) % 2:
        raise ValueError(f"interformer: seq_dim {dim} must split into {num_heads} heads of even width")


class RoPEAttention(nn.Module):
    """``softmax(rope(q) rope(k)^T / sqrt(d_h) + mask) v`` per head, then an output projection:
    ``x [B, L, D]``, ``positions [B, L]``, ``key_mask [B, L]`` (True = may be attended to)."""

    def __init__(self, dim: int, num_heads: int, dropout: float = 0.0, rope_base: float = 10000.0) -> None:
        super().__init__()
        check_width(dim, num_heads)
        self.num_heads, self.dropout, self.rope_base = num_heads, dropout, rope_base
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: Tensor, positions: Tensor, key_mask: Tensor) -> Tensor:
        q, k, v = (_heads(t, self.num_heads) for t in self.qkv(x).chunk(3, dim=-1))
        pos = positions.unsqueeze(1)  # [B, 1, L]: the same positions in every head
        q, k = rope(q, pos, self.rope_base), rope(k, pos, self.rope_base)
        mask = attendable(key_mask)[:, None, None, :]
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0)
        return self.out(_merge_heads(o))


class PMA(nn.Module):
    """Pooling by multi-head attention: ``queries [B, n, D]`` attend over ``s [B, L, D]`` at its
    real positions (``mask [B, L]``); ``[B, n, D]``, zeros for a row without a real position."""

    def __init__(self, dim: int, num_heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        check_width(dim, num_heads)
        self.num_heads, self.dropout = num_heads, dropout
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, queries: Tensor, s: Tensor, mask: Tensor) -> Tensor:
        q = _heads(self.q(queries), self.num_heads)
        k, v = (_heads(t, self.num_heads) for t in self.kv(s).chunk(2, dim=-1))
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=attendable(mask)[:, None, None, :],
                                           dropout_p=self.dropout if self.training else 0.0)
        return self.out(_merge_heads(o)) * mask.any(dim=1).to(s.dtype)[:, None, None]


class Gating(nn.Module):
    """``sigmoid(z * MLP(z))``, elementwise over ``z [..., D]`` (the MLP maps each token's ``D``
    values to ``D``)."""

    def __init__(self, dim: int, hidden: Sequence[int] = ()) -> None:
        super().__init__()
        self.mlp = MLP(dim, hidden, dim)

    def forward(self, z: Tensor) -> Tensor:
        return torch.sigmoid(z * self.mlp(z))


class PersonalisedFFN(nn.Module):
    """``S W(X_sum)``: ``x_sum [B, n, d]`` generates one ``[D, D]`` matrix per row that
    multiplies every position of ``s [B, L, D]``. ``s`` may hold ``r`` sequences per row,
    stacked copy-major (``[r * B, L, D]``, copy ``c``'s rows at ``c * B``, as MoS stacks its
    themes): each copy is multiplied by its row's matrix, generated once."""

    def __init__(self, summary_dim: int, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.generate = nn.Linear(summary_dim, dim * dim)

    def forward(self, x_sum: Tensor, s: Tensor) -> Tensor:
        w = self.generate(x_sum.flatten(1)).view(-1, self.dim, self.dim)
        if s.shape[0] == w.shape[0]:
            return torch.bmm(s, w)
        return torch.matmul(s.view(-1, w.shape[0], *s.shape[1:]), w).view_as(s)


class SequenceArch(nn.Module):
    """``U = LN(S + PFFN(X_sum, S))``, ``S' = LN(U + MHA(U))`` over the CLS tokens and positions
    (``S`` may stack several sequences per row of ``X_sum``: :class:`PersonalisedFFN`)."""

    def __init__(self, summary_dim: int, dim: int, num_heads: int, dropout: float = 0.0,
                 rope_base: float = 10000.0) -> None:
        super().__init__()
        self.pffn = PersonalisedFFN(summary_dim, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.attention = RoPEAttention(dim, num_heads, dropout, rope_base)
        self.norm2 = nn.LayerNorm(dim)

    def forward(self, x_sum: Tensor, s: Tensor, positions: Tensor, key_mask: Tensor) -> Tensor:
        u = self.norm1(s + self.pffn(x_sum, s))
        return self.norm2(u + self.attention(u, positions, key_mask))


class XSummary(nn.Module):
    """``X_sum = Gating(MLP(flat X))``: ``[B, N, d] -> [B, num_summary, d]``."""

    def __init__(self, num_x: int, dim: int, num_summary: int, hidden: Sequence[int] = (),
                 gate_hidden: Sequence[int] = ()) -> None:
        super().__init__()
        self.num_summary, self.dim = num_summary, dim
        self.mlp = MLP(num_x * dim, hidden, num_summary * dim)
        self.gate = Gating(dim, gate_hidden)

    def forward(self, x: Tensor) -> Tensor:
        return self.gate(self.mlp(x.flatten(1)).view(-1, self.num_summary, self.dim))


def recent_tokens(s: Tensor, lengths: Tensor, k: int) -> Tensor:
    """``[B, L, D] -> [B, k, D]``: the ``k`` last real positions (``lengths [B]``; pad at the
    end), most recent first; zeros where a row has fewer than ``k``."""
    idx = lengths.unsqueeze(1) - 1 - torch.arange(k, device=s.device).unsqueeze(0)  # [B, k]
    got = s.gather(1, idx.clamp_min(0).unsqueeze(-1).expand(-1, -1, s.shape[-1]))
    return got * (idx >= 0).unsqueeze(-1).to(s.dtype)


class SSummary(nn.Module):
    """``S_sum = Gating([CLS || PMA || recent])``: ``[B, num_cls + num_pma + num_recent, D]``
    from the sequence tokens (CLS first) and ``X_sum`` (the PMA queries)."""

    def __init__(self, summary_dim: int, dim: int, num_cls: int, num_pma: int, num_recent: int, num_heads: int,
                 dropout: float = 0.0, gate_hidden: Sequence[int] = ()) -> None:
        super().__init__()
        self.num_cls, self.num_pma, self.num_recent, self.dim = num_cls, num_pma, num_recent, dim
        if num_pma:
            self.seeds = nn.Parameter(torch.randn(num_pma, dim) / math.sqrt(dim))
            self.personalise = nn.Linear(summary_dim, num_pma * dim)
            self.pma = PMA(dim, num_heads, dropout)
        self.gate = Gating(dim, gate_hidden)

    @property
    def num_outputs(self) -> int:
        return self.num_cls + self.num_pma + self.num_recent

    def forward(self, x_sum: Tensor, tokens: Tensor, mask: Tensor) -> Tensor:
        body = tokens[:, self.num_cls:]
        parts = [tokens[:, : self.num_cls]]
        if self.num_pma:
            queries = self.seeds + self.personalise(x_sum.flatten(1)).view(-1, self.num_pma, self.dim)
            parts.append(self.pma(queries, body, mask))
        if self.num_recent:
            parts.append(recent_tokens(body, mask.sum(dim=1), self.num_recent))
        return self.gate(torch.cat(parts, dim=1))


def with_cls(cls: Tensor, s: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Prepend the CLS tokens ``cls [n, D]`` to ``s [B, L, D]``: (tokens ``[B, n + L, D]``, key
    mask ``[B, n + L]``, RoPE positions ``[B, n + L]``: CLS at 0, position ``i`` at ``i - length``)."""
    B, L = mask.shape
    n = cls.shape[0]
    tokens = torch.cat([cls.to(s.dtype).unsqueeze(0).expand(B, -1, -1), s], dim=1)
    key_mask = torch.cat([torch.ones(B, n, dtype=torch.bool, device=mask.device), mask], dim=1)
    lengths = mask.sum(dim=1, keepdim=True)
    pos = torch.arange(L, device=mask.device).unsqueeze(0) - lengths
    positions = torch.cat([torch.zeros(B, n, dtype=pos.dtype, device=pos.device), pos], dim=1)
    return tokens, key_mask, positions


def right_align(s: Tensor, mask: Tensor, length: Tensor, max_len: int) -> Tensor:
    """``s [B, L, D]`` (real positions first) moved so its last real position lands at
    ``length - 1`` (``length [B]`` >= its own), in ``[B, max_len, D]``; zeros elsewhere."""
    own = mask.sum(dim=1, keepdim=True)
    src = torch.arange(max_len, device=s.device).unsqueeze(0) - (length.unsqueeze(1) - own)  # [B, max_len]
    valid = (src >= 0) & (src < own)
    got = s.gather(1, src.clamp(0, s.shape[1] - 1).unsqueeze(-1).expand(-1, -1, s.shape[-1]))
    return got * valid.unsqueeze(-1).to(s.dtype)


class MaskNetMerge(nn.Module):
    """Several behaviours (each ``[B, L_b, D]`` with its mask) merged into one ``[B, max L_b, D]``
    sequence: right-aligned, concatenated, ``Linear(z * MLP(z))``; merged mask = the longest."""

    def __init__(self, num_behaviours: int, dim: int, hidden: Sequence[int]) -> None:
        super().__init__()
        width = num_behaviours * dim
        self.mask = MLP(width, hidden, width)
        self.out = nn.Linear(width, dim)

    def forward(self, seqs: Sequence[tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
        max_len = max(s.shape[1] for s, _ in seqs)
        length = torch.stack([m.sum(dim=1) for _, m in seqs], dim=1).amax(dim=1)  # [B]
        z = torch.cat([right_align(s, m, length, max_len) for s, m in seqs], dim=-1)
        mask = torch.arange(max_len, device=z.device).unsqueeze(0) < length.unsqueeze(1)
        return self.out(z * self.mask(z)) * mask.unsqueeze(-1).to(z.dtype), mask


class InterFormerEncoderConfig(StrictModel):
    """The sequence side's sizes (shared by the encoder and the full model)."""

    seq_dim: int = Field(default=32, ge=2, description="width d_s of the sequence tokens")
    num_layers: int = Field(default=2, ge=1, description="InterFormer layers")
    num_heads: int = Field(default=2, ge=1, description="attention heads (seq_dim / num_heads even, for RoPE)")
    num_cls: int = Field(default=4, ge=0, description="CLS tokens prepended to the sequence")
    num_pma: int = Field(default=2, ge=0, description="PMA tokens (attention pooling, queries learned + personalised)")
    num_recent: int = Field(default=2, ge=0, description="most recent real positions taken as summary tokens")
    num_summary: int = Field(default=4, ge=1, description="tokens of the non-sequence summary X_sum")
    summary_hidden: list[int] = Field(default=[], description="hidden widths of the MLP in X_sum = Gating(MLP(X))")
    gate_hidden: list[int] = Field(default=[], description="hidden widths of the MLP inside each gating")
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0, description="dropout on the attention weights")
    rope_base: float = Field(default=10000.0, gt=1.0, description="RoPE frequency base")


def sequence_layers(cfg: InterFormerEncoderConfig, num_x: int, dim: int) -> tuple[nn.ModuleList, nn.ModuleList]:
    """Per layer an :class:`XSummary` of ``num_x`` tokens of width ``dim`` and a
    :class:`SequenceArch` personalised by it."""
    if cfg.num_cls + cfg.num_pma + cfg.num_recent == 0:
        raise ValueError("interformer: num_cls + num_pma + num_recent must be at least 1")
    summary_dim = cfg.num_summary * dim
    xs = nn.ModuleList(XSummary(num_x, dim, cfg.num_summary, cfg.summary_hidden, cfg.gate_hidden)
                       for _ in range(cfg.num_layers))
    seqs = nn.ModuleList(SequenceArch(summary_dim, cfg.seq_dim, cfg.num_heads, cfg.dropout, cfg.rope_base)
                         for _ in range(cfg.num_layers))
    return xs, seqs


def s_summary(cfg: InterFormerEncoderConfig, dim: int) -> SSummary:
    """An :class:`SSummary` with ``cfg``'s token counts, its PMA queries personalised by an
    ``X_sum`` of width ``dim``."""
    return SSummary(cfg.num_summary * dim, cfg.seq_dim, cfg.num_cls, cfg.num_pma, cfg.num_recent, cfg.num_heads,
                    cfg.dropout, cfg.gate_hidden)


def register_cls(module: nn.Module, cfg: InterFormerEncoderConfig) -> None:
    """Give ``module`` its learned CLS tokens ``cls [num_cls, seq_dim]`` (an empty buffer when
    there are none: no parameter that never gets a gradient)."""
    if cfg.num_cls:
        module.cls = nn.Parameter(torch.randn(cfg.num_cls, cfg.seq_dim) / math.sqrt(cfg.seq_dim))
    else:
        module.register_buffer("cls", torch.zeros(0, cfg.seq_dim), persistent=False)


@register_encoder("interformer", InterFormerEncoderConfig)
class InterFormerEncoder(nn.Module):
    """InterFormer's sequence and cross arch over one behaviour: ``[B, num_cls + num_pma +
    num_recent, seq_dim]`` gated ``S_sum`` tokens (see the module docstring).

    Each position's ``F`` field vectors are concatenated and projected to ``seq_dim``; the
    non-sequence side is the row's context (every field), summarised per layer by its own
    ``X_sum`` that personalises that layer's FFN."""

    def __init__(self, cfg: InterFormerEncoderConfig, dim: int, spec: BehaviourSpec, num_context: int) -> None:
        super().__init__()
        self.num_outputs, self.out_dim = cfg.num_cls + cfg.num_pma + cfg.num_recent, cfg.seq_dim
        self.project = nn.Linear(spec.num_fields * dim, cfg.seq_dim)
        register_cls(self, cfg)
        self.x_summaries, self.sequence = sequence_layers(cfg, num_context, dim)
        self.final_x = XSummary(num_context, dim, cfg.num_summary, cfg.summary_hidden, cfg.gate_hidden)
        self.final_s = s_summary(cfg, dim)

    def forward(self, x: BehaviourInput) -> EncoderOutput:
        B, L = x.mask.shape
        s = self.project(x.hist.reshape(B, L, -1))
        tokens, key_mask, positions = with_cls(self.cls, s, x.mask)
        for summarise, arch in zip(self.x_summaries, self.sequence):
            tokens = arch(summarise(x.context), tokens, positions, key_mask)
        return EncoderOutput(self.final_s(self.final_x(x.context), tokens, x.mask))
