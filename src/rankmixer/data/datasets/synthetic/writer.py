"""Writing a synthetic data set: streaming blocks into Parquet files, the schema and the meta.

Files written into ``out_dir`` by :func:`generate`:

* ``train.parquet``, ``valid.parquet``, ``test.parquet``; a split with more than
  ``rows_per_file`` rows is written as ``<split>-00000.parquet``, ``<split>-00001.parquet``, ...
  instead (each at most ``rows_per_file`` rows, in row order). Files of an earlier run with the
  same split name are removed first; a file appears under its final name only when complete
  (:mod:`rankmixer.data.datasets.generated` writes them).
* ``synthetic_meta.json``: the config, the files and rows of each split, the label mean, the
  Bayes-optimal AUC / logloss (of ``bayes_p`` against the realised labels), the planted model's
  summary and the generation time. Written last: its presence marks a complete data set.
* ``schema.yaml``: :func:`.columns.schema` as YAML (feed it to ``rankmixer data prepare``).
"""

from __future__ import annotations

from pathlib import Path

from rankmixer.data.datasets.generated import blocks, read_meta, split_file_names, write_dataset
from rankmixer.data.datasets.synthetic.columns import arrow_schema, column_names, schema
from rankmixer.data.datasets.synthetic.config import BLOCK_ROWS, META_FILE, SCHEMA_FILE, SyntheticConfig
from rankmixer.data.datasets.synthetic.generator import Generator
from rankmixer.data.datasets.synthetic.stream import block
from rankmixer.data.schema import dump_schema

OUTPUT_KIND = "synthetic-data"  # the marker kind of a folder this generator wrote


def split_files(cfg: SyntheticConfig, split: str) -> list[str]:
    """File names (relative to the output directory) that hold ``split``, in row order."""
    return split_file_names(split, cfg.rows(split), cfg.rows_per_file)


def generate(cfg: SyntheticConfig | dict | None, out_dir: str | Path, progress: bool = True) -> dict:
    """Write the train / valid / test Parquet files, ``schema.yaml`` and ``synthetic_meta.json``
    into ``out_dir`` and return the meta dict (see the module docstring for the layout).
    ``out_dir`` is new, empty or an earlier output of this generator (an OutputError otherwise).

    Memory: one chunk of ``chunk_rows`` rows (at least one block of ``BLOCK_ROWS``; about
    400 bytes a row with the default columns), the ground-truth tables (about
    4 * latent_dim + 16 bytes per id of every field), and for the exact Bayes AUC about
    9 bytes per row of the split being written (its float32 p and bool label, then the AUC's
    sorted float32 copy of p: 900 MB at 100M rows).
    """
    if cfg is None:
        cfg = SyntheticConfig()
    elif isinstance(cfg, dict):
        cfg = SyntheticConfig.model_validate(cfg)
    out_dir = Path(out_dir)
    return write_dataset(
        out_dir, cfg, name="synthetic", kind=OUTPUT_KIND, meta_file=META_FILE, columns=column_names(cfg),
        schema=arrow_schema(cfg), make_generator=lambda: Generator(cfg),
        blocks_of=lambda gen, split: (block(gen, split, index, n)
                                      for index, n in blocks(cfg.rows(split), BLOCK_ROWS)),
        write_schema=lambda: dump_schema(schema(cfg), out_dir / SCHEMA_FILE),
        legacy=lambda p: (p / META_FILE).exists(), progress=progress,
    )


def load_meta(out_dir: str | Path) -> dict:
    """The ``synthetic_meta.json`` of a generated directory (see :func:`generate`)."""
    return read_meta(out_dir, META_FILE,
                     f"`rankmixer data synthetic {out_dir}` or rankmixer.data.datasets.synthetic.generate")


def config_from_dir(out_dir: str | Path) -> SyntheticConfig:
    """The config a directory was generated with (from its ``synthetic_meta.json``)."""
    return SyntheticConfig.model_validate(load_meta(out_dir)["config"])

