"""DIN: Deep Interest Network (Zhou et al. 2018, KDD, arXiv 1706.06978)."""

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
from rankmixer.nn.sequence import behaviour_inputs, behaviour_specs, build_encoder
from rankmixer.nn.sequence.pooling import DINEncoderConfig
from rankmixer.nn.tokenizer import SequencePooling


class DINConfig(ModelConfig):
    attention_hidden: list[int] = Field(default=[80, 40], description="hidden widths of the activation unit")
    attention_activation: str = Field(default="prelu", description="activation of the activation unit's hidden layers")
    softmax: bool = Field(default=False, description="normalise the weights over the history (the paper does not: "
                          "the sum of the weights carries how strongly the history speaks for the candidate)")
    dnn_hidden: list[int] = Field(default=[200, 80], description="hidden widths of the MLP on top")
    dnn_activation: str = "prelu"
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)


@register("din", DINConfig)
class DIN(nn.Module):
    """DIN: target attention of the user's history against the candidate through a local activation unit (Zhou et al. 2018, "Deep Interest Network for Click-Through Rate Prediction").

    Every feature is embedded (``embedding_dim``); a history is pooled by the activation unit
    ``a(h_l, q) = MLP([h_l, q, h_l - q, h_l * q])`` (:func:`~rankmixer.nn.tokenizer.activation_weights`),
    ``sum_l a(h_l, q) h_l``, unnormalised as in the paper (``softmax`` normalises):

    * a sequence feature (one id per position) against the feature it shares its table with
      (the candidate item), as RankMixer's ``target_attention`` pooling does;
    * a behaviour (``Batch.behaviours``, several fields per position) against the candidate's
      fields it shares, by :class:`~rankmixer.nn.sequence.pooling.DINEncoder` (``[F * dim]`` per
      behaviour; a behaviour without shared fields is mean-pooled).

    The fields (pooled histories in place of their masked means), flattened, with the pooled
    behaviours, go through an MLP (``dnn_hidden``, PReLU, or the paper's Dice with ``dnn_activation: dice``) to the
    task heads. Without histories DIN is embedding + MLP.
    """

    def __init__(self, feature_map: FeatureMap, cfg: DINConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.embedding_dim
        self.embedding = FeatureEmbedding(feature_map, d, numeric_as_field=True, pool_behaviours=False)
        names = self.embedding.field_names
        self.pooling = SequencePooling(feature_map, names, d, mode="target_attention",
                                       attention_hidden=cfg.attention_hidden, softmax=cfg.softmax,
                                       activation=cfg.attention_activation)
        self.specs = behaviour_specs(feature_map, names)
        unit = DINEncoderConfig(attention_hidden=cfg.attention_hidden, attention_activation=cfg.attention_activation,
                                softmax=cfg.softmax)
        self.encoders = nn.ModuleDict({s.name: build_encoder("din", unit, d, s, len(names)) for s in self.specs})
        width = sum(e.out_dim for e in self.encoders.values())
        self.mlp = MLP(len(names) * d + width, cfg.dnn_hidden, activation=cfg.dnn_activation, dropout=cfg.dropout)
        if self.mlp.in_features == 0:
            raise ValueError("DIN needs at least one feature")
        self.heads = TaskHeads(self.mlp.out_features, feature_map.num_tasks, [])

    def pooled_behaviours(self, batch: Batch, fields: Tensor) -> list[Tensor]:
        """Every behaviour pooled against the candidate: ``[B, F * dim]`` each."""
        inputs = behaviour_inputs(self.embedding.behaviours(batch), fields, self.specs)
        return [self.encoders[s.name](inputs[s.name]).tokens.flatten(1) for s in self.specs]

    def forward(self, batch: Batch) -> ModelOutput:
        emb = self.embedding(batch)
        fields = self.pooling(emb)  # sequences pooled against their targets
        x = torch.cat([fields.flatten(1), *self.pooled_behaviours(batch, emb.fields)], dim=1)
        return ModelOutput(logits=self.heads(self.mlp(x)))
