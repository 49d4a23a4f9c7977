"""The ``behaviour`` preset: the behaviour-sequence generator behind the dataset preset interface.

Like the ``synthetic`` preset: raw files are generated on first use (into
``<prepared_dir>-raw`` unless ``data.raw`` says otherwise), again only when the generator config
changes, and the planted model's Bayes-optimal metrics per split go into the feature map's
``extras["bayes"]``, so every report prints the ceiling beside the model's numbers.
"""

from __future__ import annotations

from rankmixer.data.datasets.base import register_preset
from rankmixer.data.datasets.behaviour.columns import schema as feature_schema
from rankmixer.data.datasets.behaviour.config import META_FILE, BehaviourConfig
from rankmixer.data.datasets.behaviour.writer import generate, load_meta
from rankmixer.data.datasets.generated import GeneratedPreset
from rankmixer.data.schema import Schema


@register_preset
class BehaviourPreset(GeneratedPreset):
    name = "behaviour"
    description = "synthetic behaviour sequences (up to 1,000 positions) from a planted sequence model with known Bayes-optimal AUC"
    config_cls = BehaviourConfig
    meta_file = META_FILE
    writer = staticmethod(generate)
    meta_reader = staticmethod(load_meta)

    def schema(self) -> Schema:
        return feature_schema(self.cfg)
