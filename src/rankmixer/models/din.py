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
from rankmixer.nn.tokenizer import SequencePooling, activation_weights


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
      fields it shares: the keys are the concatenated vectors of the behaviour's fields that
      ``share_with`` a feature (item, category, ...), the query the concatenated vectors of those
      features, the pooled value every field of the position (type and time gap included), so
      ``[F * dim]`` per behaviour. A behaviour without shared fields is mean-pooled.

    The fields (pooled histories in place of their masked means), flattened, with the pooled
    behaviours, go through an MLP (``dnn_hidden``, PReLU: the paper's Dice is not built) to the
    task heads. Without histories DIN is embedding + MLP.
    """

    def __init__(self, feature_map: FeatureMap, cfg: DINConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.embedding_dim
        self.embedding = FeatureEmbedding(feature_map, d, numeric_as_field=True)
        names = self.embedding.field_names
        self.pooling = SequencePooling(feature_map, names, d, mode="target_attention",
                                       attention_hidden=cfg.attention_hidden, softmax=cfg.softmax,
                                       activation=cfg.attention_activation)
        index = {n: i for i, n in enumerate(names)}
        # Per behaviour: positions of its fields that share a table with a field of the row, and
        # those fields' positions among the row's fields (the query).
        self.keys: dict[str, list[int]] = {}
        self.query: dict[str, list[int]] = {}
        units = {}
        width = 0
        for f in feature_map.behaviours:
            shared = [(k, b.share_with) for k, b in enumerate(f.fields) if b.share_with in index]
            self.keys[f.name] = [k for k, _ in shared]
            self.query[f.name] = [index[t] for _, t in shared]
            if shared:
                units[f.name] = MLP(4 * len(shared) * d, cfg.attention_hidden, 1, activation=cfg.attention_activation)
            width += len(f.fields) * d
        self.units = nn.ModuleDict(units)
        self.mlp = MLP(len(names) * d + width, cfg.dnn_hidden, activation=cfg.dnn_activation, dropout=cfg.dropout)
        if self.mlp.in_features == 0:
            raise ValueError("DIN needs at least one feature")
        self.heads = TaskHeads(self.mlp.out_features, feature_map.num_tasks, [])

    def pooled_behaviours(self, batch: Batch, fields: Tensor) -> list[Tensor]:
        """Every behaviour pooled against the candidate: ``[B, F * dim]`` each."""
        out = []
        for name, (emb, mask) in self.embedding.behaviours(batch).items():
            B, L, F, d = emb.shape
            values = emb.reshape(B, L, F * d)
            if name in self.units:
                keys = emb[:, :, self.keys[name]].reshape(B, L, -1)
                query = fields[:, self.query[name]].reshape(B, -1)
                w = activation_weights(self.units[name], keys, mask, query, self.cfg.softmax)
            else:
                w = mask / mask.sum(dim=1, keepdim=True).clamp_min(1)
            out.append((w.unsqueeze(-1).to(values.dtype) * values).sum(dim=1))
        return out

    def forward(self, batch: Batch) -> ModelOutput:
        emb = self.embedding(batch)
        fields = self.pooling(emb)  # sequences pooled against their targets
        x = torch.cat([fields.flatten(1), *self.pooled_behaviours(batch, emb.fields)], dim=1)
        return ModelOutput(logits=self.heads(self.mlp(x)))
