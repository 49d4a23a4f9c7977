"""The named RankMixer variants: ``rankmixer-{tiny,100m,1b}`` and their sparse-MoE versions.

The sizes are the paper's (T, D, L) for its 100M and 1B models; the paper never states the
expansion k, and k = 3 puts the two sizes nearest its parameter counts (``docs/rankmixer.md``).
The MoE variants use the paper's 8 experts at 1/8 activation for the big ones (8x the FFN
parameters, the dense model's compute at inference) and 4 experts at 1/4 for tiny.
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


register_variants()

__all__ = ["MOE", "SIZES", "register_variants"]
