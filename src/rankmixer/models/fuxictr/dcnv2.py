"""DCNv2 (Wang et al. 2021) composed from FuxiCTR's layers as ``model_zoo/DCNv2`` does."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from rankmixer.data.feature_map import FeatureMap
from rankmixer.models.fuxictr.common import FuxiCTRConfig, FuxiCTRModel
from rankmixer.models.registry import register


class FuxiDCNv2Config(FuxiCTRConfig):
    num_cross_layers: int = Field(default=3, ge=1, description="number of cross layers")
    structure: Literal["crossnet_only", "stacked", "parallel", "stacked_parallel"] = Field(
        default="parallel", description="FuxiCTR's model_structure"
    )
    dnn_hidden: list[int] = Field(default=[400, 400, 400], min_length=1, description="DNN widths (stacked and/or parallel)")
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0, description="FuxiCTR's net_dropout")
    batch_norm: bool = Field(default=False, description="BatchNorm in the DNN")
    low_rank_mixture: bool = Field(default=False, description="CrossNetMix (mixture of low-rank experts) instead of CrossNetV2")
    low_rank: int = Field(default=32, ge=1, description="CrossNetMix rank")
    num_experts: int = Field(default=4, ge=1, description="CrossNetMix experts")


@register("fuxictr-dcnv2", FuxiDCNv2Config)
class FuxiDCNv2(FuxiCTRModel):
    """DCNv2 from FuxiCTR's layers (CrossNetV2 / CrossNetMix + MLP_Block), as its model zoo composes them (Wang et al. 2021; FuxiCTR, Zhu et al. 2021).

    Follows ``model_zoo/DCNv2/src/DCNv2.py``: flattened embeddings ``x0``; the cross net and, by
    ``structure``, a stacked and/or parallel DNN; one linear output (here one per task).
    """

    def __init__(self, feature_map: FeatureMap, cfg: FuxiDCNv2Config) -> None:
        super().__init__(feature_map, cfg)
        L = self.fx.layers
        input_dim = self.fx_map.sum_emb_out_dim()
        if cfg.low_rank_mixture:
            self.crossnet = L.CrossNetMix(input_dim, cfg.num_cross_layers, low_rank=cfg.low_rank, num_experts=cfg.num_experts)
        else:
            self.crossnet = L.CrossNetV2(input_dim, cfg.num_cross_layers)

        def dnn() -> nn.Module:
            return L.MLP_Block(input_dim=input_dim, output_dim=None, hidden_units=list(cfg.dnn_hidden),
                               hidden_activations="ReLU", output_activation=None,
                               dropout_rates=cfg.dropout, batch_norm=cfg.batch_norm)

        s = cfg.structure
        self.stacked_dnn = dnn() if s in ("stacked", "stacked_parallel") else None
        self.parallel_dnn = dnn() if s in ("parallel", "stacked_parallel") else None
        final_dim = {"crossnet_only": input_dim, "stacked": cfg.dnn_hidden[-1],
                     "parallel": input_dim + cfg.dnn_hidden[-1],
                     "stacked_parallel": 2 * cfg.dnn_hidden[-1]}[s]
        self.fc = nn.Linear(final_dim, self.num_tasks)
        self.reset_parameters()

    def logits(self, X: dict[str, Tensor]) -> Tensor:
        feature_emb = self.embedding_layer(X, flatten_emb=True)
        cross_out = self.crossnet(feature_emb)
        s = self.cfg.structure
        if s == "crossnet_only":
            final = cross_out
        elif s == "stacked":
            final = self.stacked_dnn(cross_out)
        elif s == "parallel":
            final = torch.cat([cross_out, self.parallel_dnn(feature_emb)], dim=-1)
        else:
            final = torch.cat([self.stacked_dnn(cross_out), self.parallel_dnn(feature_emb)], dim=-1)
        return self.fc(final)
