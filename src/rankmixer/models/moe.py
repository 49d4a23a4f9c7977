"""Mixture-of-experts MLP baseline (the RankMixer paper's "MoE" peer)."""

from __future__ import annotations

import torch
from pydantic import Field
from torch import nn

from rankmixer.data.batch import Batch
from rankmixer.data.feature_map import FeatureMap
from rankmixer.models.base import ModelConfig, ModelOutput
from rankmixer.models.registry import register
from rankmixer.nn.embedding import field_embedding
from rankmixer.nn.experts import MixtureOfExperts
from rankmixer.nn.mlp import MLP


class MoEMLPConfig(ModelConfig):
    num_experts: int = Field(default=4, ge=1, description="number of expert MLPs")
    expert_hidden: list[int] = Field(default=[256, 256], min_length=1, description="hidden widths of each expert")
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0, description="dropout after each expert layer")
    batch_norm: bool = Field(default=False, description="BatchNorm after each expert linear layer")
    head_hidden: list[int] = Field(default=[], description="hidden widths of each task's tower")


@register("moe", MoEMLPConfig)
class MoEMLP(nn.Module):
    """MoE: several expert MLPs over the shared concatenated embeddings, mixed by a softmax gate per task (Jacobs et al. 1991, "Adaptive Mixtures of Local Experts"; per-task gates as in MMoE, Ma et al. 2018).

    Dense: every expert runs on every row and the gate weights them (the sparse, routed
    per-token MoE is RankMixer's, ``rankmixer-*-moe``). With one task this is a plain mixture of
    experts; with several, each task has its own gate and tower over the same experts.
    """

    def __init__(self, feature_map: FeatureMap, cfg: MoEMLPConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embedding = field_embedding(feature_map, cfg.embedding_dim, "moe")
        in_dim = len(self.embedding.field_names) * cfg.embedding_dim
        T = feature_map.num_tasks
        self.experts = MixtureOfExperts(in_dim, cfg.num_experts, cfg.expert_hidden, num_gates=T,
                                        dropout=cfg.dropout, batch_norm=cfg.batch_norm)
        self.towers = nn.ModuleList(MLP(self.experts.out_features, cfg.head_hidden, out_dim=1) for _ in range(T))

    def forward(self, batch: Batch) -> ModelOutput:
        mixed, _ = self.experts(self.embedding(batch).flat())  # [T, B, H]
        return ModelOutput(logits=torch.cat([tower(mixed[t]) for t, tower in enumerate(self.towers)], dim=1))
