"""TokenMixer-Large's mixing-and-reverting block (Jiang et al. 2026, arXiv 2602.06563).

RankMixer's ``X + TokenMixing(X)`` adds a mixed token to an unmixed one: token ``t`` of the sum
mixes head ``h`` of token ``t`` with head ``t`` of token ``h``, and with ``H = T`` the map keeps
only the symmetric part of the ``T x T`` grid of heads (rank ``(T+1)D/2`` of ``TD``).
TokenMixer-Large transforms the mixed tokens first and then reverts the mixing, so that every
residual adds like to like::

    H  = Mix(X)                        T tokens -> H mixed tokens (here H = T)
    H' = H + F_mix(N1(H))              per-token FFN on the mixed layout, residual there
    R  = Revert(H')                    back to the original token layout
    X' = X + F(N2(R))                  per-token FFN, residual to the block's input

(pre-norm, the paper's choice; ``norm_placement=post`` puts ``N`` around each sum instead,
``none`` drops it). With both FFNs at zero the block is the identity, so the residual path
keeps all ``TD`` dimensions. ``F_mix`` and ``F`` are the config's FFN sublayer (per-token FFN,
shared FFN or per-token sparse MoE; see ``sublayers.py``) with their own weights.
Where this differs from the paper (SwiGLU experts, ``H != T``) is in ``docs/rankmixer.md``.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from rankmixer.models.base import add_losses
from rankmixer.models.rankmixer.sublayers import make_block_norm, make_ffn, run_ffn
from rankmixer.nn.token_mixing import TokenMixing


class MixRevertBlock(nn.Module):
    """``forward(x [B, T, D]) -> (x', aux_loss or None, metrics)``, as the module docstring.
    MoE metrics: ``moe/l{i}/mix/...`` for the mixed-layout FFN, ``moe/l{i}/...`` for the other."""

    def __init__(self, cfg: Any, index: int = 0) -> None:
        super().__init__()
        self.mixer = TokenMixing(cfg.num_tokens, cfg.hidden_dim)
        self.residual = cfg.residual
        self.post = cfg.norm_placement == "post"
        self.is_moe = cfg.moe is not None
        self.norm1 = make_block_norm(cfg)
        self.norm2 = make_block_norm(cfg)
        self.ffn_mix = make_ffn(cfg, f"moe/l{index}/mix")
        self.ffn = make_ffn(cfg, f"moe/l{index}")
        self.dropout = nn.Dropout(cfg.dropout) if cfg.dropout > 0 else nn.Identity()

    def _sublayer(self, ffn: nn.Module, norm: nn.Module, x: Tensor, skip: Tensor):
        """``N(F(x) + skip)`` (post) or ``skip + F(N(x))`` (pre / none); no skip without residuals."""
        v, aux, metrics = run_ffn(ffn, self.is_moe, x if self.post else norm(x))
        v = self.dropout(v)
        out = v + skip if self.residual else v
        return (norm(out) if self.post else out), aux, metrics

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor | None, dict[str, float]]:
        h = self.mixer(x)
        h, aux_mix, m_mix = self._sublayer(self.ffn_mix, self.norm1, h, h)
        r = self.mixer.inverse(h)
        out, aux, metrics = self._sublayer(self.ffn, self.norm2, r, x)
        return out, add_losses(aux, aux_mix), {**m_mix, **metrics}
