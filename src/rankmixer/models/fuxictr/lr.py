"""Logistic regression from FuxiCTR's ``LogisticRegression`` layer."""

from __future__ import annotations

import torch
from torch import nn

from rankmixer.data.batch import Batch
from rankmixer.data.feature_map import FeatureMap
from rankmixer.models.base import ModelOutput
from rankmixer.models.fuxictr.common import FuxiCTRConfig, FuxiCTRModel, fuxictr_feature_map, require_fuxictr
from rankmixer.models.registry import register


@register("fuxictr-lr", FuxiCTRConfig)
class FuxiLR(FuxiCTRModel):
    """Logistic regression from FuxiCTR's LogisticRegression layer (1-dim embeddings summed, a bias), as FuxiCTR's LR (FuxiCTR, Zhu et al. 2021).

    One output per task: T LogisticRegression layers (FuxiCTR's has one). Its sequence features
    are sum-pooled (FuxiCTR's choice for 1-dim embeddings), where ours are mean-pooled.
    """

    def __init__(self, feature_map: FeatureMap, cfg: FuxiCTRConfig) -> None:
        nn.Module.__init__(self)
        self.fx = require_fuxictr()
        self.cfg = cfg
        self.feature_map = feature_map
        self.fx_map = fuxictr_feature_map(feature_map, cfg.embedding_dim)
        self.lr = nn.ModuleList(self.fx.layers.LogisticRegression(self.fx_map, use_bias=True)
                                for _ in range(feature_map.num_tasks))
        self.reset_parameters()

    def forward(self, batch: Batch) -> ModelOutput:
        X = self.inputs(batch)
        return ModelOutput(logits=torch.cat([lr(X) for lr in self.lr], dim=1))
