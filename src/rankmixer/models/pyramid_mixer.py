"""Pyramid Mixer (Gong et al., SIGIR'25, arXiv 2506.16942)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from rankmixer.data.feature_map import FeatureMap
from rankmixer.models.base import ModelConfig
from rankmixer.models.encoder_mlp import EncoderMLP
from rankmixer.models.registry import register
from rankmixer.nn.sequence.pyramid import PyramidConfig


class PyramidMixerConfig(ModelConfig):
    pyramid: PyramidConfig = Field(default_factory=PyramidConfig,
                                   description="the behaviour encoder (levels, window, expansions, readout)")
    sequence_pooling: Literal["mean", "target_attention"] = Field(
        default="target_attention", description="how single-id sequence features are pooled (as DIN does, or mean)")
    dnn_hidden: list[int] = Field(default=[200, 80], description="hidden widths of the MLP on top")
    dnn_activation: str = "relu"
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)


@register("pyramid_mixer", PyramidMixerConfig)
class PyramidMixer(EncoderMLP):
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
        p = cfg.pyramid
        super().__init__(feature_map, cfg, "pyramid", p, cfg.sequence_pooling,
                         (p.attention_hidden, p.softmax, p.attention_activation), "PyramidMixer")
