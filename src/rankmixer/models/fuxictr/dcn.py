"""DCN v1 (Wang et al. 2017) composed from FuxiCTR's layers as ``model_zoo/DCN`` does."""

from __future__ import annotations

import torch
from pydantic import Field
from torch import Tensor, nn

from rankmixer.data.feature_map import FeatureMap
from rankmixer.models.fuxictr.common import FuxiCTRConfig, FuxiCTRModel
from rankmixer.models.registry import register


class FuxiDCNConfig(FuxiCTRConfig):
    num_cross_layers: int = Field(default=3, ge=1, description="number of rank-1 cross layers")
    dnn_hidden: list[int] = Field(default=[], description="parallel DNN widths ([] = cross network only)")
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0, description="FuxiCTR's net_dropout")
    batch_norm: bool = Field(default=False, description="BatchNorm in the DNN")


@register("fuxictr-dcn", FuxiDCNConfig)
class FuxiDCN(FuxiCTRModel):
    """DCN (v1) from FuxiCTR's layers (CrossNet, MLP_Block), as its model zoo composes them (Wang et al. 2017, "Deep & Cross Network for Ad Click Predictions"; FuxiCTR).

    Follows ``model_zoo/DCN/DCN_torch/src/DCN.py``: rank-1 cross layers
    ``x_{l+1} = x0 (w^T x_l) + b + x_l`` on the flat embeddings, optionally beside a DNN. There is
    no rankmixer DCN v1 (our ``dcnv2`` with ``low_rank=1`` is close but not the same layer).
    """

    def __init__(self, feature_map: FeatureMap, cfg: FuxiDCNConfig) -> None:
        super().__init__(feature_map, cfg)
        L = self.fx.layers
        input_dim = self.fx_map.sum_emb_out_dim()
        self.crossnet = L.CrossNet(input_dim, cfg.num_cross_layers)
        self.dnn = (L.MLP_Block(input_dim=input_dim, output_dim=None, hidden_units=list(cfg.dnn_hidden),
                                hidden_activations="ReLU", output_activation=None, dropout_rates=cfg.dropout,
                                batch_norm=cfg.batch_norm) if cfg.dnn_hidden else None)
        self.fc = nn.Linear(input_dim + (cfg.dnn_hidden[-1] if cfg.dnn_hidden else 0), self.num_tasks)
        self.reset_parameters()

    def logits(self, X: dict[str, Tensor]) -> Tensor:
        emb = self.embedding_layer(X, flatten_emb=True)
        out = self.crossnet(emb)
        if self.dnn is not None:
            out = torch.cat([out, self.dnn(emb)], dim=-1)
        return self.fc(out)
