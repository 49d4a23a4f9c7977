"""AutoInt and AutoInt+ (Song et al. 2019)."""

from __future__ import annotations

from pydantic import Field
from torch import nn

from rankmixer.data.batch import Batch
from rankmixer.data.feature_map import FeatureMap
from rankmixer.models.base import ModelConfig, ModelOutput
from rankmixer.models.registry import register, register_variant
from rankmixer.nn.attention import InteractingLayer
from rankmixer.nn.embedding import field_embedding
from rankmixer.nn.heads import TaskHeads
from rankmixer.nn.mlp import MLP


class AutoIntConfig(ModelConfig):
    num_layers: int = Field(default=3, ge=1, description="number of interacting (self-attention) layers")
    num_heads: int = Field(default=2, ge=1, description="attention heads per layer")
    attention_dim: int = Field(default=32, ge=1, description="output width per field of each layer (all heads)")
    use_residual: bool = Field(default=True, description="residual connection W_Res e_m in each layer")
    use_scale: bool = Field(default=False, description="divide attention scores by sqrt(head width) (not in the paper)")
    layer_norm: bool = Field(default=False, description="LayerNorm before each layer's ReLU (not in the paper)")
    attention_dropout: float = Field(default=0.0, ge=0.0, lt=1.0, description="dropout on attention weights")
    dnn_hidden: list[int] = Field(default=[], description="AutoInt+: widths of a DNN parallel to the attention ([] = plain AutoInt)")
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0, description="dropout after each DNN layer")
    batch_norm: bool = Field(default=False, description="BatchNorm after each DNN linear layer")
    head_hidden: list[int] = Field(default=[], description="hidden widths of each task's tower")


@register("autoint", AutoIntConfig)
class AutoInt(nn.Module):
    """AutoInt: stacked multi-head self-attention (interacting layers with residuals) over field embeddings; AutoInt+ adds a parallel DNN (Song et al. 2019, "AutoInt: Automatic Feature Interaction Learning via Self-Attentive Neural Networks").

    The last layer's per-field outputs are concatenated into the task heads (the paper's output
    layer). With ``dnn_hidden`` (AutoInt+), a DNN on the flat embeddings gets its own task heads
    and the two logits are summed (the paper trains them jointly; FuxiCTR sums them too).
    Numerical features enter as fields, bags and sequences as their masked means.
    """

    def __init__(self, feature_map: FeatureMap, cfg: AutoIntConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.embedding_dim
        self.embedding = field_embedding(feature_map, d, "AutoInt")
        n_fields = len(self.embedding.field_names)
        self.layers = nn.Sequential(*[
            InteractingLayer(d if i == 0 else cfg.attention_dim, cfg.attention_dim, cfg.num_heads,
                             cfg.use_residual, cfg.use_scale, cfg.layer_norm, cfg.attention_dropout)
            for i in range(cfg.num_layers)
        ])
        T = feature_map.num_tasks
        self.heads = TaskHeads(n_fields * cfg.attention_dim, T, cfg.head_hidden)
        if cfg.dnn_hidden:
            self.dnn: MLP | None = MLP(n_fields * d, cfg.dnn_hidden, dropout=cfg.dropout, batch_norm=cfg.batch_norm)
            self.dnn_heads: TaskHeads | None = TaskHeads(self.dnn.out_features, T, cfg.head_hidden)
        else:
            self.dnn, self.dnn_heads = None, None

    def forward(self, batch: Batch) -> ModelOutput:
        fields = self.embedding(batch).fields  # [B, F, d]
        logits = self.heads(self.layers(fields).flatten(1))
        if self.dnn is not None:
            logits = logits + self.dnn_heads(self.dnn(fields.flatten(1)))
        return ModelOutput(logits=logits)


register_variant("autoint-plus", "autoint", {"dnn_hidden": [256, 256]},
                 "AutoInt+: AutoInt with a parallel [256, 256] DNN (Song et al. 2019)")
