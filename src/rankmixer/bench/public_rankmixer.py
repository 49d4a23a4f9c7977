"""BASELINE for ``rankmixer bench speed``: a straightforward, public-style RankMixer backbone.

Not used by the library. It is written the way public reimplementations of RankMixer write the
block: one ``nn.Sequential(Linear, GELU, Linear)`` per token in an ``nn.ModuleList``, a Python
loop over the tokens, ``torch.stack`` of the outputs, token mixing by ``view``/``transpose``,
post-norm LayerNorms. It computes the same function as
:class:`rankmixer.models.rankmixer.RankMixerBackbone` (``S = LN(TM(X) + X)``,
``X' = LN(PFFN(S) + S)``); :func:`load_from_ours` copies our weights in, so the tests can check
the two agree and the benchmark compares equal work.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class PublicRankMixerBlock(nn.Module):
    def __init__(self, num_tokens: int, dim: int, hidden: int) -> None:
        super().__init__()
        self.num_tokens = num_tokens
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.ffns = nn.ModuleList(
            nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)) for _ in range(num_tokens)
        )

    def forward(self, x: Tensor) -> Tensor:
        B, T, D = x.shape
        mixed = x.view(B, T, T, D // T).transpose(1, 2).reshape(B, T, D)
        s = self.norm1(mixed + x)
        out = torch.stack([self.ffns[t](s[:, t, :]) for t in range(T)], dim=1)
        return self.norm2(out + s)


class PublicRankMixerBackbone(nn.Module):
    """``L`` public-style blocks on ``[B, T, D]``; returns ``[B, T, D]``."""

    def __init__(self, num_tokens: int, dim: int, hidden: int, num_layers: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(PublicRankMixerBlock(num_tokens, dim, hidden) for _ in range(num_layers))

    def forward(self, x: Tensor) -> Tensor:
        for block in self.blocks:
            x = block(x)
        return x


@torch.no_grad()
def load_from_ours(public: PublicRankMixerBackbone, ours: nn.Module) -> None:
    """Copy the weights of a dense, per-token :class:`RankMixerBackbone` (mixing, residuals,
    LayerNorms on) into ``public``. ``nn.Linear.weight`` is ``[out, in]``: the transpose of our
    ``x @ W`` storage."""
    for pb, ob in zip(public.blocks, ours.blocks, strict=True):
        pb.norm1.load_state_dict(ob.norm1.state_dict())
        pb.norm2.load_state_dict(ob.norm2.state_dict())
        w1, b1, w2, b2 = ob.ffn.stacked_weights()
        for t, seq in enumerate(pb.ffns):
            seq[0].weight.copy_(w1[t].T)
            seq[0].bias.copy_(b1[t])
            seq[2].weight.copy_(w2[t].T)
            seq[2].bias.copy_(b2[t])
