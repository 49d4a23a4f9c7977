"""The ``synthetic`` preset: the generator behind the dataset preset interface.

Its raw files are generated on first use (into ``<prepared_dir>-raw`` unless ``data.raw`` says
otherwise) and regenerated only when the generator config changes. The planted model's
Bayes-optimal metrics per split go into the feature map's ``extras["bayes"]``, so every report
can print the ceiling next to the model's numbers; its functional form (which fields and
features each term uses) goes into ``extras["planted"]``, from which the model-class oracle
(``rankmixer.models.planted``) is built.
"""

from __future__ import annotations

from rankmixer.data.datasets.base import register_preset
from rankmixer.data.datasets.generated import GeneratedPreset
from rankmixer.data.datasets.synthetic.columns import schema as feature_schema
from rankmixer.data.datasets.synthetic.config import META_FILE, SyntheticConfig
from rankmixer.data.datasets.synthetic.generator import Generator
from rankmixer.data.datasets.synthetic.writer import generate, load_meta
from rankmixer.data.schema import Schema


@register_preset
class SyntheticPreset(GeneratedPreset):
    name = "synthetic"
    description = "Criteo-like synthetic CTR data from a planted model with known Bayes-optimal AUC"
    config_cls = SyntheticConfig
    meta_file = META_FILE
    writer = staticmethod(generate)
    meta_reader = staticmethod(load_meta)

    def schema(self) -> Schema:
        return feature_schema(self.cfg)

    def extras_from(self, meta: dict) -> dict:
        # Data generated before the meta kept the form: rebuild it from the config (seconds).
        structure = meta["planted_model"].get("structure") or Generator(self.cfg).structure()
        return {**super().extras_from(meta), "planted": structure}
