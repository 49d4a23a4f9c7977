"""Writing a multi-task set: ``train`` / ``valid`` / ``test`` Parquet files, ``schema.yaml`` and
``multitask_meta.json`` (written last: its presence marks a complete set), which holds the
config, every split's files and rows and, per task, the label mean and the exact Bayes-optimal
AUC / logloss of the true probability against the realised labels."""

from __future__ import annotations

from pathlib import Path

from rankmixer.core.files import write_text_atomic
from rankmixer.data.datasets.generated import blocks, read_meta, write_dataset
from rankmixer.data.datasets.multitask.columns import arrow_schema, column_names, schema_yaml
from rankmixer.data.datasets.multitask.config import BLOCK_ROWS, META_FILE, SCHEMA_FILE, MultitaskConfig
from rankmixer.data.datasets.multitask.generator import Generator
from rankmixer.data.datasets.multitask.stream import block

OUTPUT_KIND = "multitask-data"  # the marker kind of a folder this generator wrote


def generate(cfg: MultitaskConfig | dict | None, out_dir: str | Path, progress: bool = True) -> dict:
    """Write the set into ``out_dir`` (new, empty or an earlier output of this generator; an
    OutputError otherwise) and return its meta."""
    cfg = MultitaskConfig.model_validate(cfg or {}) if not isinstance(cfg, MultitaskConfig) else cfg
    out_dir = Path(out_dir)
    return write_dataset(
        out_dir, cfg, name="multitask", kind=OUTPUT_KIND, meta_file=META_FILE, columns=column_names(cfg),
        schema=arrow_schema(cfg), make_generator=lambda: Generator(cfg),
        blocks_of=lambda gen, split: (block(gen, split, index, n)
                                      for index, n in blocks(cfg.rows(split), BLOCK_ROWS)),
        write_schema=lambda: write_text_atomic(out_dir / SCHEMA_FILE, schema_yaml(cfg)), progress=progress,
        tasks=list(cfg.tasks),
    )


def load_meta(out_dir: str | Path) -> dict:
    return read_meta(out_dir, META_FILE, "rankmixer.data.datasets.multitask.generate(cfg, out_dir)")
