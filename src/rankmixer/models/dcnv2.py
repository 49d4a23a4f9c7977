"""DCNv2 (Wang et al. 2021)."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import nn

from rankmixer.data.batch import Batch
from rankmixer.data.feature_map import FeatureMap
from rankmixer.models.base import ModelConfig, ModelOutput
from rankmixer.models.registry import register
from rankmixer.nn.cross import CrossNetV2
from rankmixer.nn.embedding import field_embedding
from rankmixer.nn.heads import TaskHeads
from rankmixer.nn.mlp import MLP


class DCNv2Config(ModelConfig):
    num_cross_layers: int = Field(default=3, ge=0, description="number of cross layers")
    low_rank: int | None = Field(
        default=None, ge=1, description="rank r of W = U V^T in each cross layer; None = full rank"
    )
    structure: Literal["stacked", "parallel"] = Field(
        default="parallel",
        description="stacked: cross network, then DNN on its output; parallel: cross network and "
        "DNN side by side on the embeddings, outputs concatenated",
    )
    dnn_hidden: list[int] = Field(default=[400, 400, 400], description="hidden widths of the DNN")
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0, description="dropout after each DNN layer")
    batch_norm: bool = Field(default=False, description="BatchNorm after each DNN linear layer")
    head_hidden: list[int] = Field(default=[], description="hidden widths of each task's tower")


@register("dcnv2", DCNv2Config)
class DCNv2(nn.Module):
    """DCNv2: cross network with full- or low-rank cross layers, stacked or parallel with a DNN (Wang et al. 2021, "DCN V2: Improved Deep & Cross Network and Practical Lessons for Web-scale Learning to Rank Systems").

    The input ``x0`` is the flattened fields; numerical features enter as fields (a learned
    vector times the value), as in FuxiCTR's DCNv2.
    """

    def __init__(self, feature_map: FeatureMap, cfg: DCNv2Config) -> None:
        super().__init__()
        self.cfg = cfg
        self.embedding = field_embedding(feature_map, cfg.embedding_dim, "DCNv2")
        in_dim = len(self.embedding.field_names) * cfg.embedding_dim
        self.cross = CrossNetV2(in_dim, cfg.num_cross_layers, cfg.low_rank)
        self.dnn = MLP(in_dim, cfg.dnn_hidden, dropout=cfg.dropout, batch_norm=cfg.batch_norm)
        head_in = self.dnn.out_features if cfg.structure == "stacked" else in_dim + self.dnn.out_features
        self.heads = TaskHeads(head_in, feature_map.num_tasks, cfg.head_hidden)

    def forward(self, batch: Batch) -> ModelOutput:
        x0 = self.embedding(batch).fields.flatten(1)  # [B, F * d]
        if self.cfg.structure == "stacked":
            h = self.dnn(self.cross(x0))
        else:
            h = torch.cat([self.cross(x0), self.dnn(x0)], dim=1)
        return ModelOutput(logits=self.heads(h))
