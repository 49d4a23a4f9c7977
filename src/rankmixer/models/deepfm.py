"""DeepFM (Guo et al. 2017)."""

from __future__ import annotations

from pydantic import Field
from torch import nn

from rankmixer.data.batch import Batch
from rankmixer.data.feature_map import FeatureMap
from rankmixer.models.base import ModelConfig, ModelOutput
from rankmixer.models.registry import register
from rankmixer.nn.embedding import FeatureEmbedding, field_embedding
from rankmixer.nn.heads import TaskHeads
from rankmixer.nn.interaction import fm_second_order
from rankmixer.nn.mlp import MLP


class DeepFMConfig(ModelConfig):
    dnn_hidden: list[int] = Field(default=[400, 400, 400], description="hidden widths of the DNN")
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0, description="dropout after each DNN layer")
    batch_norm: bool = Field(default=False, description="BatchNorm after each DNN linear layer")
    head_hidden: list[int] = Field(default=[], description="hidden widths of each task's tower")


@register("deepfm", DeepFMConfig)
class DeepFM(nn.Module):
    """DeepFM: first-order + FM second-order + DNN over shared field embeddings (Guo et al. 2017, "DeepFM: A Factorization-Machine based Neural Network for CTR Prediction").

    Numerical features enter as fields (a learned vector times the value), as in FuxiCTR. The
    first-order term has its own 1-dim embeddings (also a :class:`FeatureEmbedding`). Multi-task:
    the first-order and FM terms are shared and added to *every* task's logit; the DNN feeds one
    tower per task (:class:`TaskHeads`, whose biases are the per-task biases).
    """

    def __init__(self, feature_map: FeatureMap, cfg: DeepFMConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embedding = field_embedding(feature_map, cfg.embedding_dim, "DeepFM")
        self.first_order = FeatureEmbedding(feature_map, 1, numeric_as_field=True)
        n_fields = len(self.embedding.field_names)
        self.dnn = MLP(n_fields * cfg.embedding_dim, cfg.dnn_hidden, dropout=cfg.dropout, batch_norm=cfg.batch_norm)
        self.heads = TaskHeads(self.dnn.out_features, feature_map.num_tasks, cfg.head_hidden)

    def forward(self, batch: Batch) -> ModelOutput:
        fields = self.embedding(batch).fields  # [B, F, d]
        linear = self.first_order(batch).fields.sum(dim=1)  # [B, 1]
        fm = fm_second_order(fields)  # [B, 1]
        deep = self.heads(self.dnn(fields.flatten(1)))  # [B, T]
        return ModelOutput(logits=deep + linear + fm)
