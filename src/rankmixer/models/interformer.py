"""InterFormer (Zeng et al. 2024, Meta, arXiv 2411.09852)."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, model_validator
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
from rankmixer.nn.sequence.base import BehaviourInput
from rankmixer.nn.sequence.interformer import (
    InterFormerEncoderConfig,
    MaskNetMerge,
    SequenceArch,
    XSummary,
    register_cls,
    s_summary,
    sequence_layers,
    with_cls,
)
from rankmixer.nn.sequence.mos import MoSConfig, MoSRouter, fuse


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
    mos: MoSConfig | None = Field(
        default=None, description="MoS around the sequence side (backbone: interformer; None: plain InterFormer)")

    @model_validator(mode="after")
    def _check_mos(self) -> "InterFormerConfig":
        if self.mos is not None:
            if self.mos.backbone != "interformer" or self.mos.backbone_options:
                raise ValueError("mos.backbone: InterFormer wraps its own sequence side in MoS; set backbone: "
                                 "interformer and no backbone_options (the sizes are the model's)")
            if not self.mos.global_expert:
                raise ValueError("mos.global_expert: InterFormer's own sequence side is the global expert; it "
                                 "cannot be switched off")
        return self


class ExpertSequence(nn.Module):
    """One MoS expert's own sequence side inside InterFormer: CLS tokens, a sequence arch per
    layer and the S summaries (per layer and a last one); the X summaries are the model's."""

    def __init__(self, cfg: InterFormerConfig, d: int) -> None:
        super().__init__()
        register_cls(self, cfg)
        self.sequence = nn.ModuleList(SequenceArch(cfg.num_summary * d, cfg.seq_dim, cfg.num_heads, cfg.dropout,
                                                   cfg.rope_base) for _ in range(cfg.num_layers))
        self.s_summaries = nn.ModuleList(s_summary(cfg, d) for _ in range(cfg.num_layers + 1))


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

    ``mos`` wraps the sequence side in MoS (``nn/sequence/mos.py``): the history above is the
    global expert; the short-term expert (the recent behaviours) and the theme expert (each
    theme's routed subsequence, K of them in one batched call) run through sequence sides of
    their own (:class:`ExpertSequence`), read the same ``X_sum`` and interleave with the same
    interaction arch, which reads the gated sum of the experts' ``S_sum`` in every layer (the
    gate: a softmax from the fields). The router's balance term is the model's ``aux_loss``.
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
        if self.has_sequence and cfg.mos is not None:
            # MoS: this sequence side is the global expert; the short-term expert and the (shared)
            # theme expert have sequence sides of their own; a gate from the fields fuses their S_sum.
            self.routers = nn.ModuleDict({s.name: MoSRouter(cfg.mos, d, s) for s in self.specs})
            self.experts = nn.ModuleDict({kind: ExpertSequence(cfg, d) for kind, on in (
                ("short", cfg.mos.short_term > 0), ("themes", cfg.mos.theme_experts)) if on})
            self.mos_gate = nn.Linear(n * d, self.routers[self.specs[0].name].num_experts)
        self.mlp = MLP(cfg.num_summary * d + m * cfg.seq_dim, cfg.output_hidden, dropout=cfg.dropout)
        self.heads = TaskHeads(self.mlp.out_features, feature_map.num_tasks, cfg.head_hidden)

    def merged(self, inputs: dict[str, BehaviourInput]) -> tuple[Tensor, Tensor]:
        """The behaviours of ``inputs`` projected and merged: ``S [B, L, seq_dim]`` and its mask."""
        seqs = []
        for spec in self.specs:
            x = inputs[spec.name]
            B, L = x.mask.shape
            seqs.append((self.project[spec.name](x.hist.reshape(B, L, -1)), x.mask))
        return seqs[0] if self.merge is None else self.merge(seqs)

    def streams(self, batch: Batch, fields: Tensor) -> tuple[list[tuple[nn.Module, Tensor, Tensor]], Tensor | None]:
        """The sequence streams, each (the sequence side that reads it, ``S``, mask), with
        ``S``'s rows a multiple of the batch's (MoS's K themes stacked theme-major), and MoS's
        balance term (None without MoS)."""
        inputs = behaviour_inputs(self.embedding.behaviours(batch), fields, self.specs, batch.behaviours)
        if self.cfg.mos is None:
            return [(self, *self.merged(inputs))], None
        routed = {name: router(inputs[name]) for name, router in self.routers.items()}
        streams = [(self, *self.merged({k: r.whole for k, r in routed.items()}))]
        for kind, side in self.experts.items():
            streams.append((side, *self.merged({k: getattr(r, kind) for k, r in routed.items()})))
        balances = [r.balance for r in routed.values() if r.balance is not None]
        return streams, (sum(balances) if balances else None)

    def forward(self, batch: Batch) -> ModelOutput:
        x = self.embedding(batch).fields
        if not self.has_sequence:
            for interaction in self.interaction:
                x = interaction(x, None)
            return ModelOutput(logits=self.heads(self.mlp(self.final_x(x).flatten(1))))
        B = x.shape[0]
        streams, balance = self.streams(batch, x)
        gate = torch.softmax(self.mos_gate(x.flatten(1)), dim=-1) if self.cfg.mos is not None else None
        state = [(side, *with_cls(side.cls, s, mask), mask, s.shape[0] // B) for side, s, mask in streams]

        def s_summary_of(layer: int, x_sum: Tensor, state: list[tuple]) -> Tensor:
            """S_sum of every stream (expert) in ``state``, fused by the MoS gate."""
            sums = []
            for side, tokens, _, _, mask, reps in state:
                rows = x_sum if reps == 1 else x_sum.repeat(reps, 1, 1)  # one per stacked theme
                s_sum = side.s_summaries[layer](rows, tokens, mask)
                sums += s_sum.view(reps, B, *s_sum.shape[1:]).unbind(0)
            return sums[0] if gate is None else fuse(sums, gate)

        for layer, (interaction, summarise_x) in enumerate(zip(self.interaction, self.x_summaries)):
            x_sum = summarise_x(x)
            s_sum = s_summary_of(layer, x_sum, state)
            state = [(side, side.sequence[layer](x_sum, tokens, positions, key_mask), key_mask,
                      positions, mask, reps) for side, tokens, key_mask, positions, mask, reps in state]
            x = interaction(x, s_sum)
        x_sum = self.final_x(x)
        s_sum = s_summary_of(self.cfg.num_layers, x_sum, state)
        return ModelOutput(logits=self.heads(self.mlp(torch.cat([x_sum.flatten(1), s_sum.flatten(1)], dim=1))),
                           aux_loss=balance)
