"""MoS, Mixture of Sequence (Lin et al., WWW'26, arXiv 2604.20858) as a model: DIN's body with
every behaviour encoded by the MoS wrapper around a backbone encoder."""

from __future__ import annotations

from pydantic import Field

from rankmixer.data.feature_map import FeatureMap
from rankmixer.models.base import ModelConfig
from rankmixer.models.encoder_mlp import EncoderMLP
from rankmixer.models.registry import register
from rankmixer.nn.sequence.mos import MoSConfig


class MoSModelConfig(ModelConfig):
    mos: MoSConfig = Field(default_factory=MoSConfig, description="the wrapper: backbone, themes, experts, routing")
    attention_hidden: list[int] = Field(default=[80, 40], description="DIN activation unit of the sequence features")
    dnn_hidden: list[int] = Field(default=[200, 80], description="hidden widths of the MLP on top")
    dnn_activation: str = "prelu"
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)


@register("mos", MoSModelConfig)
class MoS(EncoderMLP):
    """MoS: global, short-term and theme-routed experts around a sequence backbone, fused by a gate (Lin et al. 2026, WWW).

    The body is DIN's (:class:`~rankmixer.models.encoder_mlp.EncoderMLP`): fields, sequence
    features pooled by DIN's activation unit, and every behaviour through
    :class:`~rankmixer.nn.sequence.mos.MoSEncoder` (``mos.backbone``: din, dien, interformer,
    pyramid), into an MLP. ``mos: {backbone: din}`` against the plain backbone model is the
    paper's comparison; the behaviour needs a session field (``docs/data.md``).
    """

    def __init__(self, feature_map: FeatureMap, cfg: MoSModelConfig) -> None:
        super().__init__(feature_map, cfg, "mos", cfg.mos, "target_attention",
                         (cfg.attention_hidden, False, "prelu"), "MoS")
