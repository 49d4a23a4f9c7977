"""DLRM (Naumov et al. 2019) composed from FuxiCTR's layers as ``model_zoo/DLRM`` does."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from rankmixer.data.feature_map import FeatureMap
from rankmixer.models.fuxictr.common import FuxiCTRConfig, FuxiCTRModel
from rankmixer.models.registry import register


class FuxiDLRMConfig(FuxiCTRConfig):
    bottom_mlp: list[int] = Field(default=[64, 64, 64], description="FuxiCTR's bottom_mlp_units (dense features)")
    top_mlp: list[int] = Field(default=[64, 64, 64], description="FuxiCTR's top_mlp_units")
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0, description="FuxiCTR's top_mlp_dropout")
    interaction: Literal["dot", "cat"] = Field(default="dot", description="FuxiCTR's interaction_op")
    batch_norm: bool = Field(default=False, description="BatchNorm in the MLPs")


@register("fuxictr-dlrm", FuxiDLRMConfig)
class FuxiDLRM(FuxiCTRModel):
    """DLRM from FuxiCTR's layers (InnerProductInteraction "inner_product", MLP_Block), as its model zoo composes them (Naumov et al. 2019; FuxiCTR).

    Follows ``model_zoo/DLRM/src/DLRM.py``: numerical features through a bottom MLP (ReLU output)
    to one more field appended last; dot products of every field pair (plus the bottom output)
    into the top MLP. The zoo's top MLP ends in a sigmoid; here it ends in logits.
    """

    def __init__(self, feature_map: FeatureMap, cfg: FuxiDLRMConfig) -> None:
        # The zoo embeds only the non-numerical features (the bottom MLP handles the numerical).
        super().__init__(feature_map, cfg, embed_numeric=False)
        self.dense_feats = self.dense_names
        L = self.fx.layers
        d = cfg.embedding_dim
        if self.dense_feats:
            n_fields = self.num_fields - len(self.dense_feats) + 1
            self.bottom_mlp = L.MLP_Block(input_dim=len(self.dense_feats), output_dim=d,
                                          hidden_units=list(cfg.bottom_mlp), hidden_activations="ReLU",
                                          output_activation="ReLU", batch_norm=cfg.batch_norm)
        else:
            n_fields = self.num_fields
            self.bottom_mlp = None
        if n_fields < 2 and cfg.interaction == "dot":
            raise ValueError("DLRM's dot interaction needs at least two fields")
        if cfg.interaction == "dot":
            self.interact = L.InnerProductInteraction(num_fields=n_fields, output="inner_product")
            top_in = n_fields * (n_fields - 1) // 2 + (d if self.dense_feats else 0)
        else:
            self.interact = nn.Flatten(start_dim=1)
            top_in = n_fields * d
        self.top_mlp = L.MLP_Block(input_dim=top_in, output_dim=self.num_tasks,
                                   hidden_units=list(cfg.top_mlp), hidden_activations="ReLU",
                                   output_activation=None, dropout_rates=cfg.dropout, batch_norm=cfg.batch_norm)
        self.reset_parameters()

    def logits(self, X: dict[str, Tensor]) -> Tensor:
        X_emb = {k: v for k, v in X.items() if k not in self.dense_feats}
        feat_emb = self.embedding_layer(X_emb)
        if self.bottom_mlp is not None:
            # [B, n_dense] in map order (float: FuxiCTR's loader gives float64)
            dense_emb = self.bottom_mlp(torch.stack([X[k] for k in self.dense_feats], dim=1).float())
            feat_emb = torch.cat([feat_emb, dense_emb.unsqueeze(1)], dim=1)
        out = self.interact(feat_emb)
        if self.bottom_mlp is not None and self.cfg.interaction == "dot":
            out = torch.cat([out, dense_emb], dim=-1)
        return self.top_mlp(out)
