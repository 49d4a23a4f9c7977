"""Wukong (Zhang et al. 2024, Meta)."""

from __future__ import annotations

from pydantic import Field
from torch import nn

from rankmixer.data.batch import Batch
from rankmixer.data.feature_map import FeatureMap
from rankmixer.models.base import ModelConfig, ModelOutput
from rankmixer.models.registry import register
from rankmixer.nn.embedding import field_embedding
from rankmixer.nn.fm_block import WukongLayer
from rankmixer.nn.heads import TaskHeads
from rankmixer.nn.mlp import MLP


class WukongConfig(ModelConfig):
    num_layers: int = Field(default=2, ge=1, description="number of stacked Wukong layers")
    num_fmb: int | None = Field(default=None, ge=1, description="n_F: embeddings out of each FM block (None = number of fields)")
    num_lcb: int | None = Field(default=None, ge=1, description="n_L: embeddings out of each linear compress block (None = number of fields)")
    rank: int | None = Field(default=8, ge=1, description="k of the optimized FM X X^T Y (None = full X X^T)")
    fmb_hidden: list[int] = Field(default=[256], description="hidden widths of the MLP inside each FM block")
    dnn_hidden: list[int] = Field(default=[256], description="hidden widths of the final MLP on the flattened output")
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0, description="dropout in the FMB and final MLPs")
    head_hidden: list[int] = Field(default=[], description="hidden widths of each task's tower")


@register("wukong", WukongConfig)
class Wukong(nn.Module):
    """Wukong: stacked layers of a Factorization Machine Block and a Linear Compress Block with residual and LayerNorm, then an MLP (Zhang et al. 2024, "Wukong: Towards a Scaling Law for Large-Scale Recommendation").

    ``X_0`` is the ``[B, n, d]`` stack of field embeddings (numerical features as fields). Layer
    ``i``: ``X_{i+1} = LN(concat(FMB(X_i), LCB(X_i)) + res(X_i))`` with ``n_F + n_L`` output
    embeddings (see ``nn/fm_block.py``); layer ``l`` thus captures interactions of order up to
    ``2^l``. The flattened last ``X`` goes through the MLP into the task heads. The paper scales
    by depth, ``n_F``, ``n_L``, ``k`` and MLP widths; those are the config fields.
    LayerNorm choice (paper silent on the axis): over the embedding width ``d``, per embedding.
    """

    def __init__(self, feature_map: FeatureMap, cfg: WukongConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.embedding_dim
        self.embedding = field_embedding(feature_map, d, "wukong")
        n = len(self.embedding.field_names)
        n_f, n_l = cfg.num_fmb or n, cfg.num_lcb or n
        layers = []
        for _ in range(cfg.num_layers):
            layers.append(WukongLayer(n, d, n_f, n_l, cfg.rank, cfg.fmb_hidden, cfg.dropout))
            n = n_f + n_l
        self.layers = nn.Sequential(*layers)
        self.mlp = MLP(n * d, cfg.dnn_hidden, dropout=cfg.dropout)
        self.heads = TaskHeads(self.mlp.out_features, feature_map.num_tasks, cfg.head_hidden)

    def forward(self, batch: Batch) -> ModelOutput:
        x = self.layers(self.embedding(batch).fields)
        return ModelOutput(logits=self.heads(self.mlp(x.flatten(1))))
