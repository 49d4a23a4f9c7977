"""The ``multitask`` preset: the conflicting-task generator behind the dataset preset interface
(generated on first use, again only when its config changes; every task's Bayes-optimal metrics
per split go into the feature map's ``extras["bayes"]``)."""

from __future__ import annotations

from rankmixer.data.datasets.base import register_preset
from rankmixer.data.datasets.generated import GeneratedPreset
from rankmixer.data.datasets.multitask.columns import schema as feature_schema
from rankmixer.data.datasets.multitask.config import META_FILE, MultitaskConfig
from rankmixer.data.datasets.multitask.writer import generate, load_meta
from rankmixer.data.schema import Schema


@register_preset
class MultitaskPreset(GeneratedPreset):
    name = "multitask"
    description = "synthetic multi-task clicks with a controllable conflict between tasks and known Bayes-optimal metrics per task"
    config_cls = MultitaskConfig
    meta_file = META_FILE
    writer = staticmethod(generate)
    meta_reader = staticmethod(load_meta)

    def schema(self) -> Schema:
        return feature_schema(self.cfg)
