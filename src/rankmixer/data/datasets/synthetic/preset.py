"""The ``synthetic`` preset: the generator behind the dataset preset interface.

Its raw files are generated on first use (into ``<prepared_dir>-raw`` unless ``data.raw`` says
otherwise) and regenerated only when the generator config changes. The planted model's
Bayes-optimal metrics per split go into the feature map's ``extras["bayes"]``, so every report
can print the ceiling next to the model's numbers; its functional form (which fields and
features each term uses) goes into ``extras["planted"]``, from which the model-class oracle
(``rankmixer.models.planted``) is built.
"""

from __future__ import annotations

import json
from pathlib import Path

from rankmixer.data.datasets.base import DatasetPreset, RawFiles, register_preset
from rankmixer.data.datasets.synthetic.columns import schema as feature_schema
from rankmixer.data.datasets.synthetic.config import META_FILE, SPLITS, SyntheticConfig
from rankmixer.data.datasets.synthetic.generator import Generator
from rankmixer.data.datasets.synthetic.writer import generate, load_meta, split_files
from rankmixer.data.schema import Schema


@register_preset
class SyntheticPreset(DatasetPreset):
    name = "synthetic"
    description = "Criteo-like synthetic CTR data from a planted model with known Bayes-optimal AUC"

    def __init__(self, **options):
        self.cfg = SyntheticConfig.model_validate(options)

    def schema(self) -> Schema:
        return feature_schema(self.cfg)

    def default_raw_path(self, prepared_dir: Path) -> Path:
        # Beside, not inside, the prepared directory: re-preparing empties that one.
        return Path(f"{prepared_dir}-raw")

    def _up_to_date(self, path: Path) -> bool:
        meta = path / META_FILE
        if not meta.exists():
            return False
        saved = json.loads(meta.read_text()).get("config")
        return saved == self.cfg.model_dump(mode="json")

    def raw_files(self, path: Path) -> RawFiles:
        path = Path(path)
        if not self._up_to_date(path):
            generate(self.cfg, path)
        return RawFiles(by_split={s: [path / f for f in split_files(self.cfg, s)] for s in SPLITS})

    def extras(self, path: Path) -> dict:
        meta = load_meta(path)
        # Data generated before the meta kept the form: rebuild it from the config (seconds).
        structure = meta["planted_model"].get("structure") or Generator(self.cfg).structure()
        return {
            "bayes": {
                s: {"auc": meta["splits"][s]["bayes_auc"], "logloss": meta["splits"][s]["bayes_logloss"]}
                for s in SPLITS
            },
            "planted": structure,
        }
