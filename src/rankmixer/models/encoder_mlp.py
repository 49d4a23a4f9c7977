"""The body DIN, DIEN and Pyramid Mixer share: fields plus encoded behaviours into an MLP.

::

    FeatureEmbedding (pool_behaviours=False) -> fields [B, F, d], sequences pooled by
        SequencePooling (DIN's activation unit against the feature they share, or the mean)
    every behaviour -> its encoder (rankmixer.nn.sequence) -> [B, n, w] (+ auxiliary loss)
    MLP([fields flattened || every behaviour's vectors flattened]) -> TaskHeads

The models differ only in the encoder (``din``, ``dien``, ``pyramid``) and its config; the
encoders' auxiliary losses, summed, are ``ModelOutput.aux_loss``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from rankmixer.core.strict import StrictModel
from rankmixer.data.batch import Batch
from rankmixer.data.feature_map import FeatureMap
from rankmixer.models.base import ModelConfig, ModelOutput, add_losses
from rankmixer.nn.embedding import FeatureEmbedding
from rankmixer.nn.heads import TaskHeads
from rankmixer.nn.mlp import MLP
from rankmixer.nn.sequence import BehaviourEncoders, EncoderOutput
from rankmixer.nn.tokenizer import PoolingMode, SequencePooling

__all__ = ["EncoderMLP"]


class EncoderMLP(nn.Module):
    """See the module docstring. ``cfg`` gives ``embedding_dim``, ``dnn_hidden``,
    ``dnn_activation`` and ``dropout``; ``attention`` the activation unit of the sequence
    pooling (hidden widths, softmax, activation); ``model`` names the model in errors."""

    def __init__(self, feature_map: FeatureMap, cfg: ModelConfig, encoder: str, encoder_cfg: StrictModel,
                 pooling: PoolingMode, attention: tuple[list[int], bool, str], model: str) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.embedding_dim
        self.embedding = FeatureEmbedding(feature_map, d, numeric_as_field=True, pool_behaviours=False)
        names = self.embedding.field_names
        hidden, softmax, activation = attention
        self.pooling = SequencePooling(feature_map, names, d, mode=pooling, attention_hidden=hidden,
                                       softmax=softmax, activation=activation)
        self.encoders = BehaviourEncoders(feature_map, names, d, encoder, encoder_cfg)
        width = sum(e.num_outputs * e.out_dim for e in self.encoders.values())
        self.mlp = MLP(len(names) * d + width, cfg.dnn_hidden, activation=cfg.dnn_activation, dropout=cfg.dropout)
        if self.mlp.in_features == 0:
            raise ValueError(f"{model} needs at least one feature")
        self.heads = TaskHeads(self.mlp.out_features, feature_map.num_tasks, [])

    def encode_behaviours(self, batch: Batch, fields: Tensor) -> list[EncoderOutput]:
        """Every behaviour through its encoder, against the row's fields ``[B, F, d]``."""
        return self.encoders.encode(self.embedding.behaviours(batch), fields, batch.behaviours)

    def forward(self, batch: Batch) -> ModelOutput:
        emb = self.embedding(batch)
        fields = self.pooling(emb)  # sequences pooled against their targets
        outs = self.encode_behaviours(batch, emb.fields)
        x = torch.cat([fields.flatten(1), *(o.tokens.flatten(1) for o in outs)], dim=1)
        return ModelOutput(logits=self.heads(self.mlp(x)), aux_loss=add_losses(*(o.aux_loss for o in outs)))
