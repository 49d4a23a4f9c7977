"""WuKong (Zhang et al. 2024) composed as ``model_zoo/WuKong`` does: the wheel's layers plus the
zoo's WuKong layer (not in the wheel), written here."""

from __future__ import annotations

import torch
from pydantic import Field
from torch import Tensor, nn

from rankmixer.data.feature_map import FeatureMap
from rankmixer.models.fuxictr.common import FuxiCTRConfig, FuxiCTRModel
from rankmixer.models.registry import register


class FuxiWuKongLayer(nn.Module):
    """The zoo's ``WuKongLayer`` (``model_zoo/WuKong/src/WuKong.py``; not in the wheel): an FMB
    (``X (X^T P)`` flattened, LayerNorm, ReLU MLP to ``fmb_dim``, ReLU) and an LCB (a linear map of
    the flat input to ``compression_dim``, dropout), concatenated, mapped back to ``n d`` by a
    linear layer, plus the input, then LayerNorm over all ``n d`` values. This differs from the
    paper's layer (and ours): the blocks' outputs are flat vectors, not ``n_F`` and ``n_L``
    embeddings, and the number of embeddings stays ``n``."""

    def __init__(self, n: int, d: int, project_dim: int, fmb_units: list[int], fmb_dim: int,
                 compression_dim: int, dropout: float) -> None:
        super().__init__()
        self.n, self.d = n, d
        self.projection_matrix = nn.Parameter(torch.randn(n, project_dim))
        self.fmb_norm = nn.LayerNorm(n * project_dim)
        layers: list[nn.Module] = []
        prev = n * project_dim
        for u in fmb_units:
            layers += [nn.Linear(prev, u), nn.ReLU()]
            prev = u
        layers.append(nn.Linear(prev, fmb_dim))
        self.fmb_mlp = nn.Sequential(*layers)
        self.lcb = nn.Linear(n * d, compression_dim)
        self.lcb_dropout = nn.Dropout(dropout)
        self.transform = nn.Linear(fmb_dim + compression_dim, n * d)
        self.layer_norm = nn.LayerNorm(n * d)

    def forward(self, x: Tensor) -> Tensor:
        B = x.size(0)
        x = x.view(B, self.n, self.d)
        fm = torch.matmul(x, torch.matmul(x.transpose(1, 2), self.projection_matrix)).view(B, -1)
        fmb_out = torch.relu(self.fmb_mlp(self.fmb_norm(fm)))
        lcb_out = self.lcb_dropout(self.lcb(x.reshape(B, -1)))
        out = self.transform(torch.cat([fmb_out, lcb_out], dim=1))
        return self.layer_norm(out + x.reshape(B, -1))


class FuxiWuKongConfig(FuxiCTRConfig):
    num_layers: int = Field(default=3, ge=1, description="number of WuKong layers")
    compression_dim: int = Field(default=40, ge=1, description="LCB output width")
    fmb_units: list[int] = Field(default=[32, 32], min_length=1, description="FMB MLP widths")
    fmb_dim: int = Field(default=40, ge=1, description="FMB output width")
    project_dim: int = Field(default=8, ge=1, description="k of the FMB projection X (X^T P)")
    dropout: float = Field(default=0.2, ge=0.0, lt=1.0, description="LCB dropout")
    dnn_hidden: list[int] = Field(default=[32, 32], description="FuxiCTR's mlp_hidden_units (final MLP)")


@register("fuxictr-wukong", FuxiWuKongConfig)
class FuxiWuKong(FuxiCTRModel):
    """WuKong composed as FuxiCTR's model zoo does: wheel FeatureEmbedding and MLP_Block with the zoo's WuKong layer re-written here (Zhang et al. 2024; FuxiCTR).

    Follows ``model_zoo/WuKong/src/WuKong.py`` (defaults are the zoo's); see
    :class:`FuxiWuKongLayer` for how the zoo's layer differs from the paper's.
    """

    def __init__(self, feature_map: FeatureMap, cfg: FuxiWuKongConfig) -> None:
        super().__init__(feature_map, cfg)
        n, d = self.num_fields, cfg.embedding_dim
        self.interaction_layers = nn.Sequential(*[
            FuxiWuKongLayer(n, d, cfg.project_dim, cfg.fmb_units, cfg.fmb_dim, cfg.compression_dim, cfg.dropout)
            for _ in range(cfg.num_layers)
        ])
        self.final_mlp = self.fx.layers.MLP_Block(input_dim=n * d, output_dim=self.num_tasks,
                                                  hidden_units=list(cfg.dnn_hidden), hidden_activations="relu",
                                                  output_activation=None)
        self.reset_parameters()

    def logits(self, X: dict[str, Tensor]) -> Tensor:
        return self.final_mlp(self.interaction_layers(self.embedding_layer(X)))
