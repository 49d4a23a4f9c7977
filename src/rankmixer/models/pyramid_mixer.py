"""Pyramid Mixer (Gong et al., SIGIR'25, arXiv 2506.16942)."""

from __future__ import annotations

from typing import Literal

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
from rankmixer.nn.sequence import behaviour_inputs, behaviour_specs, build_encoder
from rankmixer.nn.sequence.pyramid import PyramidConfig
from rankmixer.nn.tokenizer import SequencePooling


class PyramidMixerConfig(ModelConfig):
    pyramid: PyramidConfig = Field(default_factory=PyramidConfig,
                                   description="the behaviour encoder (levels, window, expansions, readout)")
    sequence_pooling: Literal["mean", "target_attention"] = Field(
        default="target_attention", description="how single-id sequence features are pooled (as DIN does, or mean)")
    dnn_hidden: list[int] = Field(default=[200, 80], description="hidden widths of the MLP on top")
    dnn_activation: str = "relu"
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)


@register("pyramid_mixer", PyramidMixerConfig)
class PyramidMixer(nn.Module):
    """Pyramid Mixer: position, field and channel MLP mixing over behaviour sequences, stacked as a pyramid over longer periods and read out against the candidate (Gong et al. 2025, "Pyramid Mixer: Multi-dimensional Multi-period Interest Modeling for Sequential Recommendation").

    Every feature is embedded (``embedding_dim``); each behaviour goes through
    :class:`~rankmixer.nn.sequence.pyramid.PyramidEncoder` (``pyramid``: one ``[F * dim]``
    vector per level, each level's positions weighted against the candidate); single-id
    sequence features are pooled by DIN's activation unit against the feature they share a
    table with (``sequence_pooling``), as in :class:`~rankmixer.models.din.DIN`. The fields,
    flattened, with every level's vector of every behaviour, go through an MLP
    (``dnn_hidden``) to the task heads. Without behaviours the model is embedding + MLP.
    """

    def __init__(self, feature_map: FeatureMap, cfg: PyramidMixerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.embedding_dim
        self.embedding = FeatureEmbedding(feature_map, d, numeric_as_field=True, pool_behaviours=False)
        names = self.embedding.field_names
        self.pooling = SequencePooling(feature_map, names, d, mode=cfg.sequence_pooling,
                                       attention_hidden=cfg.pyramid.attention_hidden, softmax=cfg.pyramid.softmax,
                                       activation=cfg.pyramid.attention_activation)
        self.specs = behaviour_specs(feature_map, names)
        self.encoders = nn.ModuleDict({s.name: build_encoder("pyramid", cfg.pyramid, d, s, len(names))
                                       for s in self.specs})
        width = sum(e.num_outputs * e.out_dim for e in self.encoders.values())
        self.mlp = MLP(len(names) * d + width, cfg.dnn_hidden, activation=cfg.dnn_activation, dropout=cfg.dropout)
        if self.mlp.in_features == 0:
            raise ValueError("PyramidMixer needs at least one feature")
        self.heads = TaskHeads(self.mlp.out_features, feature_map.num_tasks, [])

    def encoded_behaviours(self, batch: Batch, fields: Tensor) -> list[Tensor]:
        """Every behaviour through its pyramid: ``[B, levels * F * dim]`` each."""
        inputs = behaviour_inputs(self.embedding.behaviours(batch), fields, self.specs)
        return [self.encoders[s.name](inputs[s.name]).tokens.flatten(1) for s in self.specs]

    def forward(self, batch: Batch) -> ModelOutput:
        emb = self.embedding(batch)
        fields = self.pooling(emb)
        x = torch.cat([fields.flatten(1), *self.encoded_behaviours(batch, emb.fields)], dim=1)
        return ModelOutput(logits=self.heads(self.mlp(x)))
