"""The ``behaviour`` preset: the behaviour-sequence generator behind the dataset preset interface.

Like the ``synthetic`` preset: raw files are generated on first use (into
``<prepared_dir>-raw`` unless ``data.raw`` says otherwise), again only when the generator config
changes, and the planted model's Bayes-optimal metrics per split go into the feature map's
``extras["bayes"]``, so every report prints the ceiling beside the model's numbers.
"""

from __future__ import annotations

import json
from pathlib import Path

from rankmixer.data.datasets.base import DatasetPreset, RawFiles, register_preset
from rankmixer.data.datasets.behaviour.columns import schema as feature_schema
from rankmixer.data.datasets.behaviour.config import META_FILE, BehaviourConfig
from rankmixer.data.datasets.behaviour.writer import generate, load_meta, split_files
from rankmixer.data.datasets.synthetic.config import SPLITS
from rankmixer.data.schema import Schema


@register_preset
class BehaviourPreset(DatasetPreset):
    name = "behaviour"
    description = "synthetic behaviour sequences (up to 1,000 positions) from a planted sequence model with known Bayes-optimal AUC"

    def __init__(self, **options):
        self.cfg = BehaviourConfig.model_validate(options)

    def schema(self) -> Schema:
        return feature_schema(self.cfg)

    def default_raw_path(self, prepared_dir: Path) -> Path:
        return Path(f"{prepared_dir}-raw")

    def _up_to_date(self, path: Path) -> bool:
        meta = path / META_FILE
        if not meta.exists():
            return False
        return json.loads(meta.read_text()).get("config") == self.cfg.model_dump(mode="json")

    def raw_files(self, path: Path) -> RawFiles:
        path = Path(path)
        if not self._up_to_date(path):
            generate(self.cfg, path)
        return RawFiles(by_split={s: [path / f for f in split_files(self.cfg, s)] for s in SPLITS})

    def extras(self, path: Path) -> dict:
        meta = load_meta(path)
        return {"bayes": {s: {"auc": meta["splits"][s]["bayes_auc"], "logloss": meta["splits"][s]["bayes_logloss"]}
                          for s in SPLITS}}
