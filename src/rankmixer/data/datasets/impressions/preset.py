"""The ``impressions`` preset: the synthetic impression log, built into page-history rows.

Each split's log comes from :mod:`.simulate` (cut to the split's rows) and goes through the same
:func:`.builder.build_rows` a real log goes through, then into Parquet with the exact Bayes AUC
of ``bayes_p`` (:mod:`rankmixer.data.datasets.generated`). Raw files are generated on first use,
again only when the config changes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from rankmixer.core.files import write_text_atomic
from rankmixer.data.datasets.base import register_preset
from rankmixer.data.datasets.generated import GeneratedPreset, read_meta, write_dataset
from rankmixer.data.datasets.impressions.builder import build_rows
from rankmixer.data.datasets.impressions.columns import arrow_schema, column_names, schema, schema_yaml
from rankmixer.data.datasets.impressions.config import META_FILE, SCHEMA_FILE, ImpressionConfig
from rankmixer.data.datasets.impressions.simulate import Simulator
from rankmixer.data.schema import Schema

OUTPUT_KIND = "impressions-data"


def _block(sim: Simulator, split: str):
    cfg = sim.cfg
    log = sim.log(split).head(cfg.rows(split))
    rows, _ = build_rows(log, cfg.max_pages, cfg.page_size, where=f"simulated {split} log")
    rows = rows.with_columns(pl.col(c).cast(pl.Utf8) for c in ("user", "item", "cat"))
    table = rows.select(column_names()).to_arrow().cast(arrow_schema())
    p = rows["bayes_p"].to_numpy()
    label = rows["click"].to_numpy().astype(np.uint8)
    for batch in table.to_batches(max_chunksize=cfg.chunk_rows):
        n = batch.num_rows
        yield batch, p[:n], label[:n]
        p, label = p[n:], label[n:]


def generate(cfg: ImpressionConfig | dict | None, out_dir: str | Path, progress: bool = True) -> dict:
    """Write train / valid / test Parquet, ``schema.yaml`` and ``impressions_meta.json``."""
    cfg = ImpressionConfig.model_validate(cfg or {}) if not isinstance(cfg, ImpressionConfig) else cfg
    out_dir = Path(out_dir)
    meta = write_dataset(
        out_dir, cfg, name="impressions", kind=OUTPUT_KIND, meta_file=META_FILE, columns=column_names(),
        schema=arrow_schema(), make_generator=lambda: Simulator(cfg), blocks_of=_block,
        write_schema=lambda: write_text_atomic(out_dir / SCHEMA_FILE, schema_yaml(cfg)), progress=progress)
    return meta


def load_meta(out_dir: str | Path) -> dict:
    return read_meta(out_dir, META_FILE, "rankmixer.data.datasets.impressions.preset.generate(cfg, out_dir)")


@register_preset
class ImpressionsPreset(GeneratedPreset):
    name = "impressions"
    description = ("synthetic impression logs (pages of exposed items with click feedback) with a planted "
                   "page-context effect and known Bayes-optimal AUC, built into page-history rows")
    config_cls = ImpressionConfig
    meta_file = META_FILE
    writer = staticmethod(generate)
    meta_reader = staticmethod(load_meta)

    def schema(self) -> Schema:
        return schema(self.cfg)
