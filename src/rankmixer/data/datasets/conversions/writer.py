"""Writing a synthetic conversion log: ``train`` / ``valid`` / ``test`` Parquet files and
``conversions_meta.json`` (written last: its presence marks a complete set), which holds the
config, each split's files and rows, the planted delay rate of every advertiser and, per split,
the exact Bayes-optimal AUC / logloss of the label "a conversion was seen by the log's end".

No ``schema.yaml``: the raw log serves every conversion window, and a window's schema (with its
derived label) comes from the ``conversions`` preset (``data.preset_options.window_days``).
"""

from __future__ import annotations

from pathlib import Path

from rankmixer.data.datasets.conversions.columns import arrow_schema, column_names
from rankmixer.data.datasets.conversions.config import BLOCK_ROWS, META_FILE, ConversionsConfig
from rankmixer.data.datasets.conversions.generator import Generator
from rankmixer.data.datasets.generated import blocks, read_meta, write_dataset

OUTPUT_KIND = "conversions-data"  # the marker kind of a folder this generator wrote


def generate(cfg: ConversionsConfig | dict | None, out_dir: str | Path, progress: bool = True) -> dict:
    """Write the log into ``out_dir`` (new, empty or an earlier output of this generator; an
    OutputError otherwise) and return its meta."""
    cfg = cfg if isinstance(cfg, ConversionsConfig) else ConversionsConfig.model_validate(cfg or {})
    return write_dataset(
        Path(out_dir), cfg, name="conversions", kind=OUTPUT_KIND, meta_file=META_FILE, columns=column_names(cfg),
        schema=arrow_schema(cfg), make_generator=lambda: Generator(cfg),
        blocks_of=lambda gen, split: (gen.block(split, index, n) for index, n in blocks(cfg.rows(split), BLOCK_ROWS)),
        write_schema=lambda: None, progress=progress,
    )


def load_meta(out_dir: str | Path) -> dict:
    return read_meta(out_dir, META_FILE, "rankmixer.data.datasets.conversions.generate(cfg, out_dir)")
