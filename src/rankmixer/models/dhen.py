"""DHEN (Zhang et al. 2022, Meta)."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from rankmixer.data.batch import Batch
from rankmixer.data.feature_map import FeatureMap
from rankmixer.models.base import ModelConfig, ModelOutput
from rankmixer.models.registry import register
from rankmixer.nn.attention import TransformerEncoderLayer
from rankmixer.nn.cross import CrossLayerV2
from rankmixer.nn.embedding import field_embedding
from rankmixer.nn.heads import TaskHeads
from rankmixer.nn.interaction import DotInteraction
from rankmixer.nn.mlp import MLP

Module = Literal["dcn", "self_attention", "linear", "dot"]


class DHENConfig(ModelConfig):
    num_layers: int = Field(default=2, ge=1, description="number of DHEN layers")
    modules: list[Module] = Field(
        default=["dcn", "self_attention", "linear"], min_length=1,
        description="interaction modules ensembled in every layer",
    )
    ensemble: Literal["concat", "sum"] = Field(default="concat", description="concat + linear, or sum, of the module outputs")
    attention_heads: int = Field(default=2, ge=1, description="heads of the self-attention module (divides embedding_dim)")
    dcn_low_rank: int | None = Field(default=None, ge=1, description="rank of the DCN module's cross layer (None = full)")
    dnn_hidden: list[int] = Field(default=[256], description="MLP on the flattened last layer")
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0, description="dropout in the self-attention module and the MLP")
    head_hidden: list[int] = Field(default=[], description="hidden widths of each task's tower")


class _Flat(nn.Module):
    """A module on the flattened ``[B, F * d]`` input, its output reshaped back to ``[B, F, d]``."""

    def __init__(self, kind: str, n: int, d: int, cfg: DHENConfig) -> None:
        super().__init__()
        self.kind, self.n, self.d = kind, n, d
        if kind == "dcn":
            self.op: nn.Module = CrossLayerV2(n * d, cfg.dcn_low_rank)
        elif kind == "linear":
            self.op = nn.Linear(n * d, n * d)
        else:  # dot: pairwise dot products, projected to F embeddings (DHEN's "AdvancedDLRM")
            self.dot = DotInteraction(n, self_interaction=True)
            self.op = nn.Linear(self.dot.out_features, n * d)

    def forward(self, x: Tensor) -> Tensor:
        B = x.shape[0]
        if self.kind == "dcn":
            flat = x.reshape(B, -1)
            out = self.op(flat, flat)
        elif self.kind == "linear":
            out = self.op(x.reshape(B, -1))
        else:
            out = self.op(self.dot(x))
        return out.view(B, self.n, self.d)


class DHENLayer(nn.Module):
    """``X' = LN(Ensemble_i(M_i(X)) + X)`` over ``[B, F, d]``; concat ensemble: the module
    outputs concatenated per field and mapped back to ``d`` by one linear layer."""

    def __init__(self, n: int, d: int, cfg: DHENConfig) -> None:
        super().__init__()
        mods: list[nn.Module] = []
        for kind in cfg.modules:
            if kind == "self_attention":
                mods.append(TransformerEncoderLayer(d, cfg.attention_heads, ffn_dim=2 * d, dropout=cfg.dropout))
            else:
                mods.append(_Flat(kind, n, d, cfg))
        self.mods = nn.ModuleList(mods)
        self.ensemble = cfg.ensemble
        self.proj = nn.Linear(len(mods) * d, d) if cfg.ensemble == "concat" else None
        self.norm = nn.LayerNorm(d)

    def forward(self, x: Tensor) -> Tensor:
        outs = [m(x) for m in self.mods]
        y = self.proj(torch.cat(outs, dim=-1)) if self.proj is not None else torch.stack(outs).sum(0)
        return self.norm(y + x)


@register("dhen", DHENConfig)
class DHEN(nn.Module):
    """DHEN: layers of ensembled heterogeneous interaction modules (DCN cross, self-attention, linear, dot) with residual and LayerNorm, then an MLP (Zhang et al. 2022, "DHEN: A Deep and Hierarchical Ensemble Network for Large-Scale Click-Through Rate Prediction").

    Each layer applies every module to the same ``[B, F, d]`` input, ensembles their outputs
    (concat + linear, or sum) and adds the input: ``X_{n+1} = LN(Ens(M_1(X_n), ...) + X_n)``, so
    the stack builds a hierarchy of mixed interactions. Module shapes (choices, the paper gives
    the module kinds): DCN = one DCNv2 cross layer on the flattened input; self-attention = a
    transformer encoder layer (FFN width 2d); linear = a linear map of the flattened input;
    dot = all pairwise dot products projected back to F embeddings.
    """

    def __init__(self, feature_map: FeatureMap, cfg: DHENConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.embedding_dim
        if "self_attention" in cfg.modules and d % cfg.attention_heads:
            raise ValueError(f"dhen: embedding_dim {d} is not divisible by attention_heads {cfg.attention_heads}")
        self.embedding = field_embedding(feature_map, d, "dhen")
        n = len(self.embedding.field_names)
        self.layers = nn.Sequential(*[DHENLayer(n, d, cfg) for _ in range(cfg.num_layers)])
        self.mlp = MLP(n * d, cfg.dnn_hidden, dropout=cfg.dropout)
        self.heads = TaskHeads(self.mlp.out_features, feature_map.num_tasks, cfg.head_hidden)

    def forward(self, batch: Batch) -> ModelOutput:
        x = self.layers(self.embedding(batch).fields)
        return ModelOutput(logits=self.heads(self.mlp(x.flatten(1))))
