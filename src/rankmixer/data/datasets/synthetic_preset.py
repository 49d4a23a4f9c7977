"""The ``synthetic`` preset: the generator in ``synthetic.py`` behind the preset interface.

Its raw files are generated on first use (into ``<prepared_dir>-raw`` unless ``data.raw`` says
otherwise) and regenerated only when the generator config changes. The planted model's
Bayes-optimal metrics per split go into the feature map's ``extras["bayes"]``, so every report
can print the ceiling next to the model's numbers.
"""

from __future__ import annotations

import json
from pathlib import Path

from rankmixer.data.datasets import synthetic
from rankmixer.data.datasets.base import DatasetPreset, RawFiles, register_preset
from rankmixer.data.schema import Schema

_SPLIT_NAMES = ("train", "valid", "test")


@register_preset
class SyntheticPreset(DatasetPreset):
    name = "synthetic"
    description = "Criteo-like synthetic CTR data from a planted model with known Bayes-optimal AUC"

    def __init__(self, **options):
        self.cfg = synthetic.SyntheticConfig.model_validate(options)

    def schema(self) -> Schema:
        return synthetic.schema(self.cfg)

    def default_raw_path(self, prepared_dir: Path) -> Path:
        # Beside, not inside, the prepared directory: re-preparing empties that one.
        return Path(f"{prepared_dir}-raw")

    def _up_to_date(self, path: Path) -> bool:
        meta = path / synthetic.META_FILE
        if not meta.exists():
            return False
        saved = json.loads(meta.read_text()).get("config")
        return saved == self.cfg.model_dump(mode="json")

    def raw_files(self, path: Path) -> RawFiles:
        path = Path(path)
        if not self._up_to_date(path):
            synthetic.generate(self.cfg, path)
        return RawFiles(by_split={s: [path / f for f in synthetic.split_files(self.cfg, s)] for s in _SPLIT_NAMES})

    def extras(self, path: Path) -> dict:
        meta = synthetic.load_meta(path)
        return {
            "bayes": {
                s: {"auc": meta["splits"][s]["bayes_auc"], "logloss": meta["splits"][s]["bayes_logloss"]}
                for s in _SPLIT_NAMES
            }
        }
