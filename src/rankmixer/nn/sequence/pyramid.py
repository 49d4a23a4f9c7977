"""Pyramid Mixer's encoder (Gong et al., SIGIR'25, arXiv 2506.16942): an MLP-Mixer over one
behaviour ``[B, L, F, D]``, stacked as a pyramid, read out against the candidate.

The paper gives no formulas; this is the reading of ``docs/PAPERS.md``. One mixer block is three
pre-norm residual sublayers (``x <- x + f(LayerNorm_D(x))``):

* position mixing: an MLP across positions, per field and channel, inside non-overlapping
  windows of ``window`` positions (``w -> expansion * w -> w``, shared by every window, field
  and channel). A dense ``L x L`` MLP would cost ``O(L^2)``; windows cost ``O(L * w)``;
* field mixing: an MLP across the ``F`` fields, per position and channel (``F -> e F -> F``);
* channel MLP: across the ``D`` channels, per position and field (``D -> e D -> D``).

Level 0 mixes the behaviours themselves; between levels, pairs of neighbouring positions are
averaged over their real positions (mask-aware mean), so level ``k`` has ``ceil(L / 2^k)``
positions, each covering ``2^k`` behaviours, and its windows span ``w 2^k`` behaviours (longer
periods). Every level is read out against the candidate: DIN's activation unit scores its
positions (keys: the fields of ``spec.keys``; query: the candidate's vectors of those fields),
softmax over the real positions by default, and the weighted sum of every field is one vector
``[F * D]``; a behaviour with no shared field takes the masked mean. Output: ``[B, levels, F D]``.
Cost per level is linear in its length and the lengths halve, so the whole is linear in ``L``.

Alignment: histories arrive oldest first with right padding, so a fixed window grid would put
each row's most recent behaviours in a different window slot. Each row is therefore first
reordered most recent first (:func:`recent_first`): position ``j`` is the ``j``-th most recent
behaviour of every row, windows and pairs are aligned from the most recent behaviour, and the
padding stays at the end (real positions first, as everywhere). Masking: pad positions are zero
before every mixing step and after every residual, and pooling counts real positions only, so
pad ids and extra pad positions change nothing.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F_
from pydantic import Field
from torch import Tensor, nn

from rankmixer.core.strict import StrictModel
from rankmixer.nn.mlp import MLP, make_activation
from rankmixer.nn.sequence.base import BehaviourInput, BehaviourSpec, EncoderOutput, register_encoder
from rankmixer.nn.embedding import masked_mean
from rankmixer.nn.tokenizer import activation_weights


def recent_first(hist: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """``[B, L, ...]`` oldest first, real positions first -> the same rows most recent first
    (position ``j`` = the ``j``-th most recent behaviour), padding still at the end (zeroed)."""
    B, L = mask.shape
    lengths = mask.sum(dim=1, keepdim=True)  # [B, 1]
    pos = torch.arange(L, device=mask.device).unsqueeze(0)
    new_mask = pos < lengths
    idx = (lengths - 1 - pos).clamp_min(0)  # pad slots read position 0 and are zeroed below
    idx = idx.view(B, L, *([1] * (hist.dim() - 2))).expand_as(hist)
    keep = new_mask.view(B, L, *([1] * (hist.dim() - 2))).to(hist.dtype)
    return hist.gather(1, idx) * keep, new_mask


def pad_positions(x: Tensor, mask: Tensor, multiple: int) -> tuple[Tensor, Tensor]:
    """Append pad positions (zeros, mask False) to ``x [B, L, F, D]`` so ``L`` is a multiple."""
    extra = -x.shape[1] % multiple
    if extra == 0:
        return x, mask
    return F_.pad(x, (0, 0, 0, 0, 0, extra)), F_.pad(mask, (0, extra), value=False)


def pair_pool(x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """Mean of neighbouring pairs ``(2i, 2i+1)`` over their real positions: ``[B, L, F, D] ->
    [B, ceil(L/2), F, D]``; a pair with no real position is a pad position (zero, mask False)."""
    x, mask = pad_positions(x, mask, 2)
    B, L, F, D = x.shape
    m = mask.to(x.dtype).view(B, L // 2, 2, 1, 1)
    total = (x.view(B, L // 2, 2, F, D) * m).sum(dim=2)
    count = m.sum(dim=2)
    return total / count.clamp_min(1), mask.view(B, L // 2, 2).any(dim=2)


class PositionMixing(nn.Module):
    """An MLP across the positions of each window of ``window`` positions, per field and
    channel: ``[B, L, F, D] -> [B, L, F, D]`` (``L`` a multiple of ``window``)."""

    def __init__(self, window: int, expansion: int, activation: str) -> None:
        super().__init__()
        self.window = window
        self.fc1 = nn.Linear(window, expansion * window)
        self.act = make_activation(activation)
        self.fc2 = nn.Linear(expansion * window, window)

    def forward(self, x: Tensor) -> Tensor:
        B, L, F, D = x.shape
        w = self.window
        windows = x.view(B, L // w, w, F, D).permute(0, 1, 3, 4, 2)  # [B, n, F, D, w]
        mixed = self.fc2(self.act(self.fc1(windows)))
        return mixed.permute(0, 1, 4, 2, 3).reshape(B, L, F, D)


class FieldMixing(nn.Module):
    """An MLP across the ``F`` fields, per position and channel: ``[B, L, F, D] -> same``."""

    def __init__(self, num_fields: int, expansion: int, activation: str) -> None:
        super().__init__()
        self.mlp = MLP(num_fields, [expansion * num_fields], num_fields, activation=activation)

    def forward(self, x: Tensor) -> Tensor:
        return self.mlp(x.transpose(2, 3)).transpose(2, 3)


class MixerBlock(nn.Module):
    """Position mixing, field mixing and a channel MLP, each ``x <- (x + f(LN(x) * m)) * m``
    with ``m`` the mask: pad positions enter every mixing step as zeros and leave as zeros."""

    def __init__(self, num_fields: int, dim: int, cfg: PyramidConfig) -> None:
        super().__init__()
        self.norms = nn.ModuleList(nn.LayerNorm(dim) for _ in range(3))
        self.mixers = nn.ModuleList([
            PositionMixing(cfg.window, cfg.position_expansion, cfg.activation),
            FieldMixing(num_fields, cfg.field_expansion, cfg.activation),
            MLP(dim, [cfg.channel_expansion * dim], dim, activation=cfg.activation),
        ])

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        m = mask.to(x.dtype)[:, :, None, None]
        for norm, mix in zip(self.norms, self.mixers):
            x = (x + mix(norm(x) * m)) * m
        return x


class PyramidConfig(StrictModel):
    levels: int = Field(default=3, ge=1, description="pyramid levels; level k averages pairs k times (2^k behaviours "
                        "per position) and gives one output vector")
    blocks_per_level: int = Field(default=1, ge=1, description="mixer blocks at each level")
    window: int = Field(default=8, ge=1, description="positions mixed together by the position MLP "
                        "(cost O(L * window))")
    position_expansion: int = Field(default=2, ge=1, description="hidden width of the position MLP, times window")
    field_expansion: int = Field(default=2, ge=1, description="hidden width of the field MLP, times F")
    channel_expansion: int = Field(default=2, ge=1, description="hidden width of the channel MLP, times D")
    activation: str = "gelu"
    attention_hidden: list[int] = Field(default=[32], description="hidden widths of each level's activation unit")
    attention_activation: str = "relu"
    softmax: bool = Field(default=True, description="normalise each level's weights over its real positions "
                          "(the levels differ in length; unnormalised sums would scale with it)")


@register_encoder("pyramid", PyramidConfig)
class PyramidEncoder(nn.Module):
    """Pyramid Mixer over one behaviour, read out per level against the candidate:
    ``[B, levels, F * dim]`` (see the module docstring)."""

    def __init__(self, cfg: PyramidConfig, dim: int, spec: BehaviourSpec, num_context: int) -> None:
        super().__init__()
        self.cfg, self.keys = cfg, list(spec.keys)
        self.num_outputs, self.out_dim = cfg.levels, spec.num_fields * dim
        self.levels = nn.ModuleList(
            nn.ModuleList(MixerBlock(spec.num_fields, dim, cfg) for _ in range(cfg.blocks_per_level))
            for _ in range(cfg.levels))
        self.units = nn.ModuleList(
            MLP(4 * len(self.keys) * dim, cfg.attention_hidden, 1, activation=cfg.attention_activation)
            for _ in range(cfg.levels)) if self.keys else None

    def readout(self, level: int, x: Tensor, mask: Tensor, query: Tensor) -> Tensor:
        """One level's ``[B, L, F, D]`` -> ``[B, F * D]`` against the candidate's ``query``."""
        B, L = mask.shape
        values = x.reshape(B, L, -1)
        if self.units is None:
            return masked_mean(values, mask)
        keys = x[:, :, self.keys].reshape(B, L, -1)
        w = activation_weights(self.units[level], keys, mask, query.reshape(B, -1), self.cfg.softmax)
        return (w.unsqueeze(-1).to(values.dtype) * values).sum(dim=1)

    def forward(self, x: BehaviourInput) -> EncoderOutput:
        h, mask = recent_first(x.hist, x.mask)
        out = []
        for k, blocks in enumerate(self.levels):
            if k > 0:
                h, mask = pair_pool(h, mask)
            h, mask = pad_positions(h, mask, self.cfg.window)
            for block in blocks:
                h = block(h, mask)
            out.append(self.readout(k, h, mask, x.query))
        return EncoderOutput(torch.stack(out, dim=1))
