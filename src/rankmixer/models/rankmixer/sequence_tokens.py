"""RankMixer's sequence tokens: behaviour sequences encoded by a sequence module, whose output
vectors join the feature fields before tokenisation.

In production RankMixer takes the outputs of sequence modules as tokens next to the semantic
tokens (Zhu et al. 2025, section 3.2). Here every behaviour of the feature map goes through
one encoder of :mod:`rankmixer.nn.sequence` (``sequence_module``: ``mean``, ``din``, ``dien``,
``interformer``, ``pyramid``; options from ``sequence_options``). Each of its output vectors
(``out_dim`` wide) becomes ``k = ceil(out_dim / d)`` fields of the embedding width ``d``: cut into
``d``-wide pieces when ``out_dim = k d`` (the pooling encoders' ``F * d``: one field per
per-position field), else first projected by a ``Linear(out_dim, k d)``. The fields are named
``<behaviour>.<i>`` and take the behaviour's place in the schema's feature groups (a behaviour
listed in the ``user`` group puts its fields there), so the semantic tokenizer turns them into
tokens of their own group as it does every other group. Encoder auxiliary losses (DIEN's) are
summed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from rankmixer.data.batch import Batch
from rankmixer.data.feature_map import FeatureMap
from rankmixer.models.base import add_losses
from rankmixer.nn.embedding import FeatureEmbedding
from rankmixer.nn.sequence import BehaviourEncoders

__all__ = ["SequenceFields"]


class SequenceFields(nn.Module):
    """Every behaviour -> ``[B, S, d]`` extra fields (see the module docstring); ``names`` and
    ``feature_groups`` say where they go."""

    def __init__(self, feature_map: FeatureMap, field_names: Sequence[str], dim: int, module: str,
                 options: dict) -> None:
        super().__init__()
        self.dim = dim
        self.encoders = BehaviourEncoders(feature_map, field_names, dim, module, options)
        self.proj = nn.ModuleDict()
        self.names: list[str] = []
        self.fields_of: dict[str, list[str]] = {}
        for spec in self.encoders.specs:
            enc = self.encoders[spec.name]
            k = math.ceil(enc.out_dim / dim)
            self.proj[spec.name] = nn.Identity() if enc.out_dim == k * dim else nn.Linear(enc.out_dim, k * dim)
            names = [f"{spec.name}.{i}" for i in range(enc.num_outputs * k)]
            self.fields_of[spec.name] = names
            self.names += names
        self.feature_groups = {
            g: [n for m in members for n in self.fields_of.get(m, [m])]
            for g, members in feature_map.feature_groups.items()
        }

    def forward(self, embedding: FeatureEmbedding, batch: Batch, fields: Tensor) -> tuple[Tensor, Tensor | None]:
        """(extra fields ``[B, S, d]``, summed auxiliary loss or None) for the row fields ``fields``."""
        out, aux = [], None
        for spec, enc in zip(self.encoders.specs, self.encoders.encode(embedding.behaviours(batch), fields, batch.behaviours)):
            tokens = self.proj[spec.name](enc.tokens)  # [B, n, k d]
            out.append(tokens.reshape(tokens.shape[0], -1, self.dim))
            aux = add_losses(aux, enc.aux_loss)
        return torch.cat(out, dim=1), aux
