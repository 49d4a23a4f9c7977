"""RACP (Chen et al., WSDM 2022, arXiv 2203.15542) as a model: DIN's body with every page
behaviour encoded by page-context-aware recurrent attention."""

from __future__ import annotations

from pydantic import Field

from rankmixer.data.feature_map import FeatureMap
from rankmixer.models.base import ModelConfig
from rankmixer.models.encoder_mlp import EncoderMLP
from rankmixer.models.registry import register
from rankmixer.nn.sequence.racp import RACPConfig


class RACPModelConfig(ModelConfig):
    racp: RACPConfig = Field(default_factory=RACPConfig, description="the page encoder: widths, attention units")
    attention_hidden: list[int] = Field(default=[80, 40], description="DIN activation unit of the sequence features")
    dnn_hidden: list[int] = Field(default=[200, 80], description="hidden widths of the MLP on top (the paper's)")
    dnn_activation: str = "prelu"
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)


@register("racp", RACPModelConfig)
class RACP(EncoderMLP):
    """RACP: intra-page context-aware attention, a GRU-updated query across pages and target attention over page vectors (Chen et al. 2022, WSDM).

    The body is DIN's (:class:`~rankmixer.models.encoder_mlp.EncoderMLP`): fields, sequence
    features pooled by DIN's activation unit, and every behaviour through
    :class:`~rankmixer.nn.sequence.racp.RACPEncoder`, into an MLP ([200, 80], PReLU, the
    paper's). Every behaviour must be a page behaviour (a page field); the ``impressions``
    preset with ``behaviours: pages`` gives one.
    """

    def __init__(self, feature_map: FeatureMap, cfg: RACPModelConfig) -> None:
        super().__init__(feature_map, cfg, "racp", cfg.racp, "target_attention",
                         (cfg.attention_hidden, False, "prelu"), "RACP")
