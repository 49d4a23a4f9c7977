"""The named RankMixer variants: ``rankmixer-{tiny,100m,1b}`` and their sparse-MoE versions.

The sizes are the paper's (T, D, L) for its 100M and 1B models; the paper never states the
expansion k, and k = 3 puts the two sizes nearest its parameter counts (``docs/rankmixer.md``).
The MoE variants use the paper's 8 experts at 1/8 activation for the big ones (8x the FFN
parameters, the dense model's compute at inference) and 4 experts at 1/4 for tiny.

``tokenmixer-large`` (Jiang et al. 2026, arXiv 2602.06563) presets TokenMixer-Large's block
(mixing and reverting), pre-RMSNorm, an inter-layer residual every 2 blocks with deep
supervision, over a RankMixer of 4 blocks; ``tokenmixer-large-moe`` adds its Sparse-Pertoken
MoE (4 experts of a quarter of the dense width each, top-2, shared expert, gate scale 2: the
paper's "first enlarge, then sparse" at 1:2). ``docs/rankmixer.md`` says what is the paper's.
"""

from __future__ import annotations

from typing import Any

import rankmixer.models.rankmixer.model  # noqa: F401  (registers the base model first)
from rankmixer.models.registry import register_variant

SIZES: dict[str, dict[str, Any]] = {
    "tiny": {"embedding_dim": 8, "num_tokens": 8, "hidden_dim": 64, "num_layers": 2, "expansion": 2},
    "100m": {"num_tokens": 16, "hidden_dim": 768, "num_layers": 2, "expansion": 3},
    "1b": {"num_tokens": 32, "hidden_dim": 1536, "num_layers": 2, "expansion": 3},
}
MOE: dict[str, dict[str, Any]] = {
    "tiny": {"num_experts": 4, "routing": "relu_dtsi", "target_active_ratio": 0.25},
    "100m": {"num_experts": 8, "routing": "relu_dtsi", "target_active_ratio": 0.125},
    "1b": {"num_experts": 8, "routing": "relu_dtsi", "target_active_ratio": 0.125},
}

TOKENMIXER_LARGE: dict[str, Any] = {
    "block": "mix_revert", "norm_placement": "pre", "norm": "rmsnorm", "num_layers": 4,
    "inter_residual": 2, "aux_loss_weight": 0.1,
}
SP_MOE: dict[str, Any] = {
    "num_experts": 4, "routing": "topk", "top_k": 2, "expert_hidden_mult": 0.25, "shared_expert": True,
    "gate_scale": 2.0, "sparse_training": True, "load_balance_weight": 0.01,
}


def register_variants() -> None:
    """Register every size and its MoE version (idempotent: the registry accepts an identical
    re-registration)."""
    for size, dims in SIZES.items():
        shape = f"T={dims['num_tokens']}, D={dims['hidden_dim']}, L={dims['num_layers']}, k={dims['expansion']}"
        register_variant(f"rankmixer-{size}", "rankmixer", dims, f"RankMixer {size}: {shape}")
        moe = MOE[size]
        register_variant(
            f"rankmixer-{size}-moe", "rankmixer", {**dims, "moe": moe},
            f"RankMixer {size}, sparse MoE FFN: {shape}, {moe['num_experts']} experts, "
            f"{moe['routing']}, target active {moe['target_active_ratio']}",
        )
    register_variant(
        "tokenmixer-large", "rankmixer", TOKENMIXER_LARGE,
        "TokenMixer-Large (Jiang et al. 2026): mix-and-revert blocks, pre-RMSNorm, inter-layer residuals, aux loss",
    )
    register_variant(
        "tokenmixer-large-moe", "rankmixer", {**TOKENMIXER_LARGE, "moe": SP_MOE},
        "TokenMixer-Large with Sparse-Pertoken MoE: 4 experts, top-2 + shared expert, sparse train and infer",
    )


register_variants()

__all__ = ["MOE", "SIZES", "SP_MOE", "TOKENMIXER_LARGE", "register_variants"]
