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

import json
import sys
import time
from pathlib import Path

from rankmixer.core.files import check_replaceable, write_marker, write_text_atomic
from rankmixer.data.datasets.behaviour.columns import arrow_schema, column_names, schema_yaml
from rankmixer.data.datasets.behaviour.config import META_FILE, SCHEMA_FILE, BehaviourConfig
from rankmixer.data.datasets.behaviour.generator import Generator
from rankmixer.data.datasets.behaviour.stream import block, blocks
from rankmixer.data.datasets.generated import split_file_names, write_split
from rankmixer.data.datasets.synthetic.config import SPLITS

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
    # Only a folder of our own is written over (a user's folder of other files is refused).
    check_replaceable(out_dir, OUTPUT_KIND, overwrite=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_marker(out_dir, OUTPUT_KIND)
    # The meta marks a complete data set: gone until this run has written every file.
    (out_dir / META_FILE).unlink(missing_ok=True)
    t0 = time.perf_counter()
    gen = Generator(cfg)
    t_setup = time.perf_counter() - t0
    write_text_atomic(out_dir / SCHEMA_FILE, schema_yaml(cfg))

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=sum(cfg.rows(s) for s in SPLITS), unit="rows", unit_scale=True,
                   desc="behaviour", file=sys.stderr)
    splits: dict[str, dict] = {}
    try:
        for split in SPLITS:
            if bar is not None:
                bar.set_description(f"behaviour {split}", refresh=False)
            splits[split] = write_split(
                out_dir, split, cfg.rows(split),
                (block(gen, split, index, n) for index, n in blocks(cfg.rows(split))),
                arrow_schema(), chunk_rows=cfg.chunk_rows, rows_per_file=cfg.rows_per_file,
                compression=cfg.compression, bar=bar,
            )
    finally:
        if bar is not None:
            bar.close()

    seconds = time.perf_counter() - t0
    meta = {
        "dataset": "behaviour",
        "format_version": 1,
        "config": cfg.model_dump(mode="json"),
        "columns": column_names(),
        "label": "click",
        "prob_column": "bayes_p",
        "splits": splits,
        "planted_model": gen.summary(),
        "generation_seconds": round(seconds, 3),
        "setup_seconds": round(t_setup, 3),
        "rows_per_second": round(sum(s["rows"] for s in splits.values()) / seconds, 1),
    }
    write_text_atomic(out_dir / META_FILE, json.dumps(meta, indent=2))
    return meta


def load_meta(out_dir: str | Path) -> dict:
    """The ``behaviour_meta.json`` of a generated directory (see :func:`generate`)."""
    path = Path(out_dir) / META_FILE
    if not path.exists():
        raise FileNotFoundError(
            f"{path} not found: generate the data first "
            "(rankmixer.data.datasets.behaviour.generate(cfg, out_dir))"
        )
    return json.loads(path.read_text())


def config_from_dir(out_dir: str | Path) -> BehaviourConfig:
    """The config a directory was generated with (from its ``behaviour_meta.json``)."""
    return BehaviourConfig.model_validate(load_meta(out_dir)["config"])
