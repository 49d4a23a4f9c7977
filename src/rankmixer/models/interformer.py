"""InterFormer (Zeng et al. 2024, Meta, arXiv 2411.09852)."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from rankmixer.data.batch import Batch
from rankmixer.data.feature_map import FeatureMap
from rankmixer.models.base import ModelConfig, ModelOutput
from rankmixer.models.dhen import DHENConfig, DHENLayer
from rankmixer.models.registry import register
from rankmixer.nn.cross import CrossLayerV2
from rankmixer.nn.embedding import field_embedding
from rankmixer.nn.heads import TaskHeads
from rankmixer.nn.interaction import DotInteraction
from rankmixer.nn.mlp import MLP
from rankmixer.nn.sequence import behaviour_inputs, behaviour_specs
from rankmixer.nn.sequence.interformer import (
    InterFormerEncoderConfig,
    MaskNetMerge,
    XSummary,
    register_cls,
    s_summary,
    sequence_layers,
    with_cls,
)


class InterFormerConfig(InterFormerEncoderConfig, ModelConfig):
    """The sequence side's sizes (:class:`InterFormerEncoderConfig`), the embedding, and below."""

    interaction: Literal["dot", "dcnv2", "dhen"] = Field(
        default="dhen", description="interaction of [X || S_sum] in every layer (the paper's benchmarks: DHEN)")
    dhen_modules: list[Literal["dcn", "self_attention", "linear", "dot"]] = Field(
        default=["dot", "dcn"], min_length=1, description="modules of the DHEN interaction (the paper's: DOT and DCN)")
    dcn_low_rank: int | None = Field(default=None, ge=1, description="rank of the DCNv2 cross layers (None = full)")
    interaction_hidden: list[int] = Field(default=[128], description="hidden widths of the MLP after the interaction")
    masknet_hidden: list[int] = Field(default=[64], description="hidden widths of the MaskNet that merges behaviours")
    output_hidden: list[int] = Field(default=[128], description="MLP on [X_sum || S_sum] before the task heads")
    head_hidden: list[int] = Field(default=[], description="hidden widths of each task's tower")


class InteractionArch(nn.Module):
    """``X' = LN(X + MLP(Interaction([X || S_sum W])))`` over ``n`` tokens of width ``d``, with
    ``m`` summary tokens of width ``seq_dim`` projected to ``d`` (``W``; none without behaviours).

    dot: ``[flat tokens || pairwise dot products]`` (DLRM's top input); dcnv2: one cross layer
    ``t * (W t + b) + t`` on the flat tokens; dhen: one DHEN layer (``dhen_modules``) over the
    tokens, flattened. The MLP maps back to ``n`` tokens (only ``X`` goes on to the next layer)."""

    def __init__(self, n: int, m: int, d: int, cfg: InterFormerConfig) -> None:
        super().__init__()
        self.n, self.d, self.kind = n, d, cfg.interaction
        self.project = nn.Linear(cfg.seq_dim, d) if m else None
        total = n + m
        if cfg.interaction == "dot":
            self.op: nn.Module = DotInteraction(total)
            width = total * d + self.op.out_features
        elif cfg.interaction == "dcnv2":
            self.op = CrossLayerV2(total * d, cfg.dcn_low_rank)
            width = total * d
        else:
            heads = 2 if d % 2 == 0 else 1
            self.op = DHENLayer(total, d, DHENConfig(modules=cfg.dhen_modules, dcn_low_rank=cfg.dcn_low_rank,
                                                     attention_heads=heads, dropout=cfg.dropout))
            width = total * d
        self.mlp = MLP(width, cfg.interaction_hidden, n * d)
        self.norm = nn.LayerNorm(d)

    def forward(self, x: Tensor, s_sum: Tensor | None) -> Tensor:
        t = x if self.project is None else torch.cat([x, self.project(s_sum)], dim=1)
        flat = t.flatten(1)
        if self.kind == "dot":
            y = torch.cat([flat, self.op(t)], dim=1)
        elif self.kind == "dcnv2":
            y = self.op(flat, flat)
        else:
            y = self.op(t).flatten(1)
        return self.norm(x + self.mlp(y).view(-1, self.n, self.d))


@register("interformer", InterFormerConfig)
class InterFormer(nn.Module):
    """InterFormer: non-sequence features and behaviour sequences learned in interleaved interaction, sequence and cross arches (Zeng et al. 2024, "InterFormer: Towards Effective Heterogeneous Interaction Learning for Click-Through Rate Prediction").

    ``X``: every field vector (``embedding_dim``; sequence features mean-pooled as fields).
    ``S``: each behaviour's positions, their field vectors concatenated and projected to
    ``seq_dim``; several behaviours merged position-wise by a MaskNet
    (:class:`~rankmixer.nn.sequence.interformer.MaskNetMerge`, right-aligned); CLS tokens
    prepended, RoPE positions counted back from the request. Per layer ``l``:

    * cross arch: ``X_sum = Gating(MLP(X))``, ``S_sum = Gating([CLS || PMA || recent])``;
    * interaction arch: ``X <- LN(X + MLP(Interaction([X || S_sum])))`` (``interaction``: dot,
      dcnv2 or dhen, from ``nn/`` and ``models/dhen.py``);
    * sequence arch: ``S <- MHA(PFFN(X_sum, S))`` with residuals and LayerNorm;

    both updates read the layer's inputs. A last cross arch summarises the final ``X`` and ``S``;
    ``MLP([X_sum || S_sum])`` feeds the task heads. Layer details and choices where the paper
    is silent: ``nn/sequence/interformer.py``. Without behaviours the model is the interaction
    arch alone (no ``S_sum``), then ``MLP(X_sum)``.
    """

    def __init__(self, feature_map: FeatureMap, cfg: InterFormerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.embedding_dim
        self.embedding = field_embedding(feature_map, d, "interformer", pool_behaviours=False)
        names = self.embedding.field_names
        n = len(names)
        self.specs = behaviour_specs(feature_map, names)
        self.has_sequence = bool(self.specs)
        m = cfg.num_cls + cfg.num_pma + cfg.num_recent if self.has_sequence else 0
        self.interaction = nn.ModuleList(InteractionArch(n, m, d, cfg) for _ in range(cfg.num_layers))
        self.final_x = XSummary(n, d, cfg.num_summary, cfg.summary_hidden, cfg.gate_hidden)
        if self.has_sequence:
            self.project = nn.ModuleDict({s.name: nn.Linear(s.num_fields * d, cfg.seq_dim) for s in self.specs})
            self.merge = MaskNetMerge(len(self.specs), cfg.seq_dim, cfg.masknet_hidden) if len(self.specs) > 1 else None
            register_cls(self, cfg)
            self.x_summaries, self.sequence = sequence_layers(cfg, n, d)
            self.s_summaries = nn.ModuleList(s_summary(cfg, d) for _ in range(cfg.num_layers + 1))
        self.mlp = MLP(cfg.num_summary * d + m * cfg.seq_dim, cfg.output_hidden, dropout=cfg.dropout)
        self.heads = TaskHeads(self.mlp.out_features, feature_map.num_tasks, cfg.head_hidden)

    def sequence_input(self, batch: Batch, fields: Tensor) -> tuple[Tensor, Tensor]:
        """The merged sequence ``S [B, L, seq_dim]`` and its mask ``[B, L]``."""
        inputs = behaviour_inputs(self.embedding.behaviours(batch), fields, self.specs, batch.behaviours)
        seqs = []
        for spec in self.specs:
            x = inputs[spec.name]
            B, L = x.mask.shape
            seqs.append((self.project[spec.name](x.hist.reshape(B, L, -1)), x.mask))
        return seqs[0] if self.merge is None else self.merge(seqs)

    def forward(self, batch: Batch) -> ModelOutput:
        x = self.embedding(batch).fields
        if not self.has_sequence:
            for interaction in self.interaction:
                x = interaction(x, None)
            return ModelOutput(logits=self.heads(self.mlp(self.final_x(x).flatten(1))))
        s, mask = self.sequence_input(batch, x)
        tokens, key_mask, positions = with_cls(self.cls, s, mask)
        for interaction, summarise_x, summarise_s, sequence in zip(
                self.interaction, self.x_summaries, self.s_summaries, self.sequence):
            x_sum = summarise_x(x)
            s_sum = summarise_s(x_sum, tokens, mask)
            x, tokens = interaction(x, s_sum), sequence(x_sum, tokens, positions, key_mask)
        x_sum = self.final_x(x)
        s_sum = self.s_summaries[-1](x_sum, tokens, mask)
        return ModelOutput(logits=self.heads(self.mlp(torch.cat([x_sum.flatten(1), s_sum.flatten(1)], dim=1))))
