"""The sublayers both RankMixer blocks build from the config (a ``RankMixerConfig``; typed
``Any`` here so that the blocks' modules need not import each other): the FFN sublayer and the
block norms."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from rankmixer.nn.norm import make_norm
from rankmixer.nn.per_token_ffn import PerTokenFFN, SharedFFN


def make_ffn(cfg: Any, metric_prefix: str) -> nn.Module:
    """The block's FFN sublayer ``[B, T, D] -> [B, T, D]``: per-token FFN, shared FFN or
    per-token sparse MoE (which returns ``(out, aux_loss, metrics)``; see :func:`run_ffn`)."""
    T, D = cfg.num_tokens, cfg.hidden_dim
    if cfg.moe is not None:
        from rankmixer.nn.moe import PerTokenMoE  # lazy: only MoE models need the module

        return PerTokenMoE(T, D, cfg.expansion, cfg.moe, metric_prefix=metric_prefix)
    if cfg.ffn == "per_token":
        return PerTokenFFN(T, D, cfg.expansion, cfg.activation, impl=cfg.ffn_impl)
    return SharedFFN(D, cfg.expansion, cfg.activation)


def run_ffn(ffn: nn.Module, is_moe: bool, x: Tensor) -> tuple[Tensor, Tensor | None, dict[str, float]]:
    """``(out, aux_loss or None, metrics)`` of a :func:`make_ffn` module."""
    if is_moe:
        return ffn(x)
    return ffn(x), None, {}


def make_block_norm(cfg: Any) -> nn.Module:
    """A block's norm: the configured layer, or the identity under ``norm_placement=none``."""
    return nn.Identity() if cfg.norm_placement == "none" else make_norm(cfg.norm, cfg.hidden_dim)
