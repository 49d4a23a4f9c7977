"""Writing a synthetic data set: streaming blocks into Parquet files, the schema and the meta.

Files written into ``out_dir`` by :func:`generate`:

* ``train.parquet``, ``valid.parquet``, ``test.parquet``; a split with more than
  ``rows_per_file`` rows is written as ``<split>-00000.parquet``, ``<split>-00001.parquet``, ...
  instead (each at most ``rows_per_file`` rows, in row order). Files of an earlier run with the
  same split name are removed first; a file appears under its final name only when complete.
* ``synthetic_meta.json``: the config, the files and rows of each split, the label mean, the
  Bayes-optimal AUC / logloss (of ``bayes_p`` against the realised labels), the planted model's
  summary and the generation time. Written last: its presence marks a complete data set.
* ``schema.yaml``: :func:`.columns.schema` as YAML (feed it to ``rankmixer data prepare``).
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from rankmixer.core.files import check_replaceable, write_marker
from rankmixer.core.metrics import auc, logloss
from rankmixer.data.datasets.synthetic.columns import arrow_schema, column_names, schema
from rankmixer.data.datasets.synthetic.config import (
    BLOCK_ROWS,
    META_FILE,
    SCHEMA_FILE,
    SPLITS,
    SyntheticConfig,
)
from rankmixer.data.datasets.synthetic.generator import Generator
from rankmixer.data.datasets.synthetic.stream import block, blocks
from rankmixer.data.schema import dump_schema

OUTPUT_KIND = "synthetic-data"  # the marker kind of a folder this generator wrote
_MAX_ROW_GROUP = 100_000


def split_files(cfg: SyntheticConfig, split: str) -> list[str]:
    """File names (relative to the output directory) that hold ``split``, in row order."""
    n_files = -(-cfg.rows(split) // cfg.rows_per_file)
    if n_files == 1:
        return [f"{split}.parquet"]
    return [f"{split}-{i:05d}.parquet" for i in range(n_files)]


class _SplitWriter:
    """Buffers record batches and writes them in chunks of ``chunk_rows`` rows, rolling over to
    a new file every ``rows_per_file`` rows. Files are written under a temporary name and
    renamed when complete."""

    def __init__(self, cfg: SyntheticConfig, out_dir: Path, split: str):
        self.cfg, self.out_dir = cfg, out_dir
        self.names = split_files(cfg, split)
        self.schema = arrow_schema(cfg)
        self.file_idx = 0
        self.in_file = 0
        self.buf: list[pa.RecordBatch] = []
        self.buf_rows = 0
        self.writer: pq.ParquetWriter | None = None

    def _tmp(self, name: str) -> Path:
        return self.out_dir / f".{name}.tmp"

    def _open(self) -> None:
        comp = None if self.cfg.compression == "none" else self.cfg.compression
        self.writer = pq.ParquetWriter(self._tmp(self.names[self.file_idx]), self.schema, compression=comp)

    def _flush(self) -> None:
        if not self.buf_rows:
            return
        assert self.writer is not None
        table = pa.Table.from_batches(self.buf, schema=self.schema)
        n_groups = -(-self.buf_rows // _MAX_ROW_GROUP)
        self.writer.write_table(table, row_group_size=-(-self.buf_rows // n_groups))
        self.in_file += self.buf_rows
        self.buf, self.buf_rows = [], 0

    def _close_file(self) -> None:
        self._flush()
        if self.writer is not None:
            self.writer.close()
            self.writer = None
            name = self.names[self.file_idx]
            self._tmp(name).replace(self.out_dir / name)
            self.file_idx += 1
            self.in_file = 0

    def add(self, batch: pa.RecordBatch) -> None:
        off = 0
        while off < batch.num_rows:
            if self.writer is None:
                self._open()
            room = min(self.cfg.rows_per_file - self.in_file, self.cfg.chunk_rows) - self.buf_rows
            piece = batch.slice(off, min(room, batch.num_rows - off))
            self.buf.append(piece)
            self.buf_rows += piece.num_rows
            off += piece.num_rows
            if self.in_file + self.buf_rows >= self.cfg.rows_per_file:
                self._close_file()
            elif self.buf_rows >= self.cfg.chunk_rows:
                self._flush()

    def close(self) -> None:
        self._close_file()

    def abort(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
        for name in self.names:
            self._tmp(name).unlink(missing_ok=True)


def _remove_old_files(out_dir: Path, split: str) -> None:
    for path in [out_dir / f"{split}.parquet", *out_dir.glob(f"{split}-[0-9][0-9][0-9][0-9][0-9].parquet")]:
        path.unlink(missing_ok=True)


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
    # Only a folder of our own is written over (a user's folder of other files is refused).
    check_replaceable(out_dir, OUTPUT_KIND, overwrite=True, legacy=lambda p: (p / META_FILE).exists())
    out_dir.mkdir(parents=True, exist_ok=True)
    write_marker(out_dir, OUTPUT_KIND)
    # The meta marks a complete data set: gone until this run has written every file.
    (out_dir / META_FILE).unlink(missing_ok=True)
    t0 = time.perf_counter()
    gen = Generator(cfg)
    t_setup = time.perf_counter() - t0
    dump_schema(schema(cfg), out_dir / SCHEMA_FILE)

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=cfg.rows_train + cfg.rows_valid + cfg.rows_test, unit="rows", unit_scale=True,
                   desc="synthetic", file=sys.stderr)
    splits: dict[str, dict] = {}
    try:
        for split in SPLITS:
            rows = cfg.rows(split)
            _remove_old_files(out_dir, split)
            # For the exact Bayes AUC: p as float32 (half the memory; the meta's AUC ranks
            # float32 p, whose ties count 1/2) and the labels.
            p32 = np.empty(rows, dtype=np.float32)
            labels = np.empty(rows, dtype=bool)
            ll_sum = p_sum = 0.0
            n_pos = 0
            writer = _SplitWriter(cfg, out_dir, split)
            if bar is not None:
                bar.set_description(f"synthetic {split}", refresh=False)
            try:
                for index, n in blocks(rows):
                    batch, p, y = block(gen, split, index, n)
                    start = index * BLOCK_ROWS
                    p32[start : start + n] = p
                    labels[start : start + n] = y
                    ll_sum += logloss(y, p) * n  # float64 p, the metrics module's clipping
                    p_sum += float(p.sum())
                    n_pos += int(y.sum())
                    writer.add(batch)
                    if bar is not None:
                        bar.update(n)
            except BaseException:
                writer.abort()  # never leave a partial file under a final name
                raise
            writer.close()
            bayes_auc = auc(labels, p32)
            del p32, labels
            splits[split] = {
                "files": writer.names,
                "rows": rows,
                "label_mean": n_pos / rows,
                "bayes_p_mean": p_sum / rows,
                "bayes_auc": None if math.isnan(bayes_auc) else bayes_auc,
                "bayes_logloss": ll_sum / rows,
            }
    finally:
        if bar is not None:
            bar.close()

    seconds = time.perf_counter() - t0
    total = sum(s["rows"] for s in splits.values())
    meta = {
        "dataset": "synthetic",
        "format_version": 1,
        "config": cfg.model_dump(mode="json"),
        "columns": column_names(cfg),
        "label": "click",
        "prob_column": "bayes_p",
        "splits": splits,
        "planted_model": gen.summary(),
        "generation_seconds": round(seconds, 3),
        "setup_seconds": round(t_setup, 3),
        "rows_per_second": round(total / seconds, 1),
    }
    tmp = out_dir / f".{META_FILE}.tmp"
    tmp.write_text(json.dumps(meta, indent=2))
    tmp.replace(out_dir / META_FILE)
    return meta


def load_meta(out_dir: str | Path) -> dict:
    """The ``synthetic_meta.json`` of a generated directory (see :func:`generate`)."""
    path = Path(out_dir) / META_FILE
    if not path.exists():
        raise FileNotFoundError(
            f"{path} not found: generate the data first (`rankmixer data synthetic {out_dir}` or "
            "rankmixer.data.datasets.synthetic.generate)"
        )
    return json.loads(path.read_text())


def config_from_dir(out_dir: str | Path) -> SyntheticConfig:
    """The config a directory was generated with (from its ``synthetic_meta.json``)."""
    return SyntheticConfig.model_validate(load_meta(out_dir)["config"])

