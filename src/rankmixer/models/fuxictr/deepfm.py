"""DeepFM (Guo et al. 2017) composed from FuxiCTR's layers as ``model_zoo/DeepFM`` does."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from torch import Tensor

from rankmixer.data.feature_map import FeatureMap
from rankmixer.models.fuxictr.common import FuxiCTRConfig, FuxiCTRModel
from rankmixer.models.registry import register


class FuxiDeepFMConfig(FuxiCTRConfig):
    dnn_hidden: list[int] = Field(default=[400, 400, 400], description="FuxiCTR's hidden_units")
    first_order_pooling: Literal["sum", "mean"] = Field(
        default="sum",
        description="pooling of bags/sequences in the first-order (LR) term: sum is FuxiCTR's "
        "(its LogisticRegression sum-pools 1-dim embeddings); mean swaps in its MaskedAveragePooling, "
        "as our DeepFM does (a diagnostic, see docs/peers.md)",
    )
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0, description="FuxiCTR's net_dropout")
    batch_norm: bool = Field(default=False, description="BatchNorm in the DNN")


@register("fuxictr-deepfm", FuxiDeepFMConfig)
class FuxiDeepFM(FuxiCTRModel):
    """DeepFM from FuxiCTR's layers (FactorizationMachine = LR + InnerProductInteraction, MLP_Block), as its model zoo composes them (Guo et al. 2017; FuxiCTR).

    Follows ``model_zoo/DeepFM/DeepFM_torch/src/DeepFM.py``: ``y = FM(X, emb) + MLP(flat emb)``.
    FuxiCTR's FM is one scalar shared by every task's output (as in our DeepFM).
    """

    def __init__(self, feature_map: FeatureMap, cfg: FuxiDeepFMConfig) -> None:
        super().__init__(feature_map, cfg)
        L = self.fx.layers
        self.fm = L.FactorizationMachine(self.fx_map)
        if cfg.first_order_pooling == "mean":
            encoders = self.fm.lr_layer.embedding_layer.embedding_layer.feature_encoders
            for name in list(encoders.keys()):
                encoders[name] = L.MaskedAveragePooling()
        self.mlp = L.MLP_Block(input_dim=self.fx_map.sum_emb_out_dim(), output_dim=self.num_tasks,
                               hidden_units=list(cfg.dnn_hidden), hidden_activations="ReLU",
                               output_activation=None, dropout_rates=cfg.dropout, batch_norm=cfg.batch_norm)
        self.reset_parameters()

    def logits(self, X: dict[str, Tensor]) -> Tensor:
        feature_emb = self.embedding_layer(X)
        return self.fm(X, feature_emb) + self.mlp(feature_emb.flatten(start_dim=1))
