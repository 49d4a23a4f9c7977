"""The all-concat MLP baseline (the paper's "DLRM-MLP"): every field embedding concatenated
into one vector, then a wide MLP, then one head per task."""

from __future__ import annotations

from pydantic import Field
from torch import nn

from rankmixer.data.batch import Batch
from rankmixer.data.feature_map import FeatureMap
from rankmixer.models.base import ModelConfig, ModelOutput
from rankmixer.models.registry import register, register_variant
from rankmixer.nn.embedding import field_embedding
from rankmixer.nn.heads import TaskHeads
from rankmixer.nn.mlp import MLP


class ConcatMLPConfig(ModelConfig):
    dnn_hidden: list[int] = Field(default=[512, 512], description="hidden widths of the MLP")
    activation: str = Field(default="relu", description="MLP activation")
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0, description="dropout after each MLP layer")
    batch_norm: bool = Field(default=False, description="BatchNorm after each MLP linear layer")
    head_hidden: list[int] = Field(default=[], description="hidden widths of each task's tower")


@register("concat-mlp", ConcatMLPConfig)
class ConcatMLP(nn.Module):
    """All-concat MLP: concatenated field embeddings through one MLP (the DLRM-MLP baseline of Zhu et al. 2025, RankMixer).

    Numerical features enter as fields and sequences as their masked mean, exactly the fields
    :class:`FeatureEmbedding` produces; the default sizes are close to rankmixer-tiny's dense
    parameters, ``concat-mlp-100m`` to rankmixer-100m's.
    """

    def __init__(self, feature_map: FeatureMap, cfg: ConcatMLPConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embedding = field_embedding(feature_map, cfg.embedding_dim, "concat-mlp")
        in_dim = len(self.embedding.field_names) * cfg.embedding_dim
        self.dnn = MLP(in_dim, cfg.dnn_hidden, activation=cfg.activation, dropout=cfg.dropout, batch_norm=cfg.batch_norm)
        self.heads = TaskHeads(self.dnn.out_features, feature_map.num_tasks, cfg.head_hidden)

    def forward(self, batch: Batch) -> ModelOutput:
        return ModelOutput(logits=self.heads(self.dnn(self.embedding(batch).flat())))


# ~101M parameters in the MLP for a few hundred input values: 6 x 4096^2 + the first layer,
# the size of rankmixer-100m's backbone (113M) and of the paper's DLRM-MLP-100M (95M).
register_variant(
    "concat-mlp-100m", "concat-mlp", {"dnn_hidden": [4096] * 7},
    "All-concat MLP, 7 x 4096 (the paper's DLRM-MLP-100M baseline)",
)
