"""Writing a behaviour data set: Parquet files per split, the schema and the meta.

Files written into ``out_dir`` by :func:`generate`:

* ``train.parquet``, ``valid.parquet``, ``test.parquet`` (above ``rows_per_file`` rows a split
  is ``<split>-00000.parquet``, ...), written by :mod:`rankmixer.data.datasets.generated`: a
  file appears under its final name only when complete.
* ``schema.yaml``: :func:`.columns.schema_yaml`.
* ``behaviour_meta.json``: the config, the files and rows of each split, the label mean, the
  exact Bayes-optimal AUC / logloss (of ``bayes_p`` against the realised labels), the planted
  model's summary and the generation time. Written last: its presence marks a complete set.
"""

from __future__ import annotations

from pathlib import Path

from rankmixer.core.files import write_text_atomic
from rankmixer.data.datasets.behaviour.columns import arrow_schema, column_names, schema_yaml
from rankmixer.data.datasets.behaviour.config import BLOCK_ROWS, META_FILE, SCHEMA_FILE, BehaviourConfig
from rankmixer.data.datasets.behaviour.generator import Generator
from rankmixer.data.datasets.behaviour.stream import block
from rankmixer.data.datasets.generated import blocks, read_meta, split_file_names, write_dataset

OUTPUT_KIND = "behaviour-data"  # the marker kind of a folder this generator wrote


def split_files(cfg: BehaviourConfig, split: str) -> list[str]:
    """File names (relative to the output directory) that hold ``split``, in row order."""
    return split_file_names(split, cfg.rows(split), cfg.rows_per_file)


def generate(cfg: BehaviourConfig | dict | None, out_dir: str | Path, progress: bool = True) -> dict:
    """Write the train / valid / test Parquet files, ``schema.yaml`` and ``behaviour_meta.json``
    into ``out_dir`` and return the meta dict (see the module docstring for the layout).
    ``out_dir`` is new, empty or an earlier output of this generator (an OutputError otherwise).

    Memory: one chunk of ``chunk_rows`` rows (about 8 KB a row at the default lengths), one
    block's flattened histories (about 100 bytes per behaviour while it is built), and for the
    exact Bayes AUC about 9 bytes per row of the split being written.
    """
    if cfg is None:
        cfg = BehaviourConfig()
    elif isinstance(cfg, dict):
        cfg = BehaviourConfig.model_validate(cfg)
    out_dir = Path(out_dir)
    return write_dataset(
        out_dir, cfg, name="behaviour", kind=OUTPUT_KIND, meta_file=META_FILE, columns=column_names(),
        schema=arrow_schema(), make_generator=lambda: Generator(cfg),
        blocks_of=lambda gen, split: (block(gen, split, index, n)
                                      for index, n in blocks(cfg.rows(split), BLOCK_ROWS)),
        write_schema=lambda: write_text_atomic(out_dir / SCHEMA_FILE, schema_yaml(cfg)), progress=progress,
    )


def load_meta(out_dir: str | Path) -> dict:
    """The ``behaviour_meta.json`` of a generated directory (see :func:`generate`)."""
    return read_meta(out_dir, META_FILE, "rankmixer.data.datasets.behaviour.generate(cfg, out_dir)")


def config_from_dir(out_dir: str | Path) -> BehaviourConfig:
    """The config a directory was generated with (from its ``behaviour_meta.json``)."""
    return BehaviourConfig.model_validate(load_meta(out_dir)["config"])
