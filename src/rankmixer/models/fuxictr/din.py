"""DIN (Zhou et al. 2018) composed from FuxiCTR's layers as ``model_zoo/DIN`` does.

The zoo's DIN attends ``din_sequence_field`` (tuples of history fields, e.g. ``(click_history,
cate_history)``) against ``din_target_field`` (``(item_id, cate_id)``) with ``DIN_Attention`` and
replaces each attended field's embedding by its pooled slice; the other fields keep their
feature encoders. Here the pairs come from our feature map, the way our DIN pairs them:

* a sequence feature that shares a sparse feature's table is attended against that feature;
* a behaviour (``Batch.behaviours``, several fields per position) is one zoo ``sequence_field``
  tuple: its fields that share a row feature's table (item, category: ``BehaviourSpec.keys``)
  against the candidate's fields they share (``query``); its other fields (type, time gap,
  rating) are FuxiCTR sequence features mean-pooled by ``MaskedAveragePooling``, as a zoo
  history field outside ``din_sequence_field`` is. Ours differs here: it pools every field of a
  position with the key fields' weights (``nn/sequence/pooling.py``); ``DIN_Attention`` pools the
  same tensor it scores, so the zoo cannot. A behaviour without shared fields is mean-pooled.

Each behaviour field is a FuxiCTR sequence feature named ``<behaviour>__<field>`` in FuxiCTR's
``FeatureMap`` (shared fields through ``share_embedding``), so every table is FuxiCTR's, as in the
other compositions. The mask is the zoo's: the first attended field's id is non-zero. Dice
(the zoo's default attention activation) normalises over every position of the batch, pads
included, in training mode (FuxiCTR's ``DIN_Attention`` flattens ``[B, L]`` before its MLP).
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import Tensor, nn

from rankmixer.data.batch import Batch
from rankmixer.data.feature_map import FeatureMap, behaviour_column
from rankmixer.models.fuxictr.common import FuxiCTRConfig, FuxiCTRModel, batch_to_inputs, fuxictr_feature_map
from rankmixer.models.registry import register

MEAN_POOLING = "layers.MaskedAveragePooling()"


class FuxiDINConfig(FuxiCTRConfig):
    dnn_hidden: list[int] = Field(default=[512, 128, 64], description="FuxiCTR's dnn_hidden_units")
    dnn_activation: str = Field(default="ReLU", description="FuxiCTR's dnn_activations (a torch.nn name or Dice)")
    attention_hidden: list[int] = Field(default=[64], description="FuxiCTR's attention_hidden_units")
    attention_activation: str = Field(default="Dice", description="FuxiCTR's attention_hidden_activations")
    attention_dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    softmax: bool = Field(default=False, description="FuxiCTR's din_use_softmax")
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0, description="FuxiCTR's net_dropout")
    batch_norm: bool = Field(default=False, description="BatchNorm in the DNN")


def din_pairs(feature_map: FeatureMap) -> list[tuple[tuple[str, ...], tuple[str, ...]]]:
    """The zoo's ``(din_target_field, din_sequence_field)`` pairs of our feature map (FuxiCTR
    feature names; see the module docstring)."""
    sparse = {f.name for f in feature_map.sparse}
    pairs = [((f.share_with,), (f.name,)) for f in feature_map.sequences if f.share_with in sparse]
    for f in feature_map.behaviours:
        shared = [(b.share_with, behaviour_column(f.name, b.name)) for b in f.fields if b.share_with in sparse]
        if shared:
            pairs.append((tuple(t for t, _ in shared), tuple(s for _, s in shared)))
    return pairs


def din_feature_map(feature_map: FeatureMap, embedding_dim: int):
    """FuxiCTR's ``FeatureMap`` of our features plus every behaviour field as a sequence feature;
    attended fields without a feature encoder (the attention pools them)."""
    fmap = fuxictr_feature_map(feature_map, embedding_dim)
    attended = {s for _, seq in din_pairs(feature_map) for s in seq}
    for f in feature_map.behaviours:
        for b in f.fields:
            spec = {"type": "sequence", "source": "", "vocab_size": b.vocab_size, "padding_idx": 0,
                    "max_len": f.max_len, "feature_encoder": MEAN_POOLING}
            if b.share_with:
                spec["share_embedding"] = b.share_with
            fmap.features[behaviour_column(f.name, b.name)] = spec
    for name in attended:
        fmap.features[name]["feature_encoder"] = None
    fmap.num_fields = fmap.get_num_fields()
    return fmap


@register("fuxictr-din", FuxiDINConfig)
class FuxiDIN(FuxiCTRModel):
    """DIN from FuxiCTR's layers (DIN_Attention with Dice, MLP_Block) on sequences and behaviours, as its model zoo composes them (Zhou et al. 2018; FuxiCTR).

    Follows ``model_zoo/DIN/src/DIN.py``: embeddings as a dict; per (target, sequence) pair the
    history pooled by ``DIN_Attention`` replaces the sequence fields' embeddings; everything
    flattened into an ``MLP_Block`` (here one output per task, logits).
    """

    def __init__(self, feature_map: FeatureMap, cfg: FuxiDINConfig) -> None:
        super().__init__(din_feature_map(feature_map, cfg.embedding_dim), cfg)
        self.feature_map = feature_map  # ours: the Batch -> input dict conversion reads it
        L = self.fx.layers
        d = cfg.embedding_dim
        self.pairs = din_pairs(feature_map)
        self.attention_layers = nn.ModuleList(
            [L.DIN_Attention(d * len(target), attention_units=list(cfg.attention_hidden),
                             hidden_activations=cfg.attention_activation, output_activation=None,
                             dropout_rate=cfg.attention_dropout, use_softmax=cfg.softmax)
             for target, _ in self.pairs])
        dnn_activations = cfg.dnn_activation
        if dnn_activations.lower() == "dice":  # as the zoo: one Dice per hidden layer
            dnn_activations = [L.Dice(units) for units in cfg.dnn_hidden]
        self.dnn = L.MLP_Block(input_dim=self.fx_map.sum_emb_out_dim(), output_dim=self.num_tasks,
                               hidden_units=list(cfg.dnn_hidden), hidden_activations=dnn_activations,
                               output_activation=None, dropout_rates=cfg.dropout, batch_norm=cfg.batch_norm)
        self.reset_parameters()

    def inputs(self, batch: Batch) -> dict[str, Tensor]:
        X = batch_to_inputs(self.feature_map, batch)
        for f in self.feature_map.behaviours:
            ids = batch.behaviours[f.name]  # [B, L, F]
            for k, b in enumerate(f.fields):
                X[behaviour_column(f.name, b.name)] = ids[:, :, k]
        return X

    def logits(self, X: dict[str, Tensor]) -> Tensor:
        emb = self.embedding_layer.embedding_layer(X)  # FeatureEmbeddingDict: name -> tensor
        d = self.cfg.embedding_dim
        for attention, (target, sequence) in zip(self.attention_layers, self.pairs):
            target_emb = torch.cat([emb[f] for f in target], dim=-1)
            sequence_emb = torch.cat([emb[f] for f in sequence], dim=-1)
            mask = X[sequence[0]].long() != 0  # padding_idx = 0
            pooled = attention(target_emb, sequence_emb, mask)
            for field, field_emb in zip(sequence, pooled.split(d, dim=-1)):
                emb[field] = field_emb
        return self.dnn(self.embedding_layer.embedding_layer.dict2tensor(emb, flatten_emb=True))
