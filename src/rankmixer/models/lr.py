"""Logistic regression (the baseline)."""

from __future__ import annotations

import torch
from torch import nn

from rankmixer.data.batch import Batch
from rankmixer.data.feature_map import FeatureMap
from rankmixer.models.base import ModelConfig, ModelOutput
from rankmixer.models.registry import register
from rankmixer.nn.embedding import FeatureEmbedding


class LRConfig(ModelConfig):
    """Logistic regression has nothing to tune; ``embedding_dim`` is accepted and ignored (every
    weight is a scalar)."""


@register("lr", LRConfig)
class LR(nn.Module):
    """Logistic regression: one scalar weight per id, per numerical feature and a bias per task (e.g. McMahan et al. 2013, "Ad Click Prediction: a View from the Trenches").

    The per-id weights are a 1-dim :class:`FeatureEmbedding` (fused table); with
    ``numeric_as_field`` its numerical fields are ``w_i * x_i``, i.e. the linear term on the
    dense features. Bags and sequences contribute the mean of their ids' weights. Tasks are
    independent: weights are ``[.., num_tasks]``-wide, so each task is its own regression.
    """

    def __init__(self, feature_map: FeatureMap, cfg: LRConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.num_tasks = feature_map.num_tasks
        self.embedding = FeatureEmbedding(feature_map, dim=self.num_tasks, numeric_as_field=True)
        self.bias = nn.Parameter(torch.zeros(self.num_tasks))

    def forward(self, batch: Batch) -> ModelOutput:
        fields = self.embedding(batch).fields  # [B, F, num_tasks]
        return ModelOutput(logits=fields.sum(dim=1) + self.bias)
