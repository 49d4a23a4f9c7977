"""DIEN: Deep Interest Evolution Network (Zhou et al. 2019, AAAI, arXiv 1809.03672)."""

from __future__ import annotations

from pydantic import Field

from rankmixer.data.feature_map import FeatureMap
from rankmixer.models.base import ModelConfig
from rankmixer.models.encoder_mlp import EncoderMLP
from rankmixer.models.registry import register
from rankmixer.nn.sequence.dien import DIENEncoderConfig


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
class DIEN(EncoderMLP):
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
        enc = DIENEncoderConfig(hidden=cfg.gru_hidden, aux_loss_weight=cfg.aux_loss_weight)
        super().__init__(feature_map, cfg, "dien", enc, "target_attention",
                         (cfg.attention_hidden, cfg.softmax, cfg.attention_activation), "DIEN")
