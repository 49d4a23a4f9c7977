"""DIN: Deep Interest Network (Zhou et al. 2018, KDD, arXiv 1706.06978)."""

from __future__ import annotations

from pydantic import Field

from rankmixer.data.feature_map import FeatureMap
from rankmixer.models.base import ModelConfig
from rankmixer.models.encoder_mlp import EncoderMLP
from rankmixer.models.registry import register
from rankmixer.nn.sequence.pooling import DINEncoderConfig


class DINConfig(ModelConfig):
    attention_hidden: list[int] = Field(default=[80, 40], description="hidden widths of the activation unit")
    attention_activation: str = Field(default="prelu", description="activation of the activation unit's hidden layers")
    softmax: bool = Field(default=False, description="normalise the weights over the history (the paper does not: "
                          "the sum of the weights carries how strongly the history speaks for the candidate)")
    dnn_hidden: list[int] = Field(default=[200, 80], description="hidden widths of the MLP on top")
    dnn_activation: str = "prelu"
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)


@register("din", DINConfig)
class DIN(EncoderMLP):
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
        unit = DINEncoderConfig(attention_hidden=cfg.attention_hidden, attention_activation=cfg.attention_activation,
                                softmax=cfg.softmax)
        super().__init__(feature_map, cfg, "din", unit, "target_attention",
                         (cfg.attention_hidden, cfg.softmax, cfg.attention_activation), "DIN")
