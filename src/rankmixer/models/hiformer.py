"""HiFormer (Gui et al. 2023, Google)."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from rankmixer.data.batch import Batch
from rankmixer.data.feature_map import FeatureMap
from rankmixer.models.base import ModelConfig, ModelOutput
from rankmixer.models.registry import register
from rankmixer.nn.attention import HeterogeneousAttention
from rankmixer.nn.embedding import field_embedding
from rankmixer.nn.mlp import MLP
from rankmixer.nn.per_token_ffn import PerTokenFFN, SharedFFN


class HiFormerConfig(ModelConfig):
    num_layers: int = Field(default=2, ge=1, description="number of HiFormer layers")
    num_heads: int = Field(default=2, ge=1, description="attention heads")
    head_dim: int | None = Field(default=None, ge=1, description="query/key/value width per head (None = embedding_dim / num_heads)")
    attention: Literal["composite", "heterogeneous"] = Field(
        default="composite",
        description="composite: keys/values projected from all tokens (the Hiformer layer); "
        "heterogeneous: one key/value projection per token (the heterogeneous attention layer)",
    )
    low_rank: int | None = Field(default=None, ge=1, description="rank of the composite key/value projections (None = full)")
    ffn: Literal["per_token", "shared"] = Field(
        default="per_token", description="per_token: each token its own FFN (heterogeneous); shared: one FFN for all"
    )
    ffn_expansion: float = Field(default=2.0, gt=0, description="FFN hidden width = round(expansion * embedding_dim)")
    activation: str = Field(default="relu", description="FFN activation")
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0, description="dropout on attention and FFN outputs")
    prune_last_layer: bool = Field(default=True, description="last layer queries only the task tokens (same output, less compute)")
    head_hidden: list[int] = Field(default=[64], description="hidden widths of each task token's tower")


class HiFormerLayer(nn.Module):
    """Post-norm transformer layer with HiFormer attention: ``S = LN(X + Att(X))``,
    ``X' = LN(S + FFN(S))``; with ``num_queries`` only the first tokens are computed (and kept)."""

    def __init__(self, num_tokens: int, cfg: HiFormerConfig, num_queries: int | None = None) -> None:
        super().__init__()
        d = cfg.embedding_dim
        self.num_queries = num_queries or num_tokens
        self.attn = HeterogeneousAttention(num_tokens, d, cfg.num_heads, cfg.head_dim, cfg.attention,
                                           cfg.low_rank, self.num_queries)
        if cfg.ffn == "per_token":  # only the kept tokens need an FFN
            self.ffn: nn.Module = PerTokenFFN(self.num_queries, d, cfg.ffn_expansion, cfg.activation, impl="bmm")
        else:
            self.ffn = SharedFFN(d, cfg.ffn_expansion, cfg.activation)
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.drop = nn.Dropout(cfg.dropout) if cfg.dropout > 0 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        s = self.norm1(x[:, : self.num_queries] + self.drop(self.attn(x)))
        return self.norm2(s + self.drop(self.ffn(s)))


@register("hiformer", HiFormerConfig)
class HiFormer(nn.Module):
    """HiFormer: transformer over feature tokens with per-feature query/output projections and FFNs and composite (optionally low-rank) key/value projections, read out from task tokens (Gui et al. 2023, "Hiformer: Heterogeneous Feature Interactions Learning with Transformers for Recommender Systems").

    Tokens: one learned task token per task, then the field embeddings (numerical features as
    fields; the paper instead projects the concatenated dense features into a few tokens).
    ``num_layers`` :class:`HiFormerLayer`; the last one queries only the task tokens when
    ``prune_last_layer`` (the paper's last-layer pruning: only they are read). Task token ``t``
    goes through its own tower to task ``t``'s logit. Choices where our notes of the paper are
    silent (config fields): post-norm layers, per-token ReLU FFNs (``ffn="shared"`` for one FFN),
    head width ``d / H``, full-rank composite projections unless ``low_rank``, task tokens
    initialised N(0, 0.02).
    """

    def __init__(self, feature_map: FeatureMap, cfg: HiFormerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.embedding_dim
        self.embedding = field_embedding(feature_map, d, "hiformer")
        n_fields = len(self.embedding.field_names)
        self.num_tasks = feature_map.num_tasks
        self.task_tokens = nn.Parameter(torch.randn(self.num_tasks, d) * 0.02)
        L = self.num_tasks + n_fields
        last_queries = self.num_tasks if cfg.prune_last_layer else None
        self.layers = nn.Sequential(*[
            HiFormerLayer(L, cfg, last_queries if i == cfg.num_layers - 1 else None) for i in range(cfg.num_layers)
        ])
        self.towers = nn.ModuleList(MLP(d, cfg.head_hidden, out_dim=1) for _ in range(self.num_tasks))

    def forward(self, batch: Batch) -> ModelOutput:
        fields = self.embedding(batch).fields
        x = torch.cat([self.task_tokens.expand(fields.shape[0], -1, -1).to(fields.dtype), fields], dim=1)
        x = self.layers(x)
        return ModelOutput(logits=torch.cat([tower(x[:, t]) for t, tower in enumerate(self.towers)], dim=1))
