"""DIEN: Deep Interest Evolution Network (Zhou et al. 2019, AAAI, arXiv 1809.03672)."""

from __future__ import annotations

import torch
from pydantic import Field
from torch import Tensor, nn

from rankmixer.data.batch import Batch
from rankmixer.data.feature_map import FeatureMap
from rankmixer.models.base import ModelConfig, ModelOutput
from rankmixer.models.registry import register
from rankmixer.nn.embedding import FeatureEmbedding
from rankmixer.nn.heads import TaskHeads
from rankmixer.nn.mlp import MLP
from rankmixer.nn.sequence import EncoderOutput, behaviour_inputs, behaviour_specs, build_encoder
from rankmixer.nn.sequence.dien import DIENEncoderConfig
from rankmixer.nn.tokenizer import SequencePooling


class DIENConfig(ModelConfig):
    gru_hidden: int | None = Field(default=None, ge=1, description="width of the extractor GRU and the AUGRU; "
                                   "default each behaviour's F * embedding_dim, as the paper")
    aux_loss_weight: float = Field(default=1.0, ge=0.0, description="weight of the auxiliary loss (the paper's "
                                   "alpha); 0 disables it")
    attention_hidden: list[int] = Field(default=[80, 40], description="hidden widths of the activation unit "
                                        "that pools sequence features (as DIN)")
    attention_activation: str = Field(default="prelu", description="activation of that unit's hidden layers")
    softmax: bool = Field(default=False, description="normalise that unit's weights over the history (DIN's "
                          "default does not)")
    dnn_hidden: list[int] = Field(default=[200, 80], description="hidden widths of the MLP on top")
    dnn_activation: str = Field(default="prelu", description="activation of the MLP (prelu, dice, relu, ...)")
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)


@register("dien", DIENConfig)
class DIEN(nn.Module):
    """DIEN: a GRU interest extractor with an auxiliary loss and an attention-gated GRU (AUGRU) for interest evolution towards the candidate (Zhou et al. 2019, "Deep Interest Evolution Network for Click-Through Rate Prediction").

    Every feature is embedded (``embedding_dim``). Each behaviour (``Batch.behaviours``) goes
    through :class:`~rankmixer.nn.sequence.dien.DIENEncoder`: a GRU over its positions (every
    field of a position concatenated), trained also by the auxiliary loss (next behaviour vs a
    behaviour of another row), then AUGRU whose update gate is scaled by the bilinear attention
    of each extracted interest to the candidate's shared fields; its final state, ``[gru_hidden]``
    per behaviour, is the evolved interest. Sequence features (one id per position) are pooled
    as DIN pools them (:class:`~rankmixer.nn.tokenizer.SequencePooling`, target attention). The
    fields, flattened, and the evolved interests go through an MLP (``dnn_hidden``) to the task
    heads; the encoders' auxiliary losses, summed, are ``ModelOutput.aux_loss`` (training only).
    """

    def __init__(self, feature_map: FeatureMap, cfg: DIENConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.embedding_dim
        self.embedding = FeatureEmbedding(feature_map, d, numeric_as_field=True, pool_behaviours=False)
        names = self.embedding.field_names
        self.pooling = SequencePooling(feature_map, names, d, mode="target_attention",
                                       attention_hidden=cfg.attention_hidden, softmax=cfg.softmax,
                                       activation=cfg.attention_activation)
        self.specs = behaviour_specs(feature_map, names)
        enc = DIENEncoderConfig(hidden=cfg.gru_hidden, aux_loss_weight=cfg.aux_loss_weight)
        self.encoders = nn.ModuleDict({s.name: build_encoder("dien", enc, d, s, len(names)) for s in self.specs})
        width = sum(e.out_dim for e in self.encoders.values())
        self.mlp = MLP(len(names) * d + width, cfg.dnn_hidden, activation=cfg.dnn_activation, dropout=cfg.dropout)
        if self.mlp.in_features == 0:
            raise ValueError("DIEN needs at least one feature")
        self.heads = TaskHeads(self.mlp.out_features, feature_map.num_tasks, [])

    def evolved_interests(self, batch: Batch, fields: Tensor) -> list[EncoderOutput]:
        """Every behaviour through its encoder: tokens ``[B, 1, gru_hidden]`` and aux loss."""
        inputs = behaviour_inputs(self.embedding.behaviours(batch), fields, self.specs)
        return [self.encoders[s.name](inputs[s.name]) for s in self.specs]

    def forward(self, batch: Batch) -> ModelOutput:
        emb = self.embedding(batch)
        fields = self.pooling(emb)  # sequences pooled against their targets
        outs = self.evolved_interests(batch, emb.fields)
        x = torch.cat([fields.flatten(1), *(o.tokens.flatten(1) for o in outs)], dim=1)
        aux = [o.aux_loss for o in outs if o.aux_loss is not None]
        return ModelOutput(logits=self.heads(self.mlp(x)), aux_loss=sum(aux[1:], aux[0]) if aux else None)
