"""FinalMLP (Mao et al. 2023) composed as ``model_zoo/FinalMLP`` does: the wheel's layers plus the
zoo's FeatureSelection and InteractionAggregation (not in the wheel), written here."""

from __future__ import annotations

from types import SimpleNamespace

import torch
from pydantic import Field
from torch import Tensor, nn

from rankmixer.data.feature_map import FeatureMap
from rankmixer.models.fuxictr.common import FuxiCTRConfig, FuxiCTRModel
from rankmixer.models.registry import register


class FuxiFeatureSelection(nn.Module):
    """The zoo's FinalMLP ``FeatureSelection`` (``model_zoo/FinalMLP/src/FinalMLP.py``; not in the
    wheel), written around the wheel's ``FeatureEmbedding`` and ``MLP_Block``: per stream, a
    context (a zero-initialised learned vector, or the context fields' embeddings from *their own*
    embedding tables) through an MLP with a sigmoid output, times 2, gates the flat embeddings."""

    def __init__(self, fx: SimpleNamespace, fx_map, feature_dim: int, embedding_dim: int, hidden: list[int],
                 contexts: tuple[list[str], list[str]], initializer: str) -> None:
        super().__init__()
        L = fx.layers
        self.contexts = contexts
        self.ctx_bias = nn.ParameterDict()  # stream "0"/"1" without context fields: a learned vector
        self.ctx_emb = nn.ModuleDict()  # stream with context fields: their own embedding tables
        self.gates = nn.ModuleList()
        for s, ctx in enumerate(contexts):
            if ctx:
                self.ctx_emb[str(s)] = L.FeatureEmbedding(fx_map, embedding_dim, embedding_initializer=initializer,
                                                          required_feature_columns=list(ctx))
            else:
                self.ctx_bias[str(s)] = nn.Parameter(torch.zeros(1, embedding_dim))
            self.gates.append(L.MLP_Block(input_dim=embedding_dim * max(1, len(ctx)), output_dim=feature_dim,
                                          hidden_units=list(hidden), hidden_activations="ReLU",
                                          output_activation="Sigmoid", batch_norm=False))

    def forward(self, X: dict[str, Tensor], flat_emb: Tensor) -> tuple[Tensor, Tensor]:
        out = []
        for s, ctx in enumerate(self.contexts):
            if ctx:
                gate_in = self.ctx_emb[str(s)]({k: X[k] for k in ctx}).flatten(start_dim=1)
            else:
                gate_in = self.ctx_bias[str(s)].repeat(flat_emb.size(0), 1)
            out.append(flat_emb * (self.gates[s](gate_in) * 2))
        return out[0], out[1]


class FuxiInteractionAggregation(nn.Module):
    """The zoo's FinalMLP ``InteractionAggregation`` (not in the wheel): multi-head bilinear fusion
    ``w_x^T x + w_y^T y + sum_h x_h^T W_h y_h``, with the zoo's weight layout and init."""

    def __init__(self, x_dim: int, y_dim: int, output_dim: int = 1, num_heads: int = 1) -> None:
        super().__init__()
        if x_dim % num_heads or y_dim % num_heads:
            raise ValueError("FinalMLP: stream widths must be divisible by num_heads")
        self.num_heads, self.output_dim = num_heads, output_dim
        self.head_x_dim, self.head_y_dim = x_dim // num_heads, y_dim // num_heads
        self.w_x = nn.Linear(x_dim, output_dim)
        self.w_y = nn.Linear(y_dim, output_dim)
        self.w_xy = nn.Parameter(torch.empty(num_heads * self.head_x_dim * self.head_y_dim, output_dim))
        nn.init.xavier_normal_(self.w_xy)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        H = self.num_heads
        head_x = x.view(-1, H, self.head_x_dim)
        head_y = y.view(-1, H, self.head_y_dim)
        xw = torch.matmul(head_x.unsqueeze(2), self.w_xy.view(H, self.head_x_dim, -1))  # [B, H, 1, out * hy]
        xy = torch.matmul(xw.view(-1, H, self.output_dim, self.head_y_dim), head_y.unsqueeze(-1)).squeeze(-1)
        return self.w_x(x) + self.w_y(y) + xy.sum(dim=1)


class FuxiFinalMLPConfig(FuxiCTRConfig):
    mlp1_hidden: list[int] = Field(default=[64, 64, 64], min_length=1, description="stream 1 widths")
    mlp2_hidden: list[int] = Field(default=[64, 64, 64], min_length=1, description="stream 2 widths")
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0, description="dropout in both streams")
    batch_norm: bool = Field(default=False, description="BatchNorm in both streams")
    use_feature_selection: bool = Field(default=True, description="FuxiCTR's use_fs")
    fs_hidden: list[int] = Field(default=[64], description="gate MLP widths")
    fs1_context: list[str] = Field(default=[], description="context features of gate 1")
    fs2_context: list[str] = Field(default=[], description="context features of gate 2")
    num_heads: int = Field(default=1, ge=1, description="heads of the bilinear fusion")


@register("fuxictr-finalmlp", FuxiFinalMLPConfig)
class FuxiFinalMLP(FuxiCTRModel):
    """FinalMLP composed as FuxiCTR's model zoo does: wheel FeatureEmbedding and MLP_Block, with the zoo's FeatureSelection and InteractionAggregation re-written here (Mao et al. 2023; FuxiCTR).

    Follows ``model_zoo/FinalMLP/src/FinalMLP.py``. Unlike our ``finalmlp``, the gates' context
    fields get their own embedding tables (the zoo builds a second FeatureEmbedding for them).
    """

    def __init__(self, feature_map: FeatureMap, cfg: FuxiFinalMLPConfig) -> None:
        super().__init__(feature_map, cfg)
        L = self.fx.layers
        names = list(self.fx_map.features)
        for key, ctx in (("fs1_context", cfg.fs1_context), ("fs2_context", cfg.fs2_context)):
            if any(c not in names for c in ctx):
                raise ValueError(f"fuxictr-finalmlp {key}: unknown features {[c for c in ctx if c not in names]}")
        feature_dim = cfg.embedding_dim * self.num_fields

        def stream(hidden: list[int]) -> nn.Module:
            return L.MLP_Block(input_dim=feature_dim, output_dim=None, hidden_units=list(hidden),
                               hidden_activations="ReLU", output_activation=None, dropout_rates=cfg.dropout,
                               batch_norm=cfg.batch_norm)

        self.mlp1, self.mlp2 = stream(cfg.mlp1_hidden), stream(cfg.mlp2_hidden)
        self.fs_module = (FuxiFeatureSelection(self.fx, self.fx_map, feature_dim, cfg.embedding_dim, cfg.fs_hidden,
                                               (cfg.fs1_context, cfg.fs2_context), self._initializer())
                          if cfg.use_feature_selection else None)
        self.fusion_module = FuxiInteractionAggregation(cfg.mlp1_hidden[-1], cfg.mlp2_hidden[-1],
                                                        output_dim=self.num_tasks, num_heads=cfg.num_heads)
        self.reset_parameters()

    def logits(self, X: dict[str, Tensor]) -> Tensor:
        flat_emb = self.embedding_layer(X).flatten(start_dim=1)
        feat1, feat2 = self.fs_module(X, flat_emb) if self.fs_module is not None else (flat_emb, flat_emb)
        return self.fusion_module(self.mlp1(feat1), self.mlp2(feat2))
