"""The two pooling encoders: masked mean, and DIN's target attention (Zhou et al. 2018).

Both give one vector per behaviour, every field of every position pooled: ``[B, 1, F * d]``.
"""

from __future__ import annotations

from pydantic import Field
from torch import nn

from rankmixer.core.strict import StrictModel
from rankmixer.nn.embedding import masked_mean
from rankmixer.nn.mlp import MLP
from rankmixer.nn.sequence.base import BehaviourInput, BehaviourSpec, EncoderOutput, register_encoder
from rankmixer.nn.tokenizer import activation_weights


class MeanConfig(StrictModel):
    pass


@register_encoder("mean", MeanConfig)
class MeanEncoder(nn.Module):
    """Every field of the behaviour, averaged over the real positions: ``[B, 1, F * d]``."""

    def __init__(self, cfg: MeanConfig, dim: int, spec: BehaviourSpec, num_context: int) -> None:
        super().__init__()
        self.num_outputs, self.out_dim = 1, spec.num_fields * dim

    def forward(self, x: BehaviourInput) -> EncoderOutput:
        B, L = x.mask.shape
        return EncoderOutput(masked_mean(x.hist.reshape(B, L, -1), x.mask).unsqueeze(1))


class DINEncoderConfig(StrictModel):
    attention_hidden: list[int] = Field(default=[80, 40], description="hidden widths of the activation unit")
    attention_activation: str = Field(default="prelu", description="activation of the activation unit's hidden layers")
    softmax: bool = Field(default=False, description="normalise the weights over the history (the paper does not: "
                          "the sum of the weights carries how strongly the history speaks for the candidate)")


@register_encoder("din", DINEncoderConfig)
class DINEncoder(nn.Module):
    """DIN's local activation unit over one behaviour: ``[B, 1, F * d]``.

    The keys are the concatenated vectors of the behaviour's fields that share a table with the
    row (``spec.keys``), the query the candidate's vectors of those fields, the weight of
    position ``l`` is ``a(k_l, q) = MLP([k_l, q, k_l - q, k_l * q])``
    (:func:`~rankmixer.nn.tokenizer.activation_weights`), the pooled value
    ``sum_l a(k_l, q) h_l`` over every field of the position (type and time gap included).
    A behaviour that shares no field with the row has no query and is mean-pooled.
    """

    def __init__(self, cfg: DINEncoderConfig, dim: int, spec: BehaviourSpec, num_context: int) -> None:
        super().__init__()
        self.cfg, self.keys = cfg, list(spec.keys)
        self.num_outputs, self.out_dim = 1, spec.num_fields * dim
        self.unit = (MLP(4 * len(self.keys) * dim, cfg.attention_hidden, 1, activation=cfg.attention_activation)
                     if self.keys else None)

    def forward(self, x: BehaviourInput) -> EncoderOutput:
        B, L = x.mask.shape
        values = x.hist.reshape(B, L, -1)
        if self.unit is None:
            return EncoderOutput(masked_mean(values, x.mask).unsqueeze(1))
        keys = x.hist[:, :, self.keys].reshape(B, L, -1)
        w = activation_weights(self.unit, keys, x.mask, x.query.reshape(B, -1), self.cfg.softmax)
        return EncoderOutput((w.unsqueeze(-1).to(values.dtype) * values).sum(dim=1, keepdim=True))
