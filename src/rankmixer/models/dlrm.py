"""DLRM (Naumov et al. 2019)."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import nn

from rankmixer.data.batch import Batch
from rankmixer.data.feature_map import FeatureMap
from rankmixer.models.base import ModelConfig, ModelOutput
from rankmixer.models.registry import register
from rankmixer.nn.embedding import FeatureEmbedding
from rankmixer.nn.heads import TaskHeads
from rankmixer.nn.interaction import DotInteraction
from rankmixer.nn.mlp import MLP


class DLRMConfig(ModelConfig):
    bottom_mlp: list[int] = Field(
        default=[512, 256],
        description="hidden widths of the bottom MLP on the dense features; a last ReLU layer of "
        "width embedding_dim is appended so its output is one more field",
    )
    top_mlp: list[int] = Field(default=[512, 256], description="hidden widths of the top MLP")
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0, description="dropout after each top-MLP layer")
    head_hidden: list[int] = Field(default=[], description="hidden widths of each task's tower")
    embedding_init_std: float = Field(
        default=1e-2, gt=0,
        description="std of the normal initialisation of the embedding rows (FuxiCTR's default: 1e-4)",
    )
    dense_init: Literal["torch", "xavier"] = Field(
        default="torch",
        description="initialisation of every linear layer (bottom MLP, top MLP, heads): 'torch' = "
        "PyTorch's default (kaiming-uniform weights, uniform biases); 'xavier' = xavier-normal "
        "weights and zero biases, as FuxiCTR's BaseModel.reset_parameters (the DLRM reference code, "
        "facebookresearch/dlrm, draws the same xavier-normal weights, its biases normal(0, 1/sqrt(fan_out)))",
    )


@register("dlrm", DLRMConfig)
class DLRM(nn.Module):
    """DLRM: bottom MLP on dense features, pairwise dot interactions, top MLP (Naumov et al. 2019, "Deep Learning Recommendation Model for Personalization and Recommendation Systems").

    The bottom MLP maps the dense features to one ``embedding_dim`` vector; the dot interaction
    takes every pair ``i < j`` of [bottom output, embedded sparse fields, pooled bags, pooled
    sequences]; the top MLP reads ``[bottom output || interactions]`` and feeds the task heads.
    Without dense features there is no bottom MLP and the top MLP reads the interactions only.
    """

    def __init__(self, feature_map: FeatureMap, cfg: DLRMConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.embedding_dim
        self.embedding = FeatureEmbedding(feature_map, d, numeric_as_field=False, init_std=cfg.embedding_init_std)
        n_dense = len(feature_map.dense)
        self.bottom = MLP(n_dense, [*cfg.bottom_mlp, d]) if n_dense else None
        n_fields = len(self.embedding.field_names) + (1 if self.bottom is not None else 0)
        if n_fields == 0:
            raise ValueError("DLRM needs at least one feature")
        self.interaction = DotInteraction(n_fields)
        top_in = self.interaction.out_features + (d if self.bottom is not None else 0)
        self.top = MLP(top_in, cfg.top_mlp, dropout=cfg.dropout)
        self.heads = TaskHeads(self.top.out_features, feature_map.num_tasks, cfg.head_hidden)
        if cfg.dense_init == "xavier":
            for m in self.modules():
                if isinstance(m, nn.Linear):
                    nn.init.xavier_normal_(m.weight)
                    nn.init.zeros_(m.bias)

    def forward(self, batch: Batch) -> ModelOutput:
        fields = self.embedding(batch).fields  # [B, F, d]
        if self.bottom is not None:
            z = self.bottom(batch.dense)  # [B, d]
            x = torch.cat([z.unsqueeze(1), fields], dim=1)
            top_in = torch.cat([z, self.interaction(x)], dim=1)
        else:
            top_in = self.interaction(fields)
        return ModelOutput(logits=self.heads(self.top(top_in)))
