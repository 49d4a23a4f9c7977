"""Writing one split of a generated data set: seeded blocks streamed into Parquet, plus its
exact Bayes-optimal metrics. Shared by the synthetic generators (``synthetic``, ``behaviour``).

A split of ``rows`` rows is ``split.parquet``, or, above ``rows_per_file`` rows,
``split-00000.parquet``, ``split-00001.parquet``, ... (each at most ``rows_per_file`` rows, in
row order). Files of an earlier run with the same split name are removed first; a file appears
under its final name only when complete (written as ``.<name>.tmp``, then renamed).

:func:`write_split` consumes ``(record batch, p, label)`` blocks and returns the split's meta:
files, rows, label mean, mean of the true probability and the Bayes AUC / logloss of the true
probability against the realised labels. The AUC is exact over the whole split: it keeps p as
float32 and the labels (about 9 bytes per row with the AUC's sorted copy), so the meta's AUC
ranks float32 p (ties count 1/2).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from rankmixer.core.metrics import auc, logloss

MAX_ROW_GROUP = 100_000
Compression = Literal["zstd", "snappy", "none"]


def split_file_names(split: str, rows: int, rows_per_file: int) -> list[str]:
    """File names (relative to the output directory) that hold ``split``, in row order."""
    n_files = -(-rows // rows_per_file)
    if n_files == 1:
        return [f"{split}.parquet"]
    return [f"{split}-{i:05d}.parquet" for i in range(n_files)]


def remove_split_files(out_dir: Path, split: str) -> None:
    """Remove the files of ``split`` that any earlier run may have left (either layout)."""
    for path in [out_dir / f"{split}.parquet", *out_dir.glob(f"{split}-[0-9][0-9][0-9][0-9][0-9].parquet")]:
        path.unlink(missing_ok=True)


class SplitWriter:
    """Buffers record batches and writes them in chunks of ``chunk_rows`` rows, rolling over to
    a new file every ``rows_per_file`` rows. Files are written under a temporary name and
    renamed when complete; :meth:`abort` removes the temporaries."""

    def __init__(self, out_dir: Path, names: list[str], schema: pa.Schema, *, chunk_rows: int,
                 rows_per_file: int, compression: Compression):
        self.out_dir, self.names, self.schema = out_dir, names, schema
        self.chunk_rows, self.rows_per_file = chunk_rows, rows_per_file
        self.compression = None if compression == "none" else compression
        self.file_idx = 0
        self.in_file = 0
        self.buf: list[pa.RecordBatch] = []
        self.buf_rows = 0
        self.writer: pq.ParquetWriter | None = None

    def _tmp(self, name: str) -> Path:
        return self.out_dir / f".{name}.tmp"

    def _open(self) -> None:
        self.writer = pq.ParquetWriter(self._tmp(self.names[self.file_idx]), self.schema,
                                       compression=self.compression)

    def _flush(self) -> None:
        if not self.buf_rows:
            return
        assert self.writer is not None
        table = pa.Table.from_batches(self.buf, schema=self.schema)
        n_groups = -(-self.buf_rows // MAX_ROW_GROUP)
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
            room = min(self.rows_per_file - self.in_file, self.chunk_rows) - self.buf_rows
            piece = batch.slice(off, min(room, batch.num_rows - off))
            self.buf.append(piece)
            self.buf_rows += piece.num_rows
            off += piece.num_rows
            if self.in_file + self.buf_rows >= self.rows_per_file:
                self._close_file()
            elif self.buf_rows >= self.chunk_rows:
                self._flush()

    def close(self) -> None:
        self._close_file()

    def abort(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
        for name in self.names:
            self._tmp(name).unlink(missing_ok=True)


def write_split(
    out_dir: Path,
    split: str,
    rows: int,
    blocks: Iterable[tuple[pa.RecordBatch, np.ndarray, np.ndarray]],
    schema: pa.Schema,
    *,
    chunk_rows: int,
    rows_per_file: int,
    compression: Compression,
    bar=None,
) -> dict:
    """Write ``blocks`` (record batch, float64 p, 0/1 label; ``rows`` rows in all, in order)
    as the files of ``split`` and return the split's meta (see the module docstring). ``bar``:
    an optional tqdm bar, advanced by each block's rows."""
    remove_split_files(out_dir, split)
    p32 = np.empty(rows, dtype=np.float32)
    labels = np.empty(rows, dtype=bool)
    ll_sum = p_sum = 0.0
    n_pos = start = 0
    writer = SplitWriter(out_dir, split_file_names(split, rows, rows_per_file), schema,
                         chunk_rows=chunk_rows, rows_per_file=rows_per_file, compression=compression)
    try:
        for batch, p, y in blocks:
            n = batch.num_rows
            p32[start : start + n] = p
            labels[start : start + n] = y
            ll_sum += logloss(y, p) * n  # float64 p, the metrics module's clipping
            p_sum += float(p.sum())
            n_pos += int(y.sum())
            writer.add(batch)
            start += n
            if bar is not None:
                bar.update(n)
    except BaseException:
        writer.abort()  # never leave a partial file under a final name
        raise
    if start != rows:
        writer.abort()
        raise ValueError(f"split {split}: the blocks held {start} rows, expected {rows}")
    writer.close()
    bayes_auc = auc(labels, p32)
    return {
        "files": writer.names,
        "rows": rows,
        "label_mean": n_pos / rows,
        "bayes_p_mean": p_sum / rows,
        "bayes_auc": None if math.isnan(bayes_auc) else bayes_auc,
        "bayes_logloss": ll_sum / rows,
    }
