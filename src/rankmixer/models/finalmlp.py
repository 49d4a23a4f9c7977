"""FinalMLP (Mao et al. 2023)."""

from __future__ import annotations

from pydantic import Field, model_validator
from torch import Tensor, nn

from rankmixer.data.batch import Batch
from rankmixer.data.feature_map import FeatureMap
from rankmixer.models.base import ModelConfig, ModelOutput
from rankmixer.models.registry import register
from rankmixer.nn.embedding import FeatureEmbedding
from rankmixer.nn.fusion import BilinearFusion, FeatureGate
from rankmixer.nn.mlp import MLP


class FinalMLPConfig(ModelConfig):
    mlp1_hidden: list[int] = Field(default=[256, 256], min_length=1, description="widths of stream 1's MLP")
    mlp2_hidden: list[int] = Field(default=[256], min_length=1, description="widths of stream 2's MLP")
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0, description="dropout after each stream layer")
    batch_norm: bool = Field(default=False, description="BatchNorm after each stream linear layer")
    use_feature_selection: bool = Field(default=True, description="stream-specific feature gates")
    fs_hidden: list[int] = Field(default=[64], description="hidden widths of each gate's MLP")
    fs1_context: list[str] = Field(default=[], description="fields whose embeddings condition gate 1 ([] = a learned vector)")
    fs2_context: list[str] = Field(default=[], description="fields whose embeddings condition gate 2 ([] = a learned vector)")
    num_heads: int = Field(default=1, ge=1, description="heads of the bilinear fusion (divides both streams' last widths)")

    @model_validator(mode="after")
    def _heads_divide(self) -> "FinalMLPConfig":
        if self.mlp1_hidden[-1] % self.num_heads or self.mlp2_hidden[-1] % self.num_heads:
            raise ValueError(f"num_heads {self.num_heads} must divide the streams' last widths "
                             f"{self.mlp1_hidden[-1]} and {self.mlp2_hidden[-1]}")
        return self


@register("finalmlp", FinalMLPConfig)
class FinalMLP(nn.Module):
    """FinalMLP: two MLP streams over gated copies of the embeddings, fused by a multi-head bilinear layer (Mao et al. 2023, "FinalMLP: An Enhanced Two-Stream MLP Model for CTR Prediction").

    ``e`` = flat field embeddings; stream ``s``: ``o_s = MLP_s(2 sigmoid(MLP_g_s(c_s)) * e)`` with
    ``c_s`` the embeddings of the stream's context fields (or a learned vector); output
    ``b + w_1^T o_1 + w_2^T o_2 + sum_h o_1h^T W_h o_2h`` (``nn/fusion.py``), one per task.
    """

    def __init__(self, feature_map: FeatureMap, cfg: FinalMLPConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.embedding_dim
        self.embedding = FeatureEmbedding(feature_map, d, numeric_as_field=True)
        names = self.embedding.field_names
        in_dim = len(names) * d
        if in_dim == 0:
            raise ValueError("finalmlp needs at least one feature")
        self.ctx_index: list[list[int]] = []
        for key, ctx in (("fs1_context", cfg.fs1_context), ("fs2_context", cfg.fs2_context)):
            unknown = [c for c in ctx if c not in names]
            if unknown:
                raise ValueError(f"finalmlp {key}: unknown fields {unknown}; fields are {names}")
            self.ctx_index.append([names.index(c) for c in ctx])
        if cfg.use_feature_selection:
            self.gates = nn.ModuleList(
                FeatureGate(in_dim, len(idx) * d if idx else None, d, cfg.fs_hidden) for idx in self.ctx_index
            )
        else:
            self.gates = None
        self.mlp1 = MLP(in_dim, cfg.mlp1_hidden, dropout=cfg.dropout, batch_norm=cfg.batch_norm)
        self.mlp2 = MLP(in_dim, cfg.mlp2_hidden, dropout=cfg.dropout, batch_norm=cfg.batch_norm)
        self.fusion = BilinearFusion(self.mlp1.out_features, self.mlp2.out_features, cfg.num_heads, feature_map.num_tasks)

    def _gated(self, s: int, fields: Tensor, flat: Tensor) -> Tensor:
        if self.gates is None:
            return flat
        idx = self.ctx_index[s]
        ctx = fields[:, idx].flatten(1) if idx else None
        return self.gates[s](flat, ctx)

    def forward(self, batch: Batch) -> ModelOutput:
        fields = self.embedding(batch).fields
        flat = fields.flatten(1)
        o1 = self.mlp1(self._gated(0, fields, flat))
        o2 = self.mlp2(self._gated(1, fields, flat))
        return ModelOutput(logits=self.fusion(o1, o2))
